package mimeparse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/japanese"
)

// field is one header field as read: a canonical key and the unfolded raw
// value (line breaks removed, each fold with the white space around it
// read as one space). The value may hold 8-bit bytes in any charset until
// header.repair has run.
type field struct {
	key   string
	value string
}

// header is a list of fields in the order they appeared.
type header struct {
	fields []field
}

// get returns the first value of key, "" when absent.
func (h *header) get(key string) string {
	key = textproto.CanonicalMIMEHeaderKey(key)
	for _, f := range h.fields {
		if f.key == key {
			return f.value
		}
	}
	return ""
}

// has reports whether key is present.
func (h *header) has(key string) bool {
	key = textproto.CanonicalMIMEHeaderKey(key)
	for _, f := range h.fields {
		if f.key == key {
			return true
		}
	}
	return false
}

// values returns every value of key in order.
func (h *header) values(key string) []string {
	key = textproto.CanonicalMIMEHeaderKey(key)
	var vs []string
	for _, f := range h.fields {
		if f.key == key {
			vs = append(vs, f.value)
		}
	}
	return vs
}

// repair turns every value into valid UTF-8, as Thunderbird does. Values
// that already are valid UTF-8 (plain ASCII, or RFC 6532 internationalized
// headers) stay as they are. Raw 8-bit bytes inside a Q encoded word (RFC
// 2047 section 4.2 forbids them, broken mailers write them) are escaped as
// =XX so that the word is decoded once, in its own charset; raw ISO-2022-JP
// (escape sequences, no encoded word) is decoded as such; the remaining raw
// bytes are decoded with fallback, the charset the message declares for its
// first text part, else guessed (see guessDecode). It returns whether
// anything changed.
func (h *header) repair(fallback string) bool {
	changed := false
	for i, f := range h.fields {
		if !valueNeedsRepair(f.value) {
			continue
		}
		h.fields[i].value = repairValue(f.value, fallback)
		changed = true
	}
	return changed
}

// needsRepair reports whether repair would change h.
func (h *header) needsRepair() bool {
	for _, f := range h.fields {
		if valueNeedsRepair(f.value) {
			return true
		}
	}
	return false
}

func valueNeedsRepair(v string) bool {
	return !utf8.ValidString(v) || hasJISEscape(v)
}

// clone returns a copy of h that repair on h leaves untouched.
func (h *header) clone() header {
	return header{fields: append([]field(nil), h.fields...)}
}

// repairValue is repair for one value.
func repairValue(v, fallback string) string {
	v = escapeExtBytes(escapeWordBytes(v))
	if hasJISEscape(v) {
		if s, err := japanese.ISO2022JP.NewDecoder().String(v); err == nil && !strings.ContainsRune(s, utf8.RuneError) {
			v = s
		}
	}
	if utf8.ValidString(v) {
		return v
	}
	return decodeBytes([]byte(v), fallback)
}

// escapeWordBytes writes the 8-bit bytes inside Q encoded words as =XX.
func escapeWordBytes(v string) string {
	locs := encodedWord.FindAllStringSubmatchIndex(v, -1)
	if locs == nil {
		return v
	}
	var out strings.Builder
	prev := 0
	for _, loc := range locs {
		if enc := v[loc[4]:loc[5]]; enc != "q" && enc != "Q" {
			continue
		}
		out.WriteString(v[prev:loc[6]])
		for i := loc[6]; i < loc[7]; i++ {
			if c := v[i]; c >= 0x80 {
				fmt.Fprintf(&out, "=%02X", c)
			} else {
				out.WriteByte(c)
			}
		}
		prev = loc[7]
	}
	out.WriteString(v[prev:])
	return out.String()
}

