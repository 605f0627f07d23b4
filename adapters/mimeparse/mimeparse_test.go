package mimeparse_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
)

// crlf joins lines into a mail with CRLF line ends.
func crlf(lines ...string) string { return strings.Join(lines, "\r\n") }

// ignoreRaw leaves out what depends on the exact bytes.
var ignoreRaw = cmpopts.IgnoreFields(mimeparse.Summary{}, "SHA256", "Size", "Warnings")

func mustParse(tb testing.TB, raw string) mimeparse.Summary {
	tb.Helper()
	s, err := mimeparse.ParseBytes([]byte(raw), mimeparse.DefaultLimits())
	if err != nil {
		tb.Fatalf("Parse() error = %v", err)
	}
	return s
}

func hasWarning(s mimeparse.Summary, sub string) bool {
	for _, w := range s.Warnings {
		if strings.Contains(w, sub) {
			return true
		}
	}
	return false
}

func TestParse_Headers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		raw      string
		want     mimeparse.Summary
		wantWarn string
	}{
		{
			name: "a plain mail gives its envelope fields and text",
			raw: crlf(
				"Return-Path: <bounce@example.org>",
				"Delivered-To: support@example.com",
				"Delivered-To: <helpdesk@example.com>",
				"Message-ID: <abc.123@example.org>",
				"In-Reply-To: <prev@example.com>",
				"References: <root@example.com>",
				"\t<prev@example.com>",
				"Date: Mon, 07 May 2012 08:45:46 +0200",
				"From: Jane Doe <jane@example.org>",
				"Reply-To: Team <team@example.org>",
				"To: Support <support@example.com>, other@example.com",
				"Cc: \"Doe, John\" <john@example.org>",
				"Subject: Printer on fire",
				"MIME-Version: 1.0",
				"Content-Type: text/plain; charset=utf-8",
				"",
				"Hello,",
				"it burns.",
				""),
			want: mimeparse.Summary{
				MessageID:   "abc.123@example.org",
				InReplyTo:   "prev@example.com",
				References:  []string{"root@example.com", "prev@example.com"},
				Subject:     "Printer on fire",
				From:        mimeparse.Address{Name: "Jane Doe", Email: "jane@example.org"},
				ReplyTo:     []mimeparse.Address{{Name: "Team", Email: "team@example.org"}},
				To:          []mimeparse.Address{{Name: "Support", Email: "support@example.com"}, {Email: "other@example.com"}},
				Cc:          []mimeparse.Address{{Name: "Doe, John", Email: "john@example.org"}},
				DeliveredTo: []string{"support@example.com", "helpdesk@example.com"},
				ReturnPath:  "bounce@example.org",
				Date:        time.Date(2012, 5, 7, 8, 45, 46, 0, time.FixedZone("", 2*3600)),
				ContentType: "text/plain",
				TextBody:    "Hello,\nit burns.\n",
			},
		},
		{
			name: "encoded words in Q and B, with a character split across two words, are decoded",
			raw: crlf(
				"From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>",
				"Subject: =?utf-8?B?w6Q=?= =?utf-8?Q?=C3?=",
				" =?utf-8?Q?=B6_und_=C3=BC?=",
				"Message-ID: <x@y>",
				"",
				"body"),
			want: mimeparse.Summary{
				MessageID:   "x@y",
				Subject:     "äö und ü",
				From:        mimeparse.Address{Name: "Jörg Müller", Email: "joerg@example.de"},
				ContentType: "text/plain",
				TextBody:    "body",
			},
		},
		{
			name: "automatic-mail headers are collected for loop protection",
			raw: crlf(
				"From: MAILER-DAEMON@example.com",
				"Return-Path: <>",
				"Auto-Submitted: Auto-Replied; owner-email=x@example.com",
				"Precedence: Bulk",
				"X-Auto-Response-Suppress: All",
				"X-Autoreply: yes",
				"List-Id: <list.example.com>",
				"List-Unsubscribe: <mailto:leave@example.com>",
				"X-Loop: helpdesk",
				"X-Mailer: not a loop header",
				"Message-ID: <a@b>",
				"",
				"away"),
			want: mimeparse.Summary{
				MessageID:       "a@b",
				From:            mimeparse.Address{Email: "MAILER-DAEMON@example.com"},
				ReturnPathEmpty: true,
				AutoSubmitted:   "auto-replied",
				Precedence:      "bulk",
				LoopHeaders: map[string]string{
					"x-auto-response-suppress": "All",
					"x-autoreply":              "yes",
					"list-id":                  "<list.example.com>",
					"list-unsubscribe":         "<mailto:leave@example.com>",
					"x-loop":                   "helpdesk",
				},
				ContentType: "text/plain",
				TextBody:    "away",
			},
		},
		{
			name: "raw latin-1 bytes in headers are decoded with the body's charset",
			raw: "From: J\xf6rg <j@example.de>\r\nSubject: Gr\xfc\xdfe\r\nMessage-ID: <m@x>\r\n" +
				"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nSch\xf6n\r\n",
			want: mimeparse.Summary{
				MessageID:   "m@x",
				Subject:     "Grüße",
				From:        mimeparse.Address{Name: "Jörg", Email: "j@example.de"},
				ContentType: "text/plain",
				TextBody:    "Schön\n",
			},
			wantWarn: "raw 8-bit bytes decoded as iso-8859-1",
		},
		{
			name: "raw UTF-8 headers (RFC 6532) are kept",
			raw:  crlf("From: Zoë <zoe@example.com>", "Subject: Café ☕", "Message-ID: <u@x>", "", "ok"),
			want: mimeparse.Summary{
				MessageID:   "u@x",
				Subject:     "Café ☕",
				From:        mimeparse.Address{Name: "Zoë", Email: "zoe@example.com"},
				ContentType: "text/plain",
				TextBody:    "ok",
			},
		},
		{
			name: "an unquoted display name with a comma, a folded Message-ID and an mbox From line are repaired",
			raw: crlf(
				"From someone@example.com  Mon May  7 07:45:48 2012",
				"From: Doe, John <john@example.org>",
				"Message-ID:",
				" <folded@example.org>",
				"Subject: x",
				"",
				"y"),
			want: mimeparse.Summary{
				MessageID:   "folded@example.org",
				Subject:     "x",
				From:        mimeparse.Address{Name: "Doe, John", Email: "john@example.org"},
				ContentType: "text/plain",
				TextBody:    "y",
			},
		},
		{
			name: "a byte order mark before the header is skipped",
			raw:  "\xef\xbb\xbfFrom: a@b.c\r\nMessage-ID: <bom@x>\r\n\r\nb",
			want: mimeparse.Summary{
				MessageID:   "bom@x",
				From:        mimeparse.Address{Email: "a@b.c"},
				ContentType: "text/plain",
				TextBody:    "b",
			},
		},
		{
			name: "garbage lines inside the header are dropped and a glued Date is read",
			raw: crlf(
				"---- Original email message ----",
				"From: a@example.com",
				"this line is no header",
				"Date: Fri, 07 Apr 2023 17:30:44 +0200Received: from somewhere",
				"Subject: test",
				"Message-ID: <g@x>",
				"",
				"b"),
			want: mimeparse.Summary{
				MessageID:   "g@x",
				Subject:     "test",
				From:        mimeparse.Address{Email: "a@example.com"},
				Date:        time.Date(2023, 4, 7, 17, 30, 44, 0, time.FixedZone("", 2*3600)),
				ContentType: "text/plain",
				TextBody:    "b",
			},
			wantWarn: "dropped 2 malformed line(s)",
		},
		{
			name: "without From the sender comes from Reply-To",
			raw:  crlf("Reply-To: <answer@example.com>", "Subject: no from", "Message-ID: <n@x>", "", "b"),
			want: mimeparse.Summary{
				MessageID:   "n@x",
				Subject:     "no from",
				From:        mimeparse.Address{Email: "answer@example.com"},
				ReplyTo:     []mimeparse.Address{{Email: "answer@example.com"}},
				ContentType: "text/plain",
				TextBody:    "b",
			},
			wantWarn: "sender taken from Reply-To",
		},
		{
			name: "a Message-ID without angle brackets is taken as written",
			raw:  crlf("From: a@b.c", "Message-Id: 20200123143934.05D7EE792E@example.com", "", "b"),
			want: mimeparse.Summary{
				MessageID:   "20200123143934.05D7EE792E@example.com",
				From:        mimeparse.Address{Email: "a@b.c"},
				ContentType: "text/plain",
				TextBody:    "b",
			},
		},
		{
			name: "LF line ends work as CRLF",
			raw:  "From: a@b.c\nSubject: lf\nMessage-ID: <lf@x>\n\nline 1\nline 2\n",
			want: mimeparse.Summary{
				MessageID:   "lf@x",
				Subject:     "lf",
				From:        mimeparse.Address{Email: "a@b.c"},
				ContentType: "text/plain",
				TextBody:    "line 1\nline 2\n",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustParse(t, tc.raw)
			if diff := cmp.Diff(tc.want, got, ignoreRaw); diff != "" {
				t.Errorf("Parse() (-want +got):\n%s", diff)
			}
			if tc.wantWarn != "" && !hasWarning(got, tc.wantWarn) {
				t.Errorf("Parse() warnings = %q, want one containing %q", got.Warnings, tc.wantWarn)
			}
		})
	}
}

