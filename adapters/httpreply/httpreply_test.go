package httpreply_test

import (
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/httpreply"
)

func TestExcerpt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		maxLen int
		want   string
	}{
		{name: "an HTML page reads as its words", maxLen: 200,
			body: "<html><head><title>502</title></head><body><h1>Bad Gateway</h1>\r\n<p>The proxy could not reach graph.</p></body></html>",
			want: "502 Bad Gateway The proxy could not reach graph."},
		{name: "a long answer is cut after maxLen characters", body: "äöü äöü", maxLen: 5, want: "äöü ä…"},
		{name: "an answer of exactly maxLen characters is whole", body: "abcde", maxLen: 5, want: "abcde"},
		{name: "control characters are spaces", body: "a\x00b\x7fc", maxLen: 10, want: "a b c"},
		{name: "an empty answer has no words", body: "<html> </html>", maxLen: 10, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := httpreply.Excerpt([]byte(tc.body), tc.maxLen); got != tc.want {
				t.Errorf("Excerpt(%q, %d) = %q, want %q", tc.body, tc.maxLen, got, tc.want)
			}
		})
	}
}
