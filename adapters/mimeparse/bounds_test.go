package mimeparse_test

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
)

// The bounds the package documents (doc.go, "Bounds"): RFC 5321 section
// 4.5.3.1 for addresses, RFC 5322 section 2.1.1's line length for one-line
// texts.
const (
	maxLocalPart  = 64
	maxDomain     = 255
	maxAddress    = 254
	maxLine       = 998
	maxSubject    = 4096
	maxFilename   = 255
	maxReferences = 100
)

// assertBounded fails when a field of s could not be stored in an indexed
// SQL text column: a control character in a one-line field, a NUL anywhere,
// invalid UTF-8, or a field longer than its bound.
func assertBounded(tb testing.TB, s mimeparse.Summary) {
	tb.Helper()
	line := func(name, v string, limit int) {
		tb.Helper()
		switch {
		case !utf8.ValidString(v):
			tb.Errorf("%s = %q is not valid UTF-8", name, v)
		case strings.ContainsFunc(v, unicode.IsControl):
			tb.Errorf("%s = %q holds a control character", name, v)
		case len(v) > limit:
			tb.Errorf("%s has %d bytes, want at most %d", name, len(v), limit)
		}
	}
	email := func(name, v string) {
		tb.Helper()
		line(name, v, maxAddress)
		if at := strings.LastIndexByte(v, '@'); at >= 0 && (at > maxLocalPart || len(v)-at-1 > maxDomain) {
			tb.Errorf("%s = %q: local part of %d or domain of %d bytes, want at most %d and %d",
				name, v, at, len(v)-at-1, maxLocalPart, maxDomain)
		}
	}
	addr := func(name string, a mimeparse.Address) {
		tb.Helper()
		line(name+".Name", a.Name, maxLine)
		email(name+".Email", a.Email)
	}
	text := func(name, v string) {
		tb.Helper()
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			tb.Errorf("%s holds a NUL or invalid UTF-8", name)
		}
	}

	line("Subject", s.Subject, maxSubject)
	line("MessageID", s.MessageID, maxLine)
	line("InReplyTo", s.InReplyTo, maxLine)
	line("BouncedMessageID", s.BouncedMessageID, maxLine)
	if len(s.References) > maxReferences {
		tb.Errorf("%d References, want at most %d", len(s.References), maxReferences)
	}
	for _, r := range s.References {
		line("References[]", r, maxLine)
	}
	addr("From", s.From)
	for _, list := range [][]mimeparse.Address{s.ReplyTo, s.To, s.Cc} {
		for _, a := range list {
			addr("ReplyTo/To/Cc[]", a)
		}
	}
	for _, d := range s.DeliveredTo {
		email("DeliveredTo[]", d)
	}
	email("ReturnPath", s.ReturnPath)
	line("AutoSubmitted", s.AutoSubmitted, maxLine)
	line("Precedence", s.Precedence, maxLine)
	for k, v := range s.LoopHeaders {
		line("LoopHeaders key", k, maxLine)
		line("LoopHeaders["+k+"]", v, maxLine)
	}
	line("ContentType", s.ContentType, maxLine)
	line("ReportType", s.ReportType, maxLine)
	for _, a := range s.Attachments {
		line("Attachment.Filename", a.Filename, maxFilename)
		line("Attachment.ContentType", a.ContentType, maxLine)
		line("Attachment.ContentID", a.ContentID, maxLine)
	}
	text("TextBody", s.TextBody)
	text("HTMLBody", s.HTMLBody)
	for _, w := range s.Warnings {
		text("Warnings[]", w)
	}
}

