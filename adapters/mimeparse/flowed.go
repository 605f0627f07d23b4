package mimeparse

import (
	"bytes"
	"regexp"
	"strings"
)

// unflow joins the soft line breaks of format=flowed text (RFC 3676 section
// 4): a line ending in a space continues on the next line of the same quote
// depth; space-stuffing is removed; with delsp=yes the trailing space goes
// too. The signature separator "-- " is never joined.
func unflow(text string, delsp bool) string {
	lines := strings.Split(text, "\n")
	var out strings.Builder
	var para strings.Builder
	paraDepth := -1
	flush := func() {
		if paraDepth < 0 {
			return
		}
		out.WriteString(strings.Repeat(">", paraDepth))
		if paraDepth > 0 {
			out.WriteByte(' ')
		}
		out.WriteString(para.String())
		out.WriteByte('\n')
		para.Reset()
		paraDepth = -1
	}
	for i, line := range lines {
		if i == len(lines)-1 && line == "" {
			// The text ended with a line break: what is pending is the last
			// paragraph, even after a soft break.
			break
		}
		depth := 0
		for depth < len(line) && line[depth] == '>' {
			depth++
		}
		content := strings.TrimPrefix(line[depth:], " ") // space-stuffing
		if paraDepth >= 0 && depth != paraDepth {
			flush()
		}
		soft := strings.HasSuffix(content, " ") && content != "-- "
		if soft && delsp {
			content = content[:len(content)-1]
		}
		para.WriteString(content)
		paraDepth = depth
		if !soft {
			flush()
		}
	}
	flush()
	res := out.String()
	if !strings.HasSuffix(text, "\n") {
		res = strings.TrimSuffix(res, "\n")
	}
	return res
}

var metaCharsetRe = regexp.MustCompile(`(?i)<meta[^>]+charset\s*=\s*["']?\s*([a-z0-9_\-:.]+)`)

// metaCharset finds the charset an HTML body declares in a <meta> tag in
// its first 2 KiB (as browsers do), for HTML parts whose Content-Type
// names none.
func metaCharset(b []byte) string {
	head := b[:min(len(b), 2048)]
	if !bytes.Contains(bytes.ToLower(head), []byte("charset")) {
		return ""
	}
	if m := metaCharsetRe.FindSubmatch(head); m != nil {
		return string(m[1])
	}
	return ""
}
