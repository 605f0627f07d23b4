package mimeparse

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds of what Parse outputs. Every text of a Summary ends up in an event
// payload and in SQL columns, some of them indexed (the sender address, a
// Message-ID). PostgreSQL refuses a NUL in text and a btree entry of more than
// about 2,700 bytes, and an event it cannot store or project is retried for
// ever; so a hostile header is cut down here, where the mail is read.
const (
	// maxLocalPart, maxDomain and maxAddress are RFC 5321 section 4.5.3.1.1,
	// 4.5.3.1.2 and 4.5.3.1.3 (a path of 256 octets holds an address of 254
	// between its angle brackets). An address beyond them is not an address.
	maxLocalPart = 64
	maxDomain    = 255
	maxAddress   = 254
	// maxLine bounds one-line texts (display names, Message-IDs,
	// header values kept for display): the line length limit of RFC 5322
	// section 2.1.1.
	maxLine = 998
	// maxSubject bounds the subject, which is no index key: longer than any
	// subject a person writes, and than the 2.9 KB of padded spam seen in
	// the wild (zammad mail017), which is kept as written.
	maxSubject = 4 << 10
	// maxFilename is the longest file name common file systems take.
	maxFilename = 255
	// maxMediaType bounds type/subtype: RFC 6838 section 4.2 allows 127
	// characters for each name.
	maxMediaType = 255
	// maxReferences bounds References. Beyond it the first id (the thread's
	// root) and the last ones (the nearest ancestors, RFC 5322 section
	// 3.6.4) are kept, which is what threading uses.
	maxReferences = 100
)

// isControl reports C0 controls, DEL and C1 controls (unicode.IsControl).
func isControl(r rune) bool { return unicode.IsControl(r) }

// hasControl reports whether s holds a control character.
func hasControl(s string) bool { return strings.ContainsFunc(s, isControl) }

// addrSpecProblem says why email (an addr-spec, RFC 5322 section 3.4.1)
// cannot be an address, or "" when it can: it holds invalid UTF-8 or a
// control character (none is allowed in an address, and a NUL cannot be
// stored), or it exceeds the limits of RFC 5321 section 4.5.3.1.
func addrSpecProblem(email string) string {
	switch {
	case !utf8.ValidString(email):
		return "invalid UTF-8 in the address"
	case hasControl(email):
		return "control character in the address"
	case len(email) > maxAddress:
		return fmt.Sprintf("address longer than %d bytes", maxAddress)
	}
	if at := strings.LastIndexByte(email, '@'); at >= 0 {
		switch {
		case at > maxLocalPart:
			return fmt.Sprintf("local part longer than %d bytes", maxLocalPart)
		case len(email)-at-1 > maxDomain:
			return fmt.Sprintf("domain longer than %d bytes", maxDomain)
		}
	}
	return ""
}

// oneLine makes a decoded header text fit one bounded line: control
// characters become spaces (see cleanLine), invalid UTF-8 becomes U+FFFD,
// and the text is cut at limit bytes on a character boundary. cut says
// whether it was.
func oneLine(s string, limit int) (out string, cut bool) {
	s = cleanLine(strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= limit {
		return s, false
	}
	return strings.TrimSpace(truncateUTF8(s, limit)), true
}

// boundedLine is oneLine with a warning naming what was cut.
func (p *parser) boundedLine(what, s string, limit int) string {
	out, cut := oneLine(s, limit)
	if cut {
		p.warn("header: %s cut to %d bytes", what, limit)
	}
	return out
}

// boundedFilename cuts a file name to maxFilename bytes, keeping a short
// extension so that the file still opens with the right program.
func boundedFilename(name string) string {
	name, _ = oneLine(name, maxLine)
	if len(name) <= maxFilename {
		return name
	}
	ext := path.Ext(name)
	if len(ext) > 16 || strings.ContainsAny(ext, " /\\") {
		ext = ""
	}
	return truncateUTF8(name[:len(name)-len(ext)], maxFilename-len(ext)) + ext
}

// stripNUL replaces NUL characters, which no text column can hold, with
// U+FFFD. The other control characters of a body (tabs, line ends, form
// feeds) are text.
func stripNUL(s string) (string, bool) {
	if !strings.ContainsRune(s, 0) {
		return s, false
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD"), true
}
