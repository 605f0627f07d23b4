package domain_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestBodyPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		body  string
		limit int
		want  string
		cut   bool
	}{
		{"a body that fits is kept whole", "hello", 5, "hello", false},
		{"plain text is cut at the limit", "hello world", 5, "hello", true},
		{"a control byte takes six bytes", "ab\x01cd", 7, "ab", true},
		{"a newline takes two", "a\nb", 3, "a\n", true},
		{"HTML characters take six", "<p>", 6, "<", true},
		{"a character is never split", "aé", 2, "a", true},
		{"an invalid byte takes six", "a\xffb", 6, "a", true},
		{"nothing fits", "\x00", 5, "", true},
		{"empty", "", 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, cut := domain.BodyPrefix(tc.body, tc.limit)
			if got != tc.want || cut != tc.cut {
				t.Errorf("BodyPrefix(%q, %d) = %q, %v, want %q, %v", tc.body, tc.limit, got, cut, tc.want, tc.cut)
			}
		})
	}
}

// TestBodyPrefix_BoundsTheJSON holds BodyPrefix to encoding/json: the
// prefix's encoding fits the limit and one more character would not.
func TestBodyPrefix_BoundsTheJSON(t *testing.T) {
	t.Parallel()
	body := strings.Repeat("Grüße <b>&</b> \x01\t\"\\ \u2028 \xff 日本\n", 500)
	for _, limit := range []int{0, 1, 7, 100, 1000, 4096, 9999, 1 << 20} {
		got, cut := domain.BodyPrefix(body, limit)
		if !strings.HasPrefix(body, got) {
			t.Fatalf("BodyPrefix(_, %d) is not a prefix", limit)
		}
		if n := jsonLen(t, got); n > limit {
			t.Errorf("BodyPrefix(_, %d) encodes to %d bytes", limit, n)
		}
		if cut != (len(got) < len(body)) {
			t.Errorf("BodyPrefix(_, %d) truncated = %v for %d of %d bytes", limit, cut, len(got), len(body))
		}
		if cut {
			_, size := utf8.DecodeRuneInString(body[len(got):])
			if n := jsonLen(t, body[:len(got)+size]); n <= limit {
				t.Errorf("BodyPrefix(_, %d) stopped early: one more character encodes to %d bytes", limit, n)
			}
		}
	}
}

func jsonLen(t *testing.T, s string) int {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return len(b) - 2
}
