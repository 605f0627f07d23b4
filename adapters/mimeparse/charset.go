package mimeparse

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
)

// encodedWord matches an RFC 2047 encoded word. The text part may hold
// spaces (broken Q words) but never "?".
var encodedWord = regexp.MustCompile(`=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=`)

// text decodes RFC 2047 encoded words in a header value, more forgivingly
// than mime.WordDecoder, as mail clients do: words may touch other text,
// adjacent words of one charset are joined before decoding (so a character
// split across two words survives), B words with wrong padding are read,
// an RFC 2231 language suffix ("utf-8*de") is ignored, an unknown charset
// or bytes that are invalid in the declared charset are decoded by guessing
// (see guessDecode), and a word that cannot be decoded stays as written.
func (p *parser) text(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	locs := encodedWord.FindAllStringSubmatchIndex(v, -1)
	if len(locs) == 0 {
		return v
	}
	var out strings.Builder
	var pendCS string
	var pend []byte
	pending := false
	flush := func() {
		if pending {
			out.WriteString(p.decodeWord(pendCS, pend))
			pend, pending = nil, false
		}
	}
	prevEnd := 0
	for i, loc := range locs {
		between := v[prevEnd:loc[0]]
		if i == 0 || strings.TrimSpace(between) != "" {
			flush()
			out.WriteString(between)
		} // else: white space between adjacent encoded words is dropped (RFC 2047 section 6.2)
		prevEnd = loc[1]
		cs := strings.ToLower(v[loc[2]:loc[3]])
		if j := strings.IndexByte(cs, '*'); j >= 0 {
			cs = cs[:j]
		}
		raw, ok := wordBytes(v[loc[4]:loc[5]], v[loc[6]:loc[7]])
		if !ok {
			flush()
			out.WriteString(v[loc[0]:loc[1]])
			continue
		}
		if pending && cs != pendCS {
			flush()
		}
		pendCS, pending = cs, true
		pend = append(pend, raw...)
	}
	flush()
	out.WriteString(v[prevEnd:])
	return strings.ToValidUTF8(out.String(), "\uFFFD")
}