func TestParse_Bodies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		raw       string
		wantText  string
		wantHTML  string
		wantAtts  []mimeparse.Attachment
		wantWarn  string
		wantType  string
		wantNoHTM bool
	}{
		{
			name: "quoted-printable ISO-8859-1 text is decoded",
			raw: crlf("From: a@b.c", "Content-Type: text/plain; charset=ISO-8859-1",
				"Content-Transfer-Encoding: quoted-printable", "", "Gr=FC=DFe, gro=DFe =", "Welt"),
			wantText: "Grüße, große Welt", // "=" at the line end is a soft break
			wantType: "text/plain",
		},
		{
			name: "windows-1252 curly quotes and the euro sign are decoded",
			raw: "From: a@b.c\r\nContent-Type: text/plain; charset=windows-1252\r\n" +
				"Content-Transfer-Encoding: 8bit\r\n\r\n\x93quoted\x94 \x80 5",
			wantText: "“quoted” € 5",
			wantType: "text/plain",
		},
		{
			name: "ISO-8859-2 text is decoded",
			raw: "From: a@b.c\r\nContent-Type: text/plain; charset=iso-8859-2\r\n\r\n" +
				"P\xf8\xedli\xb9 \xbelu\xbbou\xe8k\xfd k\xf9\xf2",
			wantText: "Příliš žluťoučký kůň",
			wantType: "text/plain",
		},
		{
			name: "an unknown charset is a warning, and the text is guessed",
			raw: crlf("From: a@b.c", "Content-Type: text/plain; charset=x-klingon",
				"", "plain ascii"),
			wantText: "plain ascii",
			wantWarn: `unknown charset "x-klingon"`,
			wantType: "text/plain",
		},
		{
			name: "base64 GB2312 HTML gives HTML and text from it",
			raw: crlf("From: a@b.c", "Content-Type: text/html; charset=gb2312",
				"Content-Transfer-Encoding: base64", "",
				"PGh0bWw+PGJvZHk+PHA+xOO6wzwvcD48cD5zZWNvbmQ8YnI+bGluZTwvcD48L2JvZHk+PC9odG1sPg=="),
			wantText: "你好\n\nsecond\nline",
			wantHTML: "<html><body><p>你好</p><p>second<br>line</p></body></html>",
			wantType: "text/html",
		},
		{
			name: "multipart/alternative keeps the text and the HTML",
			raw: crlf("From: a@b.c", "MIME-Version: 1.0", `Content-Type: multipart/alternative; boundary="b1"`, "",
				"preamble", "--b1", "Content-Type: text/plain", "", "plain version", "--b1",
				"Content-Type: text/html", "", "<p>html version</p>", "--b1--", "epilogue"),
			wantText: "plain version",
			wantHTML: "<p>html version</p>",
			wantType: "multipart/alternative",
		},
		{
			name: "an inline image referenced by cid and an attachment with an RFC 2231 name",
			raw: crlf("From: a@b.c", "MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="outer"`, "",
				"--outer",
				`Content-Type: multipart/related; boundary="inner"`, "",
				"--inner", "Content-Type: text/html; charset=utf-8", "", `<p>see <img src="cid:logo@x"></p>`,
				"--inner", "Content-Type: image/png", "Content-ID: <logo@x>", "Content-Transfer-Encoding: base64", "",
				"iVBORw0KGgo=",
				"--inner--",
				"--outer",
				"Content-Type: application/pdf",
				"Content-Disposition: attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf",
				"Content-Transfer-Encoding: base64", "",
				"JVBERi0xLjQK",
				"--outer",
				"Content-Type: text/plain; name=\"=?utf-8?Q?notiz_=C3=BC.txt?=\"",
				"Content-Disposition: attachment", "",
				"a text file",
				"--outer--"),
			wantText: "see",
			wantHTML: `<p>see <img src="cid:logo@x"></p>`,
			wantAtts: []mimeparse.Attachment{
				{PartPath: "1.2", ContentType: "image/png", ContentID: "logo@x", Size: 8, Inline: true},
				{PartPath: "2", Filename: "Résumé.pdf", ContentType: "application/pdf", Size: 9},
				{PartPath: "3", Filename: "notiz ü.txt", ContentType: "text/plain", Size: 11},
			},
			wantType: "multipart/mixed",
		},
		{
			name: "RFC 2231 continuations in a charset net/mime does not decode give the file name",
			raw: crlf("From: a@b.c", `Content-Type: multipart/mixed; boundary="c"`, "",
				"--c", "Content-Type: application/octet-stream;",
				" name*0*=iso-8859-1''Gr%FC;",
				" name*1*=%DFe;",
				" name*2=.txt",
				"", "x", "--c",
				"Content-Type: application/octet-stream; name*=iso-2022-jp'ja'%1B%24B%24F%249%24H%1B%28B.txt",
				"", "y", "--c--"),
			wantAtts: []mimeparse.Attachment{
				{PartPath: "1", Filename: "Grüße.txt", ContentType: "application/octet-stream", Size: 1},
				{PartPath: "2", Filename: "てすと.txt", ContentType: "application/octet-stream", Size: 1},
			},
			wantType: "multipart/mixed",
		},
		{
			name: "a text part and an HTML signature in multipart/mixed are merged",
			raw: crlf("From: a@b.c", `Content-Type: multipart/mixed; boundary=b`, "",
				"--b", "Content-Type: text/plain", "", "Hello <you>", "--b", "Content-Type: text/html", "",
				"<b>Sig</b>", "--b--"),
			wantText: "Hello <you>\nSig",
			wantHTML: "<div>Hello &lt;you&gt;</div><b>Sig</b>",
			wantType: "multipart/mixed",
		},
		{
			name: "a forwarded message is one .eml attachment and its attachments are listed below it",
			raw: crlf("From: a@b.c", `Content-Type: multipart/mixed; boundary="m"`, "",
				"--m", "Content-Type: text/plain", "", "see below", "--m",
				"Content-Type: message/rfc822", "",
				"From: orig@example.com", "Subject: Original", "Message-ID: <orig@x>",
				`Content-Type: multipart/mixed; boundary="f"`, "",
				"--f", "Content-Type: text/plain", "", "original text", "--f",
				"Content-Type: application/zip", `Content-Disposition: attachment; filename="a.zip"`,
				"Content-Transfer-Encoding: base64", "", "UEsDBA==", "--f--",
				"--m--"),
			wantText: "see below",
			wantAtts: []mimeparse.Attachment{
				{PartPath: "2", Filename: "Original.eml", ContentType: "message/rfc822", Size: 299}, // the encapsulated mail's bytes
				{PartPath: "2.2", Filename: "a.zip", ContentType: "application/zip", Size: 4},
			},
			wantType:  "multipart/mixed",
			wantNoHTM: true,
		},
		{
			name: "a multipart without its closing boundary keeps what it has",
			raw: crlf("From: a@b.c", `Content-Type: multipart/mixed; boundary="t"`, "",
				"--t", "Content-Type: text/plain", "", "cut off here"),
			wantText: "cut off here",
			wantWarn: "ends without its closing boundary",
			wantType: "multipart/mixed",
		},
		{
			name: "a multipart without any part shows its text",
			raw: crlf("From: a@b.c", `Content-Type: multipart/mixed; boundary="never"`, "",
				"just text"),
			wantText: "just text",
			wantWarn: "has no parts",
			wantType: "multipart/mixed",
		},
		{
			name: "a part without a header starts its body right after the boundary",
			raw: crlf("From: a@b.c", `Content-Type: multipart/mixed; boundary="h"`, "",
				"--h", "no header here", "--h--"),
			wantText: "no header here",
			wantWarn: "header is missing",
			wantType: "multipart/mixed",
		},
		{
			name: "format=flowed text is joined at its soft line breaks",
			raw: crlf("From: a@b.c", "Content-Type: text/plain; charset=utf-8; format=flowed", "",
				"This is one ", "long line.", "> quoted ", "> too", " From stuffed", "-- ", "sig", ""),
			wantText: "This is one long line.\n> quoted too\nFrom stuffed\n-- \nsig\n",
			wantType: "text/plain",
		},
		{
			name: "format=flowed text that ends in a soft break keeps its last paragraph",
			raw: crlf("From: a@b.c", "Content-Type: text/plain; format=flowed; delsp=yes", "",
				"split", "ted ", "word ", ""),
			wantText: "split\ntedword\n",
			wantType: "text/plain",
		},
		{
			name: "an HTML part without charset parameter uses its meta charset",
			raw: "From: a@b.c\r\nContent-Type: text/html\r\n\r\n" +
				`<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>` +
				"<body>caf\xe9 \x80</body></html>",
			wantText: "café €",
			wantHTML: `<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>` +
				"<body>café €</body></html>",
			wantType: "text/html",
		},
		{
			name: "misspelled transfer encodings are read as meant",
			raw: crlf("From: a@b.c", "Content-Type: text/plain; charset=utf-8",
				"Content-Transfer-Encoding: quoted printable;", "", "caf=C3=A9"),
			wantText: "café",
			wantType: "text/plain",
		},
		{
			name: "a Content-Type without a slash is read as text/plain",
			raw: crlf("From: a@b.c", "Content-Type: cannot open (No such file or directory)",
				"", "still text"),
			wantText: "still text",
			wantWarn: "unreadable Content-Type",
			wantType: "text/plain",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustParse(t, tc.raw)
			if got.TextBody != tc.wantText {
				t.Errorf("TextBody = %q, want %q", got.TextBody, tc.wantText)
			}
			if got.HTMLBody != tc.wantHTML {
				t.Errorf("HTMLBody = %q, want %q", got.HTMLBody, tc.wantHTML)
			}
			if diff := cmp.Diff(tc.wantAtts, got.Attachments); diff != "" {
				t.Errorf("Attachments (-want +got):\n%s", diff)
			}
			if got.ContentType != tc.wantType {
				t.Errorf("ContentType = %q, want %q", got.ContentType, tc.wantType)
			}
			if tc.wantWarn != "" && !hasWarning(got, tc.wantWarn) {
				t.Errorf("Warnings = %q, want one containing %q", got.Warnings, tc.wantWarn)
			}
		})
	}
}

