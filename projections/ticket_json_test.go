package projections

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestTicketPage_AppendJSON(t *testing.T) {
	t.Parallel()
	closed := time.Date(2026, 11, 23, 9, 30, 0, 123456789, time.UTC)
	tests := []struct {
		name string
		page TicketPage
	}{
		{name: "an empty page", page: TicketPage{Items: []Ticket{}}},
		{name: "tickets with awkward text", page: TicketPage{NextCursor: "eyJzIjoi", Items: []Ticket{
			{ID: "a", Number: 1001, Subject: "Re: <b>\"Drucker\" & co</b>\n\tzeile\\2 \x01\x1f \u2028\u2029 ümlaut 日本 \xff\xfe",
				Status: "new", RequesterEmail: "max@example.org", ArticleCount: 3,
				CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC), Version: 7},
			{ID: "b", Number: -1, ClosedAt: &closed, Resource: "team\u007f", Priority: "\x00"},
		}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want, err := json.Marshal(tc.page)
			if err != nil {
				t.Fatalf("json.Marshal() error = %v", err)
			}
			if got := tc.page.AppendJSON(nil); !bytes.Equal(got, want) {
				t.Errorf("AppendJSON() =\n%s\nwant (encoding/json)\n%s", got, want)
			}
		})
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "<>&\"\\", "\x00\x1f\x7f", "\u2028", "\xff", "ä\xc3", "日本語"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	})
}