// wordBytes decodes the text of one encoded word.
func wordBytes(enc, text string) ([]byte, bool) {
	if enc == "b" || enc == "B" {
		clean := strings.Map(func(r rune) rune {
			if r == '=' || unicode.IsSpace(r) {
				return -1
			}
			return r
		}, text)
		if len(clean)%4 == 1 {
			clean = clean[:len(clean)-1]
		}
		b, err := base64.RawStdEncoding.DecodeString(clean)
		if err != nil {
			return nil, false
		}
		return b, true
	}
	out := make([]byte, 0, len(text))
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '_':
			out = append(out, ' ')
		case c == '=' && i+2 < len(text) && isHex(text[i+1]) && isHex(text[i+2]):
			out = append(out, unhex(text[i+1])<<4|unhex(text[i+2]))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return out, true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// decodeWord converts the bytes of joined encoded words to UTF-8.
func (p *parser) decodeWord(cs string, b []byte) string {
	s, how := decodeCharset(cs, b)
	switch how {
	case charsetUnknown:
		p.warn("unknown charset %q in an encoded word; charset guessed", cs)
	case charsetMislabelled:
		p.warn("encoded word not valid %s; charset guessed", cs)
	}
	return s
}

// How decodeCharset decoded.
const (
	charsetAsDeclared = iota
	charsetUnknown
	charsetMislabelled
)

// decodeCharset converts b from charset cs to UTF-8. An unknown charset is
// guessed (see guessDecode); so are bytes that are invalid in the declared
// charset, when the guess is clean (Shift_JIS labelled ISO-2022-JP is
// common).
func decodeCharset(cs string, b []byte) (string, int) {
	switch normCharset(cs) {
	case "utf-8", "utf8", "us-ascii", "":
		if utf8.Valid(b) {
			return string(b), charsetAsDeclared
		}
		return guessDecode(b, ""), charsetMislabelled
	}
	r, ok := charsetReader(cs, bytes.NewReader(b))
	if !ok {
		return guessDecode(b, ""), charsetUnknown
	}
	out, err := io.ReadAll(r)
	s := strings.ToValidUTF8(string(out), "\uFFFD")
	if err != nil || strings.ContainsRune(s, utf8.RuneError) {
		for _, enc := range mislabelledAs[normCharset(cs)] {
			if g, err := enc.NewDecoder().Bytes(b); err == nil && !bytes.ContainsRune(g, utf8.RuneError) && !latinInfix(string(g)) {
				return string(g), charsetMislabelled
			}
		}
		if g := guessDecode(b, ""); !strings.ContainsRune(g, utf8.RuneError) {
			return g, charsetMislabelled
		}
	}
	return s, charsetAsDeclared
}

// latinInfix reports whether a non-ASCII character stands between two
// ASCII letters, as an accented letter does inside a Latin word and a
// kanji read from Latin bytes ("Dij蛎t") does, but Japanese text does not.
func latinInfix(s string) bool {
	rs := []rune(s)
	isLetter := func(r rune) bool { return r < 0x80 && unicode.IsLetter(r) }
	for i := 1; i+1 < len(rs); i++ {
		if rs[i] >= 0x80 && isLetter(rs[i-1]) && isLetter(rs[i+1]) {
			return true
		}
	}
	return false
}

// mislabelledAs lists, for a label, the charsets that text carrying it but
// not valid in it is tried in first: Japanese mailers label Shift_JIS and
// EUC-JP text as ISO-2022-JP, and a Shift_JIS name holds kanji but no kana,
// which the general guess needs.
var mislabelledAs = map[string][]encoding.Encoding{
	"iso-2022-jp":   {japanese.ShiftJIS, japanese.EUCJP},
	"csiso2022jp":   {japanese.ShiftJIS, japanese.EUCJP},
	"iso-2022-jp-2": {japanese.ShiftJIS, japanese.EUCJP},
}

// guessDecode decodes raw 8-bit bytes the way mail clients do: valid UTF-8
// as such (RFC 6532); else in fallback, the charset the message declares
// for its first text part; else windows-1252. Two guesses come before a
// single-byte fallback and before windows-1252, because a single-byte
// charset reads any bytes: GB18030 when the 8-bit bytes come in pairs
// (Chinese text), and Shift_JIS when that yields kana (Japanese).
func guessDecode(b []byte, fallback string) string {
	if utf8.Valid(b) {
		return string(b)
	}
	try := func(enc encoding.Encoding) (string, bool) {
		out, err := enc.NewDecoder().Bytes(b)
		if err != nil || bytes.ContainsRune(out, utf8.RuneError) {
			return "", false
		}
		return string(out), true
	}
	declared, singleByte := "", false
	if l := normCharset(fallback); l != "" && l != "utf-8" && l != "utf8" && l != "us-ascii" {
		if r, ok := charsetReader(l, bytes.NewReader(b)); ok {
			if out, err := io.ReadAll(r); err == nil && !bytes.ContainsRune(out, utf8.RuneError) {
				declared, singleByte = string(out), utf8.RuneCount(out) == len(b)
				if !singleByte {
					return declared
				}
			}
		}
	}
	if pairedHighBytes(b) {
		if s, ok := try(simplifiedchinese.GB18030); ok {
			return s
		}
	}
	if s, ok := try(japanese.ShiftJIS); ok && hasKana(s) {
		return s
	}
	if singleByte {
		return declared
	}
	out, _ := charmap.Windows1252.NewDecoder().Bytes(b)
	return strings.ToValidUTF8(string(out), "\uFFFD")
}

// pairedHighBytes reports whether every run of 8-bit bytes has an even
// length, as in GB2312/GBK/Big5/EUC text, and unlike Latin text where
// accented letters stand alone between ASCII letters.
func pairedHighBytes(b []byte) bool {
	run, runs := 0, 0
	for _, c := range b {
		if c >= 0x80 {
			run++
			continue
		}
		if run%2 == 1 {
			return false
		}
		if run > 0 {
			runs++
		}
		run = 0
	}
	if run > 0 {
		runs++
	}
	return run%2 == 0 && runs > 0
}

// hasKana reports whether s holds hiragana or (full-width) katakana.
func hasKana(s string) bool {
	for _, r := range s {
		if r >= 0x3040 && r <= 0x30FF {
			return true
		}
	}
	return false
}

// charsetAliases maps labels to the encoding mail clients actually use for
// them: ISO-8859-1 and US-ASCII mail is decoded as windows-1252 (its C1 range
// holds the curly quotes Outlook sends), and the GB family as GB18030, the
// superset of GB2312 and GBK.
var charsetAliases = map[string]encoding.Encoding{
	"iso-8859-1":      charmap.Windows1252,
	"iso8859-1":       charmap.Windows1252,
	"iso_8859-1":      charmap.Windows1252,
	"latin1":          charmap.Windows1252,
	"latin-1":         charmap.Windows1252,
	"l1":              charmap.Windows1252,
	"cp1252":          charmap.Windows1252,
	"us-ascii":        charmap.Windows1252,
	"ascii":           charmap.Windows1252,
	"gb2312":          simplifiedchinese.GB18030,
	"gb_2312-80":      simplifiedchinese.GB18030,
	"euc-cn":          simplifiedchinese.GB18030,
	"gbk":             simplifiedchinese.GB18030,
	"x-gbk":           simplifiedchinese.GB18030,
	"cp936":           simplifiedchinese.GB18030,
	"gb18030":         simplifiedchinese.GB18030,
	"shift_jis":       japanese.ShiftJIS,
	"shift-jis":       japanese.ShiftJIS,
	"sjis":            japanese.ShiftJIS,
	"x-sjis":          japanese.ShiftJIS,
	"cp932":           japanese.ShiftJIS,
	"ms932":           japanese.ShiftJIS,
	"windows-31j":     japanese.ShiftJIS,
	"cp874":           charmap.Windows874,
	"ms874":           charmap.Windows874,
	"cp949":           korean.EUCKR, // x/text's EUC-KR is Microsoft's superset, code page 949
	"ms949":           korean.EUCKR,
	"uhc":             korean.EUCKR,
	"x-windows-949":   korean.EUCKR,
	"ks_c_5601-1987":  korean.EUCKR,
	"ks_c_5601":       korean.EUCKR,
	"ksc5601":         korean.EUCKR,
	"cp950":           traditionalchinese.Big5,
	"ms950":           traditionalchinese.Big5,
	"x-mac-roman":     charmap.Macintosh,
	"mac":             charmap.Macintosh,
	"macroman":        charmap.Macintosh,
	"x-mac-cyrillic":  charmap.MacintoshCyrillic,
	"x-mac-ukrainian": charmap.MacintoshCyrillic,
}

// errMalformed reports input that is not valid in its charset; what could
// be decoded has U+FFFD in place of the rest.
var errMalformed = errors.New("malformed input")

// errReader returns err (io.EOF when nil) on every read.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) {
	if r.err == nil {
		return 0, io.EOF
	}
	return 0, r.err
}