func TestParse_Charsets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		charset string
		body    string // raw bytes in that charset
		want    string
	}{
		{charset: "windows-1250", body: "\x8a\x9a\x8e\x9e \xe8\xf8", want: "ŠšŽž čř"},
		{charset: "windows-1251", body: "\xcf\xf0\xe8\xe2\xe5\xf2", want: "Привет"},
		{charset: "windows-1258", body: "Vi\xcct", want: "Vi\u0300t"},
		{charset: "iso-8859-15", body: "\xa4 5", want: "€ 5"},
		{charset: "koi8-r", body: "\xf0\xd2\xc9\xd7\xc5\xd4", want: "Привет"},
		{charset: "big5", body: "\xa4\xa4\xa4\xe5", want: "中文"},
		{charset: "euc-kr", body: "\xc7\xd1\xb1\xb9", want: "한국"},
		{charset: "ks_c_5601-1987", body: "\xc7\xd1\xb1\xb9", want: "한국"},
		{charset: "shift_jis", body: "\x83\x65\x83\x58\x83\x67", want: "テスト"},
		{charset: "iso-2022-jp", body: "\x1b$B%F%9%H\x1b(B", want: "テスト"},
		{charset: "gb2312", body: "\xd6\xd0\xce\xc4", want: "中文"},
		{charset: "\"UTF-8\"", body: "caf\xc3\xa9", want: "café"},
		{charset: "", body: "caf\xc3\xa9", want: "café"},
		{charset: "", body: "caf\xe9", want: "café"},
	}
	for _, tc := range tests {
		t.Run(tc.charset+" text is decoded", func(t *testing.T) {
			t.Parallel()
			ct := "text/plain"
			if tc.charset != "" {
				ct += "; charset=" + tc.charset
			}
			got := mustParse(t, "From: a@b.c\r\nContent-Type: "+ct+"\r\n\r\n"+tc.body)
			if got.TextBody != tc.want {
				t.Errorf("TextBody = %q, want %q", got.TextBody, tc.want)
			}
		})
	}
}

