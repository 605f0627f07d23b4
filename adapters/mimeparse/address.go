package mimeparse

import (
	"encoding/base64"
	"io"
	"mime"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
)

// bareAddress strips angle brackets, a mailto: and white space.
func bareAddress(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		v = v[i+1:]
		if j := strings.IndexByte(v, '>'); j >= 0 {
			v = v[:j]
		}
	}
	v = strings.TrimPrefix(strings.TrimSpace(v), "mailto:")
	return strings.TrimSpace(v)
}

// envelopeAddress reads an address given without a display name
// (Delivered-To, Return-Path); "" when it is no address (see
// addrSpecProblem), with a warning naming the header.
func (p *parser) envelopeAddress(what, v string) string {
	a := bareAddress(v)
	if why := addrSpecProblem(a); why != "" {
		p.warn("header: %s address refused: %s", what, why)
		return ""
	}
	return a
}

// addressLists parses every value of a header, as addressList does.
func (p *parser) addressLists(what string, vs []string) []Address {
	var out []Address
	for _, v := range vs {
		as, _ := p.addressList(what, v)
		out = append(out, as...)
	}
	return out
}

// addressList parses an address list with net/mail and, when that fails, a
// forgiving reader (see lenientAddresses). Display names have encoded words
// decoded, also inside quotes where net/mail leaves them, and are bounded
// to one line of maxLine bytes. An address with a control character or
// beyond the limits of RFC 5321 is no address: it is left out with a
// warning naming the header (what), and refused says so.
func (p *parser) addressList(what, v string) (out []Address, refused bool) {
	for _, a := range p.parseAddressList(v) {
		if why := addrSpecProblem(a.Email); why != "" {
			p.warn("header: %s address refused: %s", what, why)
			refused = true
			continue
		}
		a.Name = p.boundedLine(what+" display name", a.Name, maxLine)
		out = append(out, a)
	}
	return out, refused
}

// parseAddressList reads v as it is written, unchecked.
func (p *parser) parseAddressList(v string) []Address {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	// net/mail decodes each encoded word of a display name on its own, so
	// a character split across two words (RFC 2047 section 5 forbids it,
	// GBK and ISO-2022-JP mailers do it) would be lost. Its decoder hands
	// the word's bytes back re-encoded instead; net/mail joins adjacent
	// encoded words, and p.text decodes the joined words in one go.
	ap := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: func(cs string, in io.Reader) (io.Reader, error) {
		raw, err := io.ReadAll(in)
		if err != nil {
			return nil, err
		}
		return strings.NewReader("=?" + cs + "?B?" + base64.StdEncoding.EncodeToString(raw) + "?="), nil
	}}}
	if list, err := ap.ParseList(v); err == nil {
		out := make([]Address, 0, len(list))
		for _, a := range list {
			out = append(out, Address{Name: cleanLine(p.text(a.Name)), Email: requoteLocal(a.Address)})
		}
		return out
	}
	return p.lenientAddresses(v)
}

