package mimeparse_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
)

// charsetCase is a generated mail of the charset set and what a mail client
// shows for it. TestParse_AgreesWithPython reads the same mails with Python.
type charsetCase struct {
	name string
	raw  string
	// want: the fields compared; attachments are file names in order.
	subject     string
	from        mimeparse.Address
	attachments []string
	to, cc      []mimeparse.Address // compared when set
	text        string              // when set, the text body
	warning     string              // when set, a warning must contain it
}

// genMail builds a single-part text mail from header lines.
func genMail(headers ...string) string {
	return strings.Join(headers, "\r\n") + "\r\nMessage-ID: <x@example.com>\r\n\r\nbody\r\n"
}

// mixed builds a multipart/mixed mail: a text part in textCharset, then
// one attachment part per header line given.
func mixed(header, textCharset string, attachments ...string) string {
	var b strings.Builder
	b.WriteString(header + "\r\nMessage-ID: <x@example.com>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: text/plain; charset=" + textCharset + "\r\n\r\nbody\r\n")
	for _, a := range attachments {
		b.WriteString("--b\r\nContent-Type: application/octet-stream\r\n" + a + "\r\n\r\ndata\r\n")
	}
	b.WriteString("--b--\r\n")
	return b.String()
}

var jörg = mimeparse.Address{Name: "Jörg", Email: "j@example.com"}