func TestParse_HostileHeadersAreBounded(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 2700) + "@example.com" // the 2.7 KB sender of issue 14
	mail := func(header ...string) string {
		return crlf(append(header, "", "body")...)
	}
	refs := make([]string, 150)
	for i := range refs {
		refs[i] = "<r" + itoa(i) + "@example.com>"
	}
	tests := []struct {
		name     string
		raw      string
		field    func(mimeparse.Summary) any
		want     any
		wantWarn string
	}{
		{
			name:     "a NUL in the sender address makes it no address; the header is kept for display",
			raw:      mail("From: Jane <ja\x00ne@example.org>", "Message-ID: <a@x>"),
			field:    func(s mimeparse.Summary) any { return s.From },
			want:     mimeparse.Address{Name: "Jane <ja ne@example.org>"},
			wantWarn: "From address refused",
		},
		{
			name:     "a 2.7 KB sender address is no address; the header kept for display is cut at 998 bytes",
			raw:      mail("From: "+long, "Message-ID: <a@x>"),
			field:    func(s mimeparse.Summary) any { return s.From },
			want:     mimeparse.Address{Name: long[:maxLine]},
			wantWarn: "longer than 254",
		},
		{
			name:  "a 2.7 KB address inside a malformed header is refused too",
			raw:   mail(`From: "x <`+long+">", "Sender: real@example.net", "Message-ID: <a@x>"),
			field: func(s mimeparse.Summary) any { return s.From },
			want:  mimeparse.Address{Email: "real@example.net"},
		},
		{
			name:  "a local part of 64 bytes is an address",
			raw:   mail("From: "+strings.Repeat("b", 64)+"@example.com", "Message-ID: <a@x>"),
			field: func(s mimeparse.Summary) any { return s.From.Email },
			want:  strings.Repeat("b", 64) + "@example.com",
		},
		{
			name:     "a local part of 65 bytes is not",
			raw:      mail("From: "+strings.Repeat("b", 65)+"@example.com", "Message-ID: <a@x>"),
			field:    func(s mimeparse.Summary) any { return s.From.Email },
			want:     "",
			wantWarn: "local part longer than 64",
		},
		{
			name:     "a domain of 256 bytes is not",
			raw:      mail("From: b@"+strings.Repeat("d", 252)+".com", "Message-ID: <a@x>"),
			field:    func(s mimeparse.Summary) any { return s.From.Email },
			want:     "",
			wantWarn: "longer than 254",
		},
		{
			name: "a CR LF encoded in the display name becomes spaces",
			raw: mail("From: =?utf-8?q?Jane=0D=0ABcc:_victim@example.org?= <jane@example.org>",
				"Message-ID: <a@x>"),
			field: func(s mimeparse.Summary) any { return s.From },
			want:  mimeparse.Address{Name: "Jane  Bcc: victim@example.org", Email: "jane@example.org"},
		},
		{
			name:  "a CR LF encoded in the address of a malformed header stays encoded",
			raw:   mail(`From: "broken <=?utf-8?q?a=0D=0ABcc:_x?=@example.com>`, "Message-ID: <a@x>"),
			field: func(s mimeparse.Summary) any { return s.From },
			want:  mimeparse.Address{Name: "broken", Email: "=?utf-8?q?a=0D=0ABcc:_x?=@example.com"},
		},
		{
			name:  "a bare CR in the sender does not reach the address",
			raw:   mail("From: a@example.com\rBcc: x@example.org", "Message-ID: <a@x>"),
			field: func(s mimeparse.Summary) any { return s.From.Email },
			want:  "a@example.com",
		},
		{
			// RFC 2047 section 5: an encoded word never stands in an
			// addr-spec, so it is text there, as net/mail reads it.
			name:  "an encoded word holding a NUL in the address of a malformed header stays encoded",
			raw:   mail(`From: "broken <=?utf-8?q?a=00b?=@example.com>`, "Message-ID: <a@x>"),
			field: func(s mimeparse.Summary) any { return s.From },
			want:  mimeparse.Address{Name: "broken", Email: "=?utf-8?q?a=00b?=@example.com"},
		},
		{
			name:  "an encoded word holding a NUL in the display name becomes a space",
			raw:   mail(`From: "=?utf-8?q?Jane=00Doe?= <jane@example.org>`, "Message-ID: <a@x>"),
			field: func(s mimeparse.Summary) any { return s.From },
			want:  mimeparse.Address{Name: "Jane Doe", Email: "jane@example.org"},
		},
		{
			name:     "an encoded word holding an address is a display name, not the sender",
			raw:      mail("From: =?utf-8?q?boss=40example.com?=", "Sender: real@example.net", "Message-ID: <a@x>"),
			field:    func(s mimeparse.Summary) any { return s.From },
			want:     mimeparse.Address{Email: "real@example.net"},
			wantWarn: "sender taken from Sender",
		},
		{
			name:  "of a list, the refused address is dropped and the others kept",
			raw:   mail("From: a@example.com", "To: ok@example.com, bad\x01@example.com, "+long, "Message-ID: <a@x>"),
			field: func(s mimeparse.Summary) any { return s.To },
			want:  []mimeparse.Address{{Email: "ok@example.com"}},
		},
		{
			name: "a NUL and a CR LF in the subject become spaces and a long subject is cut at 4 KiB",
			raw: mail("From: a@example.com", "Subject: =?utf-8?q?a=00b=0D=0Ac?= "+strings.Repeat("s", 5000),
				"Message-ID: <a@x>"),
			field:    func(s mimeparse.Summary) any { return s.Subject },
			want:     ("a b  c " + strings.Repeat("s", 5000))[:maxSubject],
			wantWarn: "Subject cut",
		},
		{
			name:     "a Message-ID with a NUL is no Message-ID",
			raw:      mail("From: a@example.com", "Message-ID: <a\x00b@x>", "Subject: s"),
			field:    func(s mimeparse.Summary) any { return strings.HasPrefix(s.MessageID, "gen-") },
			want:     true,
			wantWarn: "Message-ID missing",
		},
		{
			name: "In-Reply-To and References drop ids with control characters",
			raw: mail("From: a@example.com", "Message-ID: <a@x>", "In-Reply-To: <p\x01@x>",
				"References: <r\x00@x> <ok@x> <"+strings.Repeat("r", 1000)+"@x>"),
			field: func(s mimeparse.Summary) any { return []any{s.InReplyTo, s.References} },
			want:  []any{"", []string{"ok@x"}},
		},
		{
			name:  "more than 100 References keep the first (the thread's root) and the last 99",
			raw:   mail("From: a@example.com", "Message-ID: <a@x>", "References: "+strings.Join(refs, " ")),
			field: func(s mimeparse.Summary) any { return s.References },
			want:  append([]string{"r0@example.com"}, stripBrackets(refs[51:])...),
		},
		{
			name: "Delivered-To and Return-Path with a NUL or too long are dropped",
			raw: mail("From: a@example.com", "Message-ID: <a@x>", "Delivered-To: d\x00@example.com",
				"Delivered-To: ok@example.com", "Delivered-To: "+long, "Return-Path: <r\x00@example.com>"),
			field: func(s mimeparse.Summary) any { return []any{s.DeliveredTo, s.ReturnPath} },
			want:  []any{[]string{"ok@example.com"}, ""},
		},
		{
			name:  "a NUL in the text body becomes U+FFFD",
			raw:   crlf("From: a@example.com", "Message-ID: <a@x>", "", "a\x00b"),
			field: func(s mimeparse.Summary) any { return s.TextBody },
			want:  "a\uFFFDb",
		},
		{
			name: "automatic-mail headers lose control characters",
			raw: mail("From: a@example.com", "Message-ID: <a@x>", "Auto-Submitted: auto-\x00replied",
				"Precedence: bu\x7flk", "X-Loop: help\x00desk"),
			field: func(s mimeparse.Summary) any {
				return []any{s.AutoSubmitted, s.Precedence, s.LoopHeaders}
			},
			want: []any{"auto- replied", "bu lk", map[string]string{"x-loop": "help desk"}},
		},
		{
			name: "a media type with a NUL or over 255 bytes is unreadable",
			raw: crlf("From: a@example.com", "Message-ID: <a@x>",
				`Content-Type: multipart/mixed; boundary="b"`, "", "--b",
				"Content-Type: application/x\x00y", "", "x", "--b",
				"Content-Type: application/"+strings.Repeat("z", 300), "Content-Disposition: attachment", "", "y", "--b--"),
			field: func(s mimeparse.Summary) any {
				var types []string
				for _, a := range s.Attachments {
					types = append(types, a.ContentType)
				}
				return []any{types, s.TextBody}
			},
			want: []any{[]string{"text/plain"}, "x"},
		},
		{
			name: "an attachment's file name is cut at 255 bytes, keeping its extension, and a Content-ID with a NUL is dropped",
			raw: crlf("From: a@example.com", "Message-ID: <a@x>",
				`Content-Type: multipart/mixed; boundary="b"`, "", "--b",
				"Content-Type: application/pdf; name=\""+strings.Repeat("n", 400)+".pdf\"",
				"Content-ID: <c\x00id@x>", "", "x", "--b--"),
			field: func(s mimeparse.Summary) any {
				if len(s.Attachments) != 1 {
					return s.Attachments
				}
				return []any{s.Attachments[0].Filename, s.Attachments[0].ContentID}
			},
			want: []any{strings.Repeat("n", maxFilename-len(".pdf")) + ".pdf", ""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustParse(t, tc.raw)
			if diff := cmp.Diff(tc.want, tc.field(got)); diff != "" {
				t.Errorf("Parse() (-want +got):\n%s", diff)
			}
			if tc.wantWarn != "" && !hasWarning(got, tc.wantWarn) {
				t.Errorf("Parse() warnings = %q, want one containing %q", got.Warnings, tc.wantWarn)
			}
			assertBounded(t, got)
		})
	}
}

func stripBrackets(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strings.Trim(id, "<>")
	}
	return out
}
