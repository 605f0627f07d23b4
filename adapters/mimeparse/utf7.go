package mimeparse

import (
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// utf7Labels are the names UTF-7 goes by in mail: the IANA name and the
// aliases Microsoft and Netscape wrote.
var utf7Labels = map[string]bool{
	"utf-7":               true,
	"utf7":                true,
	"unicode-1-1-utf-7":   true,
	"unicode-2-0-utf-7":   true,
	"x-unicode-2-0-utf-7": true,
	"csunicode11utf7":     true,
}

// decodeUTF7 decodes UTF-7 (RFC 2152), which golang.org/x/text does not
// know. Characters outside a shifted sequence are themselves; "+-" is "+";
// "+" starts a sequence of modified base64 holding UTF-16 code units, which
// ends at the first character outside the base64 alphabet, a "-" there
// being absorbed. Malformed input (8-bit bytes, an unpaired surrogate,
// leftover bits that are not zero padding) gives U+FFFD in its place and ok
// false, so that the caller can guess the charset instead; the IMAP variant
// of RFC 3501 ("&...-") is a different encoding and is not read here.
func decodeUTF7(b []byte) (s string, ok bool) {
	var out strings.Builder
	out.Grow(len(b))
	ok = true
	for i := 0; i < len(b); {
		c := b[i]
		if c >= 0x80 {
			out.WriteRune(utf8.RuneError)
			ok = false
			i++
			continue
		}
		if c != '+' {
			out.WriteByte(c)
			i++
			continue
		}
		i++
		if i < len(b) && b[i] == '-' {
			out.WriteByte('+')
			i++
			continue
		}
		var (
			bits  uint32
			nbits uint
			units []uint16
		)
		for ; i < len(b); i++ {
			v := base64Value(b[i])
			if v < 0 {
				break
			}
			bits = bits<<6 | uint32(v)
			nbits += 6
			if nbits >= 16 {
				nbits -= 16
				units = append(units, uint16(bits>>nbits))
				bits &= 1<<nbits - 1
			}
		}
		if nbits >= 6 || bits != 0 {
			ok = false // RFC 2152: a sequence ends on a whole code unit, padded with zero bits
		}
		if !writeUTF16(&out, units) {
			ok = false
		}
		if i < len(b) && b[i] == '-' {
			i++
		}
	}
	return out.String(), ok
}

// writeUTF16 writes UTF-16 code units as UTF-8; an unpaired surrogate
// becomes U+FFFD and makes it report false.
func writeUTF16(out *strings.Builder, units []uint16) bool {
	clean := true
	for j := 0; j < len(units); j++ {
		u := rune(units[j])
		switch {
		case utf16.IsSurrogate(u) && u < 0xDC00 && j+1 < len(units):
			r := utf16.DecodeRune(u, rune(units[j+1]))
			if r == utf8.RuneError {
				clean = false
			} else {
				j++
			}
			out.WriteRune(r)
		case utf16.IsSurrogate(u):
			out.WriteRune(utf8.RuneError)
			clean = false
		default:
			out.WriteRune(u)
		}
	}
	return clean
}

// base64Value is the value of a character of the base64 alphabet (RFC 2045
// table 1), or -1.
func base64Value(c byte) int {
	switch {
	case 'A' <= c && c <= 'Z':
		return int(c - 'A')
	case 'a' <= c && c <= 'z':
		return int(c-'a') + 26
	case '0' <= c && c <= '9':
		return int(c-'0') + 52
	case c == '+':
		return 62
	case c == '/':
		return 63
	}
	return -1
}