var charsetCases = []charsetCase{
	// 1. UTF-7 (RFC 2152) in encoded words and text parts.
	{name: "utf7-q-subject", raw: genMail("From: j@example.com", "Subject: =?utf-7?Q?Die_Hasen_und_die_Fr+APY-sche?="),
		subject: "Die Hasen und die Frösche", from: mimeparse.Address{Email: "j@example.com"}},
	{name: "utf7-b-name", raw: genMail("From: =?unicode-1-1-utf-7?B?SitBUFktcmc=?= <j@example.com>", "Subject: x"),
		subject: "x", from: jörg},
	{name: "utf7-never-in-an-address", raw: genMail("From: =?utf-7?q?attacker+AEA-evil.example+ACA-?=@desk.example",
		"To: =?utf-7?q?Boss_+AEA-_example.com?= <boss@example.com>", "Subject: x"),
		subject: "x", from: mimeparse.Address{Email: "=?utf-7?q?attacker+AEA-evil.example+ACA-?=@desk.example"},
		to: []mimeparse.Address{{Name: "Boss @ example.com", Email: "boss@example.com"}}},
	{name: "utf7-text-part", raw: "From: j@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=UTF-7\r\n\r\nDie Hasen und die Fr+APY-sche\r\n",
		subject: "x", from: mimeparse.Address{Email: "j@example.com"}, text: "Die Hasen und die Frösche\n"},

	// 2. Raw 8-bit bytes inside an encoded word: decoded once, in its charset.
	{name: "raw8-in-q-word", raw: genMail("From: j@example.com", "Subject: =?iso-8859-1?Q?Die_Hasen_und_die_Fr\xf6sche?="),
		subject: "Die Hasen und die Frösche", from: mimeparse.Address{Email: "j@example.com"}},
	{name: "raw8-in-q-word-name", raw: genMail("From: =?windows-1252?Q?J\xf6rg?= <j@example.com>", "Subject: =?koi8-r?Q?\xf0\xd2\xc9\xd7\xc5\xd4?="),
		subject: "Привет", from: jörg},

	// 3. Raw 8-bit header text: UTF-8, else the first text part's charset,
	// else windows-1252; the same for file names.
	{name: "raw8-utf8", raw: genMail("From: J\xc3\xb6rg <j@example.com>", "Subject: Fr\xc3\xb6sche"),
		subject: "Frösche", from: jörg},
	{name: "raw8-first-text-part", raw: mixed("From: J\xf3zef <j@example.com>\r\nSubject: \xb3\xf3d\xbc", "iso-8859-2"),
		subject: "łódź", from: mimeparse.Address{Name: "Józef", Email: "j@example.com"}},
	{name: "raw8-windows-1252", raw: genMail("From: J\xf6rg <j@example.com>", "Subject: Caf\xe9 \x80 5"),
		subject: "Café € 5", from: jörg, warning: "decoded as windows-1252"},
	{name: "filename-rfc2231-latin1", raw: mixed("From: j@example.com\r\nSubject: x", "utf-8",
		"Content-Disposition: attachment; filename*=iso-8859-1''Gr%FC%DFe.txt",
		"Content-Disposition: attachment;\r\n filename*0*=utf-8''Gr%C3%BC;\r\n filename*1*=%C3%9Fe.pdf"),
		subject: "x", from: mimeparse.Address{Email: "j@example.com"}, attachments: []string{"Grüße.txt", "Grüße.pdf"}},
	{name: "filename-rfc2231-raw8-and-no-charset", raw: mixed("From: j@example.com\r\nSubject: x", "iso-8859-2",
		"Content-Disposition: attachment; filename*=iso-8859-1''Gr\xfc\xdfe.txt",
		"Content-Disposition: attachment; filename*=''%B3%F3d%BC.pdf"),
		subject: "x", from: mimeparse.Address{Email: "j@example.com"}, attachments: []string{"Grüße.txt", "łódź.pdf"}},
	{name: "filename-raw8", raw: mixed("From: j@example.com\r\nSubject: x", "iso-8859-2",
		"Content-Disposition: attachment; filename=\"\xb3\xf3d\xbc.pdf\"",
		"Content-Disposition: attachment; filename=\"\xe6\x97\xa5\xe6\x9c\xac.pdf\""),
		subject: "x", from: mimeparse.Address{Email: "j@example.com"}, attachments: []string{"łódź.pdf", "日本.pdf"}},
	{name: "filename-encoded-word", raw: mixed("From: j@example.com\r\nSubject: x", "utf-8",
		"Content-Disposition: attachment; filename=\"=?utf-8?Q?Gr=C3=BC=C3=9Fe.txt?=\"",
		"Content-Disposition: attachment; filename==?iso-8859-1?Q?Gr=FC=DFe.pdf?="),
		subject: "x", from: mimeparse.Address{Email: "j@example.com"}, attachments: []string{"Grüße.txt", "Grüße.pdf"}},

	{name: "filename-raw8-before-text-part", raw: "From: j@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"\xb3\xf3d\xbc.pdf\"\r\n\r\ndata\r\n" +
		"--b\r\nContent-Type: text/plain; charset=iso-8859-2\r\n\r\nbody\r\n--b--\r\n",
		subject: "x", from: mimeparse.Address{Email: "j@example.com"}, attachments: []string{"łódź.pdf"}},

	// 4. Charset labels found in the wild.
	{name: "label-ks_c_5601-1987", raw: genMail("From: j@example.com", "Subject: =?ks_c_5601-1987?B?vsiz5w==?="),
		subject: "안녕", from: mimeparse.Address{Email: "j@example.com"}},
	{name: "label-x-gbk", raw: genMail("From: =?x-gbk?B?zfXQocP3?= <j@example.com>", "Subject: =?gb2312?Q?=D6=D0=CE=C4?="),
		subject: "中文", from: mimeparse.Address{Name: "王小明", Email: "j@example.com"}},
	{name: "label-iso-8859-8-i", raw: genMail("From: j@example.com", "Subject: =?iso-8859-8-i?Q?=F9=EC=E5=ED?="),
		subject: "שלום", from: mimeparse.Address{Email: "j@example.com"}},
	{name: "label-windows-1258", raw: genMail("From: j@example.com", "Subject: =?windows-1258?Q?=D0=E0_N=E3ng?="),
		subject: "Đà Năng", from: mimeparse.Address{Email: "j@example.com"}},
	{name: "label-x-mac", raw: genMail("From: =?x-mac-ce?Q?=FC=97d=90?= <j@example.com>", "Subject: =?x-mac-roman?Q?Z=9Frich?="),
		subject: "Zürich", from: mimeparse.Address{Name: "Łódź", Email: "j@example.com"}},
	{name: "label-iso-2022-jp-folded", raw: genMail("From: j@example.com",
		"Subject: =?iso-2022-jp?B?GyRCRnxLXDhs?=\r\n =?iso-2022-jp?B?JE4lRiUtJTklSBsoQg==?="),
		subject: "日本語のテキスト", from: mimeparse.Address{Email: "j@example.com"}},
	{name: "raw-iso-2022-jp", raw: genMail("From: \x1b$B;3ED\x1b(B <j@example.com>",
		"Subject: \x1b$BF|K\\8l$N\x1b(B\r\n \x1b$B%F%-%9%H\x1b(B und\r\n \x1b$B%F%9\r\n %H\x1b(B"),
		subject: "日本語のテキスト und テスト", from: mimeparse.Address{Name: "山田", Email: "j@example.com"}},
	{name: "label-utf8-latin1-cp", raw: genMail("From: =?utf8?Q?J=C3=B6rg?= <j@example.com>",
		"Subject: =?latin1?Q?Fr=F6sche?= =?cp1251?Q?=CF=F0=E8=E2=E5=F2?= =?cp850?Q?=81?="),
		subject: "FröscheПриветü", from: jörg},
	{name: "label-windows-code-pages", raw: genMail("From: =?win-1251?Q?=CF=F0=E8=E2=E5=F2?= <j@example.com>",
		"Subject: =?cp65001?Q?Fr=C3=B6sche?= =?cp28592?Q?=B3=F3d=BC?= =?cp858?Q?=D5?= =?cp10029?Q?=FC?="),
		subject: "Fröschełódź€Ł", from: mimeparse.Address{Name: "Привет", Email: "j@example.com"}},
	{name: "label-unknown", raw: genMail("From: j@example.com", "Subject: =?x-unknown-42?Q?Fr=F6sche?="),
		subject: "Frösche", from: mimeparse.Address{Email: "j@example.com"}, warning: `unknown charset "x-unknown-42"`},

	// 5. Display forms: unfolded white space as one space, adjacent
	// encoded words joined (RFC 2047 section 6.2).
	{name: "fold-subject", raw: genMail("From: j@example.com", "Subject: Die Hasen und\r\n   die Fr\xc3\xb6sche"),
		subject: "Die Hasen und die Frösche", from: mimeparse.Address{Email: "j@example.com"}},
	{name: "fold-display-name", raw: genMail("From: \"Doe,\r\n\t  John\" <j@example.com>", "Subject: x"),
		subject: "x", from: mimeparse.Address{Name: "Doe, John", Email: "j@example.com"}},
	{name: "address-comments-and-route", raw: genMail("From: Pete(A wonderful \\) chap) <pete(his account)@silly.test(his host)>",
		"To: A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public.example>,\r\n  John <@relay.test:jdoe@one.test> (my dear friend); (the end)",
		"Cc: (Empty list)(start)Undisclosed recipients  :(nobody(that I know))  ;, jdoe@test   . example", "Subject: x"),
		subject: "x", from: mimeparse.Address{Name: "Pete", Email: "pete@silly.test"},
		to: []mimeparse.Address{{Name: "Chris Jones", Email: "c@public.example"}, {Name: "John", Email: "jdoe@one.test"}},
		cc: []mimeparse.Address{{Email: "jdoe@test.example"}}},
	{name: "adjacent-words", raw: genMail("From: =?gbk?B?zfXQ?= =?gbk?B?ocP3?= <j@example.com>",
		"Subject: =?utf-8?B?RnLD?=\r\n\t=?utf-8?B?tnNjaGU=?= und =?utf-8?Q?die?=  =?utf-8?Q?_Hasen?="),
		subject: "Frösche und die Hasen", from: mimeparse.Address{Name: "王小明", Email: "j@example.com"}},
}