// escapeExtBytes writes the 8-bit bytes of RFC 2231 extended parameter
// values ("filename*=iso-8859-1”Gr\xfc\xdfe.txt", where %FC belonged) as
// %XX, so that they are decoded once, in the value's own charset, like
// those of an encoded word.
func escapeExtBytes(v string) string {
	if !strings.Contains(v, "*=") {
		return v
	}
	var out strings.Builder
	inExt, quoted := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '*' && i+1 < len(v) && v[i+1] == '=':
			inExt = true
		case c == '"':
			quoted = !quoted
		case c == ';' && !quoted:
			inExt = false
		case c >= 0x80 && inExt:
			fmt.Fprintf(&out, "%%%02X", c)
			continue
		}
		out.WriteByte(c)
	}
	return out.String()
}

// hasJISEscape reports whether v holds an ISO-2022-JP escape sequence into
// JIS X 0208 or JIS X 0201 (RFC 1468): raw Japanese header text.
func hasJISEscape(v string) bool {
	if strings.IndexByte(v, 0x1b) < 0 {
		return false
	}
	return strings.Contains(v, "\x1b$B") || strings.Contains(v, "\x1b$@") || strings.Contains(v, "\x1b(J") ||
		strings.Contains(v, "\x1b(I")
}

// headerReader reads header blocks from br, line by line, counting bytes
// against a limit so that no header can make memory grow without bound.
type headerReader struct {
	br *bufio.Reader
	// max is the byte limit of one header block.
	max int64
	// what names the block in errors and warnings ("header", "part 1.2 header").
	what string
	// stop, when set, ends the block at a line it matches (a multipart
	// delimiter); the line is returned in headerBlock.stopLine.
	stop func(line []byte) bool
}

// readLine returns the next line without its line break, the line break
// itself ("\r\n", "\n" or "" at EOF), and counts it in *n. A line longer than
// the limit is a limitError.
func (r *headerReader) readLine(n *int64) (line []byte, nl string, err error) {
	var acc []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		*n += int64(len(chunk))
		if *n > r.max {
			return nil, "", &limitError{reason: fmt.Sprintf("%s exceeds %d bytes", r.what, r.max)}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			acc = append(acc, chunk...)
			continue
		}
		if acc != nil {
			chunk = append(acc, chunk...)
		} else {
			chunk = append([]byte(nil), chunk...)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return chunk, "", io.EOF
			}
			return nil, "", err
		}
		switch {
		case bytes.HasSuffix(chunk, []byte("\r\n")):
			return chunk[:len(chunk)-2], "\r\n", nil
		default:
			return chunk[:len(chunk)-1], "\n", nil
		}
	}
}

// headerBlock is what readHeader found.
type headerBlock struct {
	h header
	// leftover is a line that turned out to be body, not header, and the
	// line break after it; the body reader must start with it.
	leftover   []byte
	leftoverNL string
	// stopLine is the line that headerReader.stop matched, if any.
	stopLine []byte
	// sawEnd is true when a blank line ended the header (false at EOF or when
	// the body started without the blank line).
	sawEnd bool
	// skipped counts malformed lines dropped from inside the header.
	skipped int
	// warnings about repairs made.
	warnings []string
}