// extraDecoder returns a decoder for a charset golang.org/x/text lacks:
// UTF-7 (RFC 2152) and the Mac OS code pages of macCharmaps; nil for any
// other label.
func extraDecoder(l string) func([]byte) (string, bool) {
	if utf7Labels[l] {
		return decodeUTF7
	}
	if tab, ok := macCharmaps[l]; ok {
		return func(b []byte) (string, bool) {
			var out strings.Builder
			out.Grow(len(b))
			for _, c := range b {
				if c < 0x80 {
					out.WriteByte(c)
				} else {
					out.WriteRune(tab[c-0x80])
				}
			}
			return out.String(), true
		}
	}
	return nil
}

// normCharset lower-cases a charset label, strips quotes and spaces, and
// spells the Windows code page numbers Microsoft mailers write as the
// charset they stand for ("cp65001" is UTF-8, "cp28592" ISO-8859-2,
// "win-1251" windows-1251).
func normCharset(label string) string {
	l := strings.ToLower(strings.Trim(strings.TrimSpace(label), `"' `))
	num := ""
	for _, prefix := range []string{"cp-", "cp", "win-", "win", "ibm-"} {
		if rest, ok := strings.CutPrefix(l, prefix); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			num = rest
			if prefix == "ibm-" {
				return "ibm" + num
			}
			break
		}
	}
	if num == "" {
		return l
	}
	if n, err := strconv.Atoi(num); err == nil {
		switch {
		case n >= 1250 && n <= 1258:
			return "windows-" + num
		case n >= 28591 && n <= 28606:
			return "iso-8859-" + strconv.Itoa(n-28590)
		}
	}
	if cs, ok := codePages[num]; ok {
		return cs
	}
	return l
}