func TestParse_HeaderCharsets(t *testing.T) {
	t.Parallel()
	for _, tc := range charsetCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := mimeparse.ParseBytes([]byte(tc.raw), mimeparse.DefaultLimits())
			if err != nil {
				t.Fatalf("ParseBytes() error = %v", err)
			}
			if s.Subject != tc.subject {
				t.Errorf("Subject = %q, want %q", s.Subject, tc.subject)
			}
			if s.From != tc.from {
				t.Errorf("From = %q, want %q", s.From, tc.from)
			}
			var names []string
			for _, a := range s.Attachments {
				names = append(names, a.Filename)
			}
			if diff := cmp.Diff(tc.attachments, names); diff != "" {
				t.Errorf("attachment names (-want +got):\n%s", diff)
			}
			if tc.to != nil {
				if diff := cmp.Diff(tc.to, s.To); diff != "" {
					t.Errorf("To (-want +got):\n%s", diff)
				}
			}
			if tc.cc != nil {
				if diff := cmp.Diff(tc.cc, s.Cc); diff != "" {
					t.Errorf("Cc (-want +got):\n%s", diff)
				}
			}
			if tc.text != "" && s.TextBody != tc.text {
				t.Errorf("TextBody = %q, want %q", s.TextBody, tc.text)
			}
			if tc.warning != "" && !strings.Contains(strings.Join(s.Warnings, "\n"), tc.warning) {
				t.Errorf("Warnings = %q, want one containing %q", s.Warnings, tc.warning)
			}
		})
	}
}