// readHeader reads one header block. It is deliberately more forgiving than
// RFC 5322, the way mail clients are:
//   - top: a UTF-8 byte order mark and an mbox "From " line before the
//     header are skipped, as are blank lines before the first field;
//   - lines that are neither a field nor a continuation are dropped with a
//     warning (top-level only, while more fields follow); in a MIME part a
//     first line that is no field means the part has no header at all and
//     the line is body;
//   - a continuation line before any field is dropped;
//   - white space before the colon is accepted.
func (r *headerReader) readHeader(top bool) (headerBlock, error) {
	var (
		blk   headerBlock
		n     int64
		first = true
		cur   *field
		raw   []byte // value of cur, being unfolded
	)
	flush := func() {
		if cur != nil {
			cur.value = string(trimWSP(raw))
			blk.h.fields = append(blk.h.fields, *cur)
			cur, raw = nil, nil
		}
	}
	for {
		line, nl, err := r.readLine(&n)
		if err != nil && !errors.Is(err, io.EOF) {
			return blk, err
		}
		eof := errors.Is(err, io.EOF)
		if eof && len(line) == 0 {
			flush()
			return blk, nil
		}
		if r.stop != nil && r.stop(line) {
			flush()
			blk.stopLine = line
			return blk, nil
		}
		if first && top {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
			if bytes.HasPrefix(line, []byte("From ")) || bytes.HasPrefix(line, []byte(">From ")) {
				if eof {
					return blk, nil
				}
				continue // mbox separator line
			}
		}
		switch {
		case len(line) == 0:
			if top && len(blk.h.fields) == 0 && cur == nil && !eof {
				continue // leading blank lines
			}
			flush()
			blk.sawEnd = true
			return blk, nil
		case line[0] == ' ' || line[0] == '\t':
			if cur == nil {
				if !top && len(blk.h.fields) == 0 && first {
					blk.leftover, blk.leftoverNL = line, nl
					blk.warnings = append(blk.warnings, r.what+" is missing; body starts right after the boundary")
					return blk, nil
				}
				blk.skipped++
			} else {
				// Unfolding (RFC 5322 section 2.2.3) leaves the folding
				// white space; a client shows the run as one space
				// (section 3.2.2 reads FWS so in structured fields too).
				raw = bytes.TrimRight(raw, " \t")
				next := bytes.TrimLeft(line, " \t")
				if !jisFold(raw, next) {
					raw = append(raw, ' ')
				}
				raw = append(raw, next...)
			}
		default:
			key, value, ok := splitField(line)
			if !ok {
				if !top && first {
					blk.leftover, blk.leftoverNL = line, nl
					blk.warnings = append(blk.warnings, r.what+" is missing; body starts right after the boundary")
					return blk, nil
				}
				flush()
				blk.skipped++
				break
			}
			flush()
			cur = &field{key: key}
			raw = append(raw[:0], value...)
		}
		first = false
		if eof {
			flush()
			return blk, nil
		}
	}
}

// splitField splits "Key: value". The key must be printable ASCII without
// spaces or colons (RFC 5322 section 3.6.8); trailing white space before the
// colon is accepted.
func splitField(line []byte) (key string, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", nil, false
	}
	k := bytes.TrimRight(line[:i], " \t")
	if len(k) == 0 {
		return "", nil, false
	}
	for _, c := range k {
		if c < 33 || c > 126 {
			return "", nil, false
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(k)), line[i+1:], true
}

// jisFold reports whether a fold between raw ISO-2022-JP text (RFC 1468)
// left the line in JIS mode, or ends one JIS run where the next line
// starts another: the folding white space is then no text, and no space is
// inserted.
func jisFold(before, after []byte) bool {
	if bytes.IndexByte(before, 0x1b) < 0 {
		return false
	}
	toJIS := max(bytes.LastIndex(before, []byte("\x1b$B")), bytes.LastIndex(before, []byte("\x1b$@")))
	if toJIS > bytes.LastIndex(before, []byte("\x1b(")) {
		return true
	}
	return bytes.HasSuffix(before, []byte("\x1b(B")) &&
		(bytes.HasPrefix(after, []byte("\x1b$B")) || bytes.HasPrefix(after, []byte("\x1b$@")))
}

// trimWSP removes leading and trailing spaces and tabs.
func trimWSP(b []byte) []byte {
	return bytes.Trim(b, " \t")
}

// mailHeaderKeys are fields whose presence makes a block look like a mail
// header. A block with none of them is "not a mail".
var mailHeaderKeys = []string{
	"From", "Sender", "To", "Cc", "Bcc", "Subject", "Date", "Message-Id", "Received",
	"Return-Path", "Mime-Version", "Content-Type", "Delivered-To", "Reply-To",
	"In-Reply-To", "References", "X-Original-To", "Envelope-To",
}

// looksLikeMail reports whether h holds at least one field every mail
// header has some of.
func (h *header) looksLikeMail() bool {
	for _, k := range mailHeaderKeys {
		if h.has(k) {
			return true
		}
	}
	return false
}
