package mimeparse

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseAddress feeds arbitrary header values to the address reader: as
// an address list, and as From, Sender, Return-Path and Delivered-To of one
// header (the sender's fallbacks and the bare-address reader). It must not
// panic, and whatever it returns must be storable in an indexed SQL column:
// valid UTF-8 without control characters, addresses within the limits of
// RFC 5321 section 4.5.3.1, display names within maxLine bytes.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"Jane Doe <jane@example.org>",
		`"Doe, John" <john@example.org>, other@example.com`,
		"Doe, John <john@example.org>",
		"john@example.org (John Doe)",
		"=?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>",
		"=?iso-8859-1?Q?B=FCrling,=20Andreas?= <a@example.com>",
		"Jane <ja\x00ne@example.org>",
		`"broken <=?utf-8?q?a=00b?=@example.com>`,
		`"broken <=?utf-8?q?a=0D=0ABcc:_x?=@example.com>`,
		"=?utf-8?q?boss=40example.com?=",
		"=?utf-8?q?Jane=0D=0ABcc:_victim@example.org?= <jane@example.org>",
		"a@example.com\rBcc: x@example.org",
		strings.Repeat("a", 300) + "@example.com",
		"b@" + strings.Repeat("d", 260),
		`"john doe"@example.org`,
		"<>",
		"undisclosed-recipients:;",
		"Test test@example.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		p := &parser{lim: DefaultLimits()}
		as, _ := p.addressList("To", v)
		for _, a := range as {
			checkAddress(t, "addressList", a)
		}
		h := &header{fields: []field{{"From", v}, {"Sender", v}, {"Return-Path", v}, {"Delivered-To", v}}}
		s := p.summarise(h)
		checkAddress(t, "From", s.From)
		checkEmail(t, "ReturnPath", s.ReturnPath)
		for _, d := range s.DeliveredTo {
			checkEmail(t, "DeliveredTo", d)
		}
	})
}

func checkAddress(t *testing.T, what string, a Address) {
	t.Helper()
	if !utf8.ValidString(a.Name) || hasControl(a.Name) || len(a.Name) > maxLine {
		t.Fatalf("%s name = %q (%d bytes): want valid UTF-8, no control characters, at most %d bytes",
			what, a.Name, len(a.Name), maxLine)
	}
	checkEmail(t, what, a.Email)
}

func checkEmail(t *testing.T, what, email string) {
	t.Helper()
	if why := addrSpecProblem(email); why != "" {
		t.Fatalf("%s address = %q: %s", what, email, why)
	}
	if at := strings.LastIndexByte(email, '@'); len(email) > 254 || at > 64 || (at >= 0 && len(email)-at-1 > 255) {
		t.Fatalf("%s address = %q is beyond RFC 5321's limits", what, email)
	}
}