// lenientAddresses reads what a mail client would make of a malformed
// address list: the list is split at commas outside quotes, angle brackets
// and comments, and pieces without an @ are taken as part of the next
// piece's display name ("Doe, John" unquoted). In each piece the address is
// in <...>, or the word holding an @; the rest, unquoted, is the display
// name.
//
// Encoded words are decoded in display names and comments only, each name
// on its own, after the structure is read: an encoded word is never part
// of an addr-spec (RFC 2047 section 5), so "=?utf-8?q?boss=40example.com?="
// is a name and not an address, and an encoded NUL or CR LF never reaches
// an address.
func (p *parser) lenientAddresses(v string) []Address {
	var pieces []string
	var cur strings.Builder
	var quoted bool
	var angle, paren int
	for _, r := range v {
		switch {
		case r == '"':
			quoted = !quoted
		case quoted:
		case r == '<':
			angle++
		case r == '>' && angle > 0:
			angle--
		case r == '(':
			paren++
		case r == ')' && paren > 0:
			paren--
		case r == ',' && angle == 0 && paren == 0:
			pieces = append(pieces, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	pieces = append(pieces, cur.String())

	var out []Address
	var carry strings.Builder
	for _, piece := range pieces {
		if strings.TrimSpace(piece) == "" {
			continue
		}
		if !strings.Contains(piece, "@") {
			if rest, _ := splitComments(piece); strings.ContainsAny(rest, ":;") && strings.TrimSpace(stripGroup(rest)) == "" {
				continue // an empty group ("Undisclosed recipients:;"), RFC 5322 section 3.4
			}
			if carry.Len() > 0 {
				carry.WriteByte(',')
			}
			carry.WriteString(piece)
			continue
		}
		if carry.Len() > 0 {
			piece = carry.String() + "," + piece
			carry.Reset()
		}
		if a, ok := p.lenientAddress(piece); ok {
			out = append(out, a)
		}
	}
	if carry.Len() > 0 && len(out) == 0 {
		rest, _ := splitComments(carry.String())
		if name := p.displayName(carry.String()); name != "" && strings.TrimSpace(stripGroup(rest)) != "" {
			out = append(out, Address{Name: name})
		}
	}
	return out
}

// displayName reads a raw display name: quotes removed, then encoded words
// decoded, then made one line.
func (p *parser) displayName(raw string) string {
	return cleanLine(p.text(unquote(raw)))
}

// lenientAddress reads one address of a malformed list. Comments (RFC 5322
// section 3.2.2) are no part of the address: they are dropped, and the
// last one is the display name when there is no other (the obsolete
// "addr (Name)" form). A group's name and its closing ";" (section 3.4),
// an obsolete source route ("<@relay:user@host>", section 4.4) and white
// space around the dots and the @ of an addr-spec (section 4.4) are
// dropped too.
func (p *parser) lenientAddress(s string) (Address, bool) {
	s, comments := splitComments(strings.TrimSpace(s))
	s = stripGroup(s)
	commentName := ""
	if len(comments) > 0 {
		commentName = comments[len(comments)-1]
	}
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		email := s[i+1:]
		after := ""
		if j := strings.IndexByte(email, '>'); j >= 0 {
			email, after = email[:j], email[j+1:]
		}
		if k := strings.LastIndexByte(email, ':'); k >= 0 && strings.HasPrefix(strings.TrimSpace(email), "@") {
			email = email[k+1:] // source route
		} else if k >= 0 {
			// A group inside the brackets ("<Undisclosed-Recipients:;>",
			// also with a stray "@host"): no mailbox in it.
			if g := strings.TrimSpace(stripGroup(email)); g == "" || strings.HasPrefix(g, "@") {
				return Address{}, false
			}
		}
		name := strings.TrimSpace(s[:i])
		if name == "" {
			name = strings.TrimSpace(after)
		}
		email = squeezeAddrSpec(email)
		if !strings.Contains(email, "@") && email != "" && !strings.ContainsAny(email, " \t\"") {
			// "<user>": no domain, but the angle brackets say this is
			// the address and the rest the name, as Python reads it.
			return Address{Name: p.displayName(name), Email: email}, true
		}
		if strings.Contains(email, "@") {
			if name == "" {
				return Address{Name: cleanLine(p.text(commentName)), Email: email}, true
			}
			return Address{Name: p.displayName(name), Email: email}, true
		}
	}
	if email := squeezeAddrSpec(strings.Trim(s, "<> \t")); strings.Contains(email, "@") && !strings.ContainsAny(email, " \t") {
		if a, err := mail.ParseAddress(email); err == nil {
			email = requoteLocal(a.Address)
		}
		return Address{Name: cleanLine(p.text(commentName)), Email: email}, true
	}
	if !strings.Contains(s, "@") && strings.Contains(commentName, "@") && !strings.ContainsAny(strings.TrimSpace(commentName), " \t") {
		// "Name (user@host)": the address went into the comment.
		return Address{Name: p.displayName(s), Email: strings.Trim(strings.TrimSpace(commentName), "<>")}, true
	}
	if a, err := mail.ParseAddress(strings.Trim(s, "<> \t")); err == nil {
		return Address{Name: cleanLine(a.Name), Email: requoteLocal(a.Address)}, true
	}
	words := strings.Fields(s)
	var nameWords []string
	email := ""
	for _, w := range words {
		if email == "" && strings.Contains(w, "@") {
			email = strings.Trim(w, "<>,;")
			continue
		}
		nameWords = append(nameWords, w)
	}
	if email == "" {
		return Address{}, false
	}
	return Address{Name: p.displayName(strings.Join(nameWords, " ")), Email: email}, true
}

// splitComments removes the comments outside quoted strings from s (they
// nest, and a backslash escapes; section 3.2.2) and returns them, each
// without its parentheses.
func splitComments(s string) (string, []string) {
	if !strings.Contains(s, "(") {
		return s, nil
	}
	var out, cur strings.Builder
	var comments []string
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && (quoted || depth > 0):
			i++
			if depth > 0 {
				cur.WriteByte(s[i])
			} else {
				out.WriteByte(c)
				out.WriteByte(s[i])
			}
			continue
		case depth == 0 && c == '"':
			quoted = !quoted
		case !quoted && c == '(':
			depth++
			if depth == 1 {
				out.WriteByte(' ')
				continue
			}
		case depth > 0 && c == ')':
			depth--
			if depth == 0 {
				comments = append(comments, strings.TrimSpace(cur.String()))
				cur.Reset()
				continue
			}
		}
		if depth > 0 {
			cur.WriteByte(c)
		} else {
			out.WriteByte(c)
		}
	}
	return out.String(), comments
}

// stripGroup removes a group's display name ("Team:") before an address
// and the ";" that ends the group (RFC 5322 section 3.4), outside quotes
// and angle brackets.
func stripGroup(s string) string {
	// Colons and semicolons inside encoded words are text, not syntax.
	masked := []byte(s)
	for _, loc := range encodedWord.FindAllStringIndex(s, -1) {
		for i := loc[0]; i < loc[1]; i++ {
			masked[i] = 'x'
		}
	}
	quoted, angle := false, false
	for i := 0; i < len(masked); i++ {
		switch c := masked[i]; {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ':' && !angle && !strings.Contains(s[:i], "@"):
			return stripGroup(s[i+1:])
		case c == ';' && !angle:
			return s[:i]
		}
	}
	return s
}

// squeezeAddrSpec removes the white space an obsolete addr-spec may hold
// around its dots and its @ ("jdoe@test . example").
func squeezeAddrSpec(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "@") || strings.Contains(s, `"`) {
		return s
	}
	return obsAddrSpace.ReplaceAllString(s, "$1")
}

var obsAddrSpace = regexp.MustCompile(`\s*([.@])\s*`)

// requoteLocal puts back the quotes net/mail removes from a quoted local
// part ("john doe"@example.com), so Email stays a valid addr-spec.
func requoteLocal(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return addr
	}
	local := addr[:at]
	if !strings.ContainsAny(local, " \t\"(),:;<>@[\\]") {
		return addr
	}
	return strconv.Quote(local) + addr[at:]
}

// unquote removes one level of double quotes and backslash escapes.
func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		return b.String()
	}
	return strings.Trim(s, `"`)
}
