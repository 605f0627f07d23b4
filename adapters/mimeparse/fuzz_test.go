package mimeparse_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
)

// fuzzLimits are small so that the fuzzer reaches them often.
var fuzzLimits = mimeparse.Limits{
	MaxDepth:           8,
	MaxParts:           64,
	MaxHeaderBytes:     16 << 10,
	MaxPartHeaderBytes: 4 << 10,
	MaxDecodedBytes:    1 << 20,
	MaxBodyBytes:       8 << 10,
}

// fuzzSeeds are synthetic mails for the structures the corpus lacks.
var fuzzSeeds = []string{
	"",
	"From: a@b.c\r\n\r\n",
	"From: a@b.c\nSubject: =?utf-8?B?w6Q=?= =?iso-8859-1?q?=E4?=\n\nx",
	"From: \"x\" <\r\nTo: ,,,<>\r\nMessage-ID: <\r\n\r\n",
	"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n--x\r\nContent-Type: multipart/alternative; boundary=y\r\n\r\n--y\r\n--x--\r\n",
	"From: a@b.c\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@c.d\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.e\r\n\r\n",
	"From: a@b.c\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n--r\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <q@r>\r\n--r--",
	"From: a@b.c\r\nContent-Type: text/html; charset=iso-2022-jp\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+PC9i\r\n",
	"From: a@b.c\r\nContent-Type: application/x; name*0*=utf-8''a%C3; name*1*=%A4.txt\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n#86)C\r\n`\r\nend\r\n",
	"From: a@b.c\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nFrom: inner@x\r\n\r\nhi\r\n--d--\r\n",
}

// FuzzParse feeds arbitrary bytes to Parse: it must not panic, must fail
// only with a *ParseError (the input reader never fails), must respect the
// limits, must return valid UTF-8 within the documented bounds (see
// assertBounded) and must be deterministic.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, c := range charsetCases {
		f.Add([]byte(c.raw))
	}
	if dir, ok := corpusDirIfPresent(f); ok {
		for _, p := range corpusMails(f, dir) {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := mimeparse.ParseBytes(data, fuzzLimits)
		if err != nil {
			var pe *mimeparse.ParseError
			if !errors.As(err, &pe) || pe.Reason == "" {
				t.Fatalf("Parse() error = %v, want a *ParseError with a reason", err)
			}
			return
		}
		if len(s.TextBody) > fuzzLimits.MaxBodyBytes || len(s.HTMLBody) > fuzzLimits.MaxBodyBytes {
			t.Fatalf("bodies of %d and %d bytes exceed MaxBodyBytes %d", len(s.TextBody), len(s.HTMLBody), fuzzLimits.MaxBodyBytes)
		}
		if len(s.Attachments) > fuzzLimits.MaxParts {
			t.Fatalf("%d attachments exceed MaxParts %d", len(s.Attachments), fuzzLimits.MaxParts)
		}
		if s.Size != int64(len(data)) {
			t.Fatalf("Size = %d, want %d", s.Size, len(data))
		}
		if s.MessageID == "" {
			t.Fatal("MessageID is empty")
		}
		for name, v := range map[string]string{
			"Subject": s.Subject, "From.Name": s.From.Name, "From.Email": s.From.Email,
			"TextBody": s.TextBody, "HTMLBody": s.HTMLBody, "MessageID": s.MessageID,
		} {
			if !utf8.ValidString(v) {
				t.Fatalf("%s = %q is not valid UTF-8", name, v)
			}
		}
		for _, a := range s.Attachments {
			if !utf8.ValidString(a.Filename) || a.Size < 0 || a.PartPath == "" {
				t.Fatalf("bad attachment %+v", a)
			}
		}
		assertBounded(t, s)
		again, err := mimeparse.ParseBytes(data, fuzzLimits)
		if err != nil {
			t.Fatalf("second Parse() error = %v, first succeeded", err)
		}
		if diff := cmp.Diff(s, again); diff != "" {
			t.Fatalf("Parse() is not deterministic (-first +second):\n%s", diff)
		}
	})
}

// corpusDirIfPresent is corpusDir without the skip: fuzz seeds are optional.
func corpusDirIfPresent(tb testing.TB) (string, bool) {
	tb.Helper()
	dir := filepath.Join(repoRoot(tb), "..", "shared", "corpus")
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return "", false
	}
	return dir, true
}