// codePages names the charsets of Windows code pages that are no
// windows-125x or ISO-8859 page.
var codePages = map[string]string{
	"65001": "utf-8",
	"20127": "us-ascii",
	"51932": "euc-jp",
	"20932": "euc-jp",
	"50220": "iso-2022-jp",
	"50221": "iso-2022-jp",
	"50222": "iso-2022-jp",
	"54936": "gb18030",
	"52936": "hz-gb-2312",
	"20866": "koi8-r",
	"21866": "koi8-u",
	"858":   "ibm00858",
	"10000": "x-mac-roman",
	"10007": "x-mac-cyrillic",
	"10029": "x-mac-ce",
	"10006": "x-mac-greek",
	"10079": "x-mac-icelandic",
	"10081": "x-mac-turkish",
	"10082": "x-mac-croatian",
	"10010": "x-mac-romanian",
}

// charsetReader returns a UTF-8 reader for label, or false when the charset
// is unknown. UTF-8 itself passes through.
func charsetReader(label string, in io.Reader) (io.Reader, bool) {
	l := normCharset(label)
	switch l {
	case "utf-8", "utf8", "":
		return in, true
	}
	if enc, ok := charsetAliases[l]; ok {
		return enc.NewDecoder().Reader(in), true
	}
	if dec := extraDecoder(l); dec != nil {
		b, err := io.ReadAll(in)
		s, ok := dec(b)
		if err == nil && !ok {
			err = errMalformed
		}
		return io.MultiReader(strings.NewReader(s), errReader{err}), true
	}
	r, err := charset.Reader(l, in)
	if err != nil || r == nil {
		return nil, false
	}
	return r, true
}

// charsetName names the charset raw header bytes are decoded with.
func charsetName(label string) string {
	if l := normCharset(label); l != "" && l != "us-ascii" && l != "utf-8" {
		return l
	}
	return "windows-1252"
}

// decodeBytes decodes raw 8-bit header bytes (see guessDecode).
func decodeBytes(b []byte, fallback string) string {
	return guessDecode(b, fallback)
}

// decodeText converts a text part's bytes to UTF-8. Without a charset, or
// with US-ASCII, valid UTF-8 is taken as such and anything else as
// windows-1252; an unknown charset is a warning, not a failure.
func (p *parser) decodeText(b []byte, label, path string) string {
	l := normCharset(label)
	switch l {
	case "", "us-ascii", "ascii":
		if utf8.Valid(b) {
			return string(b)
		}
		if l != "" {
			p.warn("part %s: 8-bit text labelled %s; read as windows-1252", path, l)
		}
		return guessDecode(b, "")
	case "utf-8", "utf8":
		if !utf8.Valid(b) {
			p.warn("part %s: invalid UTF-8 replaced", path)
		}
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	r, ok := charsetReader(l, bytes.NewReader(b))
	if !ok {
		p.warn("part %s: unknown charset %q; charset guessed", path, l)
		return guessDecode(b, "")
	}
	out, err := io.ReadAll(r)
	if err != nil {
		p.warn("part %s: charset %s: %v", path, l, err)
	}
	return strings.ToValidUTF8(string(out), "\uFFFD")
}
