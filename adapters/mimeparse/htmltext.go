package mimeparse

import (
	"html"
	"strings"

	xhtml "golang.org/x/net/html"
)

// htmlToText renders an HTML body as plain text for mails without a text
// part: tags dropped, block elements and <br> as line breaks, script, style
// and head content dropped, entities decoded, runs of blank lines collapsed.
// It is deliberately simple; its cost is linear in len(s), which the caller
// has already capped at Limits.MaxBodyBytes.
func htmlToText(s string) string {
	z := xhtml.NewTokenizer(strings.NewReader(s))
	z.SetMaxBuf(0)
	var b strings.Builder
	skip := 0 // depth inside script/style/head/title
	newline := func() {
		str := b.String()
		if len(str) == 0 || strings.HasSuffix(str, "\n\n") {
			return
		}
		b.WriteByte('\n')
	}
	for {
		tt := z.Next()
		switch tt {
		case xhtml.ErrorToken:
			// io.EOF, or a tokenizer error: either way the text so far is
			// all there is.
			return tidyText(b.String())
		case xhtml.TextToken:
			if skip > 0 {
				continue
			}
			t := collapseSpace(string(z.Text()))
			if t == "" {
				continue
			}
			str := b.String()
			if t == " " && (len(str) == 0 || strings.HasSuffix(str, "\n") || strings.HasSuffix(str, " ")) {
				continue
			}
			if strings.HasSuffix(str, "\n") || len(str) == 0 {
				t = strings.TrimLeft(t, " ")
			}
			b.WriteString(t)
		case xhtml.StartTagToken, xhtml.EndTagToken, xhtml.SelfClosingTagToken:
			name, _ := z.TagName()
			tag := string(name)
			switch tag {
			case "script", "style", "head", "title":
				if tt == xhtml.StartTagToken {
					skip++
				} else if tt == xhtml.EndTagToken && skip > 0 {
					skip--
				}
				continue
			}
			if skip > 0 {
				continue
			}
			switch tag {
			case "br":
				b.WriteByte('\n')
			case "p", "div", "tr", "li", "ul", "ol", "table", "blockquote", "pre",
				"h1", "h2", "h3", "h4", "h5", "h6", "hr", "section", "article", "header", "footer":
				newline()
				if tag == "li" && tt == xhtml.StartTagToken {
					b.WriteString("- ")
				}
			case "td", "th":
				if tt == xhtml.EndTagToken {
					b.WriteByte(' ')
				}
			}
		}
	}
}

// collapseSpace turns every run of white space (including non-breaking
// space from &nbsp;) into one space, as a browser renders it.
func collapseSpace(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\u00a0' {
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}

// tidyText trims trailing spaces on each line and the text's ends.
func tidyText(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// textToHTML renders plain text as HTML, for a body that mixes text and
// HTML parts (multipart/mixed with a text part and an HTML signature).
func textToHTML(s string) string {
	if s == "" {
		return ""
	}
	return "<div>" + strings.ReplaceAll(html.EscapeString(s), "\n", "<br>\n") + "</div>"
}