func TestParse_Structures(t *testing.T) {
	t.Parallel()
	t.Run("parts of a multipart/digest default to message/rfc822", func(t *testing.T) {
		t.Parallel()
		got := mustParse(t, crlf("From: a@b.c", `Content-Type: multipart/digest; boundary="d"`, "",
			"--d", "", "From: x@y.z", "Subject: first", "", "one", "--d", "", "From: x@y.z", "Subject: second", "",
			"two", "--d--"))
		want := []mimeparse.Attachment{
			{PartPath: "1", Filename: "first.eml", ContentType: "message/rfc822", Size: 34},
			{PartPath: "2", Filename: "second.eml", ContentType: "message/rfc822", Size: 35},
		}
		if diff := cmp.Diff(want, got.Attachments); diff != "" {
			t.Errorf("Attachments (-want +got):\n%s", diff)
		}
	})
	t.Run("an image with Content-Disposition inline is inline, one only named is not", func(t *testing.T) {
		t.Parallel()
		got := mustParse(t, crlf("From: a@b.c", `Content-Type: multipart/mixed; boundary="i"`, "",
			"--i", "Content-Type: text/plain", "", "hi",
			"--i", "Content-Type: image/gif", `Content-Disposition: inline; filename="a.gif"`, "", "GIF89a",
			"--i", "Content-Type: image/gif; name=\"b.gif\"", "Content-ID: <b@x>", "", "GIF89a",
			"--i--"))
		want := []mimeparse.Attachment{
			{PartPath: "2", Filename: "a.gif", ContentType: "image/gif", Size: 6, Inline: true},
			{PartPath: "3", Filename: "b.gif", ContentType: "image/gif", ContentID: "b@x", Size: 6},
		}
		if diff := cmp.Diff(want, got.Attachments); diff != "" {
			t.Errorf("Attachments (-want +got):\n%s", diff)
		}
	})
	t.Run("a single-part attachment mail has its body at part 1", func(t *testing.T) {
		t.Parallel()
		got := mustParse(t, crlf("From: a@b.c", "Content-Type: application/pdf; name=x.pdf",
			"Content-Transfer-Encoding: base64", "", "JVBERi0xLjQK"))
		want := []mimeparse.Attachment{{PartPath: "1", Filename: "x.pdf", ContentType: "application/pdf", Size: 9}}
		if diff := cmp.Diff(want, got.Attachments); diff != "" {
			t.Errorf("Attachments (-want +got):\n%s", diff)
		}
		if got.TextBody != "" || got.HTMLBody != "" {
			t.Errorf("TextBody, HTMLBody = %q, %q, want empty", got.TextBody, got.HTMLBody)
		}
	})
}

