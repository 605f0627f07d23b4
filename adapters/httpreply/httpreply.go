// Package httpreply reads what an HTTP server answered in words an admin
// can act on. It is the one home of that for the Graph adapters and the
// OAuth token client, which all meet HTML error pages where JSON belonged.
package httpreply

import "strings"

// Excerpt is the start of an answer that is not the JSON a client expects
// (an HTML error page of a proxy, a portal or an identity provider) as one line of its words: tags dropped,
// control characters and runs of space as one space, at most maxLen
// characters and then "…". It is "" when the answer has no words; never
// quote the page itself, which may be large or hold markup.
func Excerpt(body []byte, maxLen int) string {
	var b strings.Builder
	inTag := false
	for _, r := range string(body) {
		switch {
		case r == '<':
			inTag = true
		case r == '>':
			inTag = false
			b.WriteByte(' ')
		case inTag:
		case r < ' ' || r == 0x7f || r == '\uFFFD':
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	s := strings.Join(strings.Fields(b.String()), " ")
	n := 0
	for i := range s {
		if n == maxLen {
			return s[:i] + "…"
		}
		n++
	}
	return s
}