func TestParse_Bounces(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		raw  string
	}{
		{
			name: "a DSN with the returned message as message/rfc822 names it",
			raw: crlf("From: MAILER-DAEMON@example.com", "Return-Path: <>", "Message-ID: <dsn@x>",
				`Content-Type: multipart/report; report-type=delivery-status; boundary="r"`, "",
				"--r", "Content-Type: text/plain", "", "could not deliver", "--r",
				"Content-Type: message/delivery-status", "", "Reporting-MTA: dns; mx.example.com", "",
				"Final-Recipient: rfc822; gone@example.com", "Action: failed", "--r",
				"Content-Type: message/rfc822", "", "From: helpdesk@example.com", "Message-ID: <ours-42@helpdesk>",
				"Subject: [Ticket#1001] hello", "", "body", "--r--"),
		},
		{
			name: "a DSN with only the returned header as text/rfc822-headers names it",
			raw: crlf("From: MAILER-DAEMON@example.com", "Message-ID: <dsn@x>",
				`Content-Type: multipart/report; report-type="delivery-status"; boundary="r"`, "",
				"--r", "Content-Type: text/plain", "", "could not deliver", "--r",
				"Content-Type: text/rfc822-headers", "", "From: helpdesk@example.com",
				"Message-Id: <ours-42@helpdesk>", "Subject: [Ticket#1001] hello", "", "--r--"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustParse(t, tc.raw)
			want := []string{"multipart/report", "delivery-status", "ours-42@helpdesk", "could not deliver"}
			gotF := []string{got.ContentType, got.ReportType, got.BouncedMessageID, got.TextBody}
			if diff := cmp.Diff(want, gotF); diff != "" {
				t.Errorf("Parse() ContentType, ReportType, BouncedMessageID, TextBody (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParse_GeneratedMessageID(t *testing.T) {
	t.Parallel()
	raw := crlf("From: a@b.c", "Subject: no id", "", "body")
	sum := sha256.Sum256([]byte(raw))
	want := "gen-" + hex.EncodeToString(sum[:]) + "@ledgerdesk.invalid"

	first := mustParse(t, raw)
	again := mustParse(t, raw)
	other := mustParse(t, raw+"!")
	empty := mustParse(t, crlf("From: a@b.c", "Message-ID:", "", "body"))

	if first.MessageID != want {
		t.Errorf("MessageID = %q, want %q", first.MessageID, want)
	}
	if again.MessageID != first.MessageID {
		t.Errorf("MessageID of the same bytes = %q, then %q; want equal", first.MessageID, again.MessageID)
	}
	if other.MessageID == first.MessageID {
		t.Errorf("MessageID of different bytes = %q for both, want different", other.MessageID)
	}
	if !strings.HasPrefix(empty.MessageID, "gen-") {
		t.Errorf("MessageID for an empty header = %q, want a generated one", empty.MessageID)
	}
	if first.SHA256 != sum || first.Size != int64(len(raw)) {
		t.Errorf("SHA256, Size = %x, %d, want %x, %d", first.SHA256, first.Size, sum, len(raw))
	}
}

func TestParse_Failures(t *testing.T) {
	t.Parallel()
	deep := func(n int) string {
		var b strings.Builder
		b.WriteString("From: a@b.c\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
		for i := 1; i <= n; i++ {
			b.WriteString("--b" + itoa(i-1) + "\r\nContent-Type: multipart/mixed; boundary=\"b" + itoa(i) + "\"\r\n\r\n")
		}
		b.WriteString("--b" + itoa(n) + "\r\n\r\nleaf\r\n")
		return b.String()
	}
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("From: a@b.c\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n")
		for range n {
			b.WriteString("--p\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n")
		}
		b.WriteString("--p--\r\n")
		return b.String()
	}
	small := mimeparse.Limits{MaxDepth: 5, MaxParts: 20, MaxHeaderBytes: 4096, MaxPartHeaderBytes: 512,
		MaxDecodedBytes: 1000, MaxBodyBytes: 100}
	tests := []struct {
		name      string
		raw       string
		lim       mimeparse.Limits
		wantLimit bool
		wantIn    string
	}{
		{name: "empty input is not a mail", raw: "", wantIn: "no header"},
		{name: "a body without header is not a mail", raw: "\r\nhello\r\n", wantIn: "no header"},
		{name: "binary data is not a mail", raw: "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", wantIn: "not a mail"},
		{name: "a header without any mail field is not a mail", raw: "Foo: bar\r\n\r\nx", wantIn: "not a mail"},
		{name: "nesting deeper than MaxDepth fails", raw: deep(10), lim: small, wantLimit: true, wantIn: "nested deeper"},
		{name: "more parts than MaxParts fails", raw: many(30), lim: small, wantLimit: true, wantIn: "MIME parts"},
		{name: "a top-level header over MaxHeaderBytes fails", raw: "From: a@b.c\r\nX-Big: " + strings.Repeat("a", 5000) + "\r\n\r\n",
			lim: small, wantLimit: true, wantIn: "header exceeds 4096 bytes"},
		{name: "a part header over MaxPartHeaderBytes fails",
			raw: crlf("From: a@b.c", "Content-Type: multipart/mixed; boundary=b", "", "--b",
				"X-Big: "+strings.Repeat("a", 1000), "", "x", "--b--"),
			lim: small, wantLimit: true, wantIn: "part 1 header exceeds 512 bytes"},
		{name: "decoded parts over MaxDecodedBytes fail",
			raw: crlf("From: a@b.c", "Content-Type: application/octet-stream", "", strings.Repeat("x", 2000)),
			lim: small, wantLimit: true, wantIn: "decoded parts exceed 1000 bytes"},
		{name: "the default limits stop 2,000 nested multiparts", raw: deep(2000), wantLimit: true, wantIn: "nested deeper than 50"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := mimeparse.ParseBytes([]byte(tc.raw), tc.lim)
			var pe *mimeparse.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse() error = %v, want a *ParseError", err)
			}
			if pe.Limit != tc.wantLimit || !strings.Contains(pe.Reason, tc.wantIn) {
				t.Errorf("Parse() error = %+v, want Limit %v and a reason containing %q", pe, tc.wantLimit, tc.wantIn)
			}
		})
	}
}

func TestParse_BodyLimitTruncates(t *testing.T) {
	t.Parallel()
	raw := crlf("From: a@b.c", "Content-Type: text/plain; charset=utf-8", "", strings.Repeat("ä", 100))
	s, err := mimeparse.ParseBytes([]byte(raw), mimeparse.Limits{MaxBodyBytes: 51})
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	if want := strings.Repeat("ä", 25); s.TextBody != want {
		t.Errorf("TextBody = %q, want %q (cut at a character boundary)", s.TextBody, want)
	}
	if !hasWarning(s, "truncated") {
		t.Errorf("Warnings = %q, want a truncation warning", s.Warnings)
	}
}

func TestParse_ReadErrorIsNotAParseError(t *testing.T) {
	t.Parallel()
	boom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("From: a@b.c\r\nSubject: x\r\n\r\nbody"), failingReader{boom})
	_, err := mimeparse.Parse(r, mimeparse.DefaultLimits())
	if !errors.Is(err, boom) {
		t.Fatalf("Parse() error = %v, want it to wrap %v", err, boom)
	}
	var pe *mimeparse.ParseError
	if errors.As(err, &pe) {
		t.Fatalf("Parse() error = %v is a *ParseError; a read error is not the mail's fault", err)
	}
}

func TestParse_ReadsToEOF(t *testing.T) {
	t.Parallel()
	raw := crlf("From: a@b.c", `Content-Type: multipart/mixed; boundary="e"`, "", "--e", "", "x", "--e--",
		"epilogue that nobody parses")
	r := bytes.NewReader([]byte(raw))
	s, err := mimeparse.Parse(r, mimeparse.DefaultLimits())
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	if r.Len() != 0 || s.Size != int64(len(raw)) {
		t.Errorf("Parse() left %d bytes unread, Size = %d; want 0 and %d", r.Len(), s.Size, len(raw))
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

func itoa(i int) string { return strconv.Itoa(i) }
