package mimeparse_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
)

// pngBytes is a stand-in image: binary bytes, including CR, LF and NUL.
var pngBytes = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\x00\x01fake image \xff\xfe")

// extractMail has a body, an inline image, a PDF, and a forwarded mail with
// its own attachment (parts 1, 2.1 ... as Parse numbers them).
func extractMail() string {
	b64 := base64.StdEncoding.EncodeToString(pngBytes)
	return crlf(
		"From: Max <max@example.org>",
		"To: support@example.org",
		"Subject: extract",
		"Message-ID: <x1@example.org>",
		"MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="outer"`,
		"",
		"--outer",
		`Content-Type: multipart/related; boundary="rel"`,
		"",
		"--rel",
		"Content-Type: text/html; charset=utf-8",
		"",
		`<p>logo <img src="cid:logo@x"></p>`,
		"--rel",
		"Content-Type: image/png",
		"Content-Transfer-Encoding: base64",
		"Content-ID: <logo@x>",
		"",
		b64,
		"--rel--",
		"--outer",
		`Content-Type: application/pdf; name="Rechnung =?utf-8?q?M=C3=A4rz?=.pdf"`,
		"Content-Transfer-Encoding: quoted-printable",
		`Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf`,
		"",
		"%PDF-1.4 caf=C3=A9=",
		" soft break",
		"--outer",
		"Content-Type: message/rfc822",
		"",
		"From: Eva <eva@example.org>",
		"Subject: the original",
		"Content-Type: multipart/mixed; boundary=\"inner\"",
		"",
		"--inner",
		"Content-Type: text/plain",
		"",
		"see attached",
		"--inner",
		"Content-Type: text/csv; charset=utf-8; name=data.csv",
		"",
		"a,b",
		"1,2",
		"--inner--",
		"--outer--",
		"")
}

func TestExtractPart(t *testing.T) {
	t.Parallel()
	raw := extractMail()
	forwarded := "From: Eva <eva@example.org>\r\nSubject: the original\r\nContent-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n" +
		"--inner\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--inner\r\nContent-Type: text/csv; charset=utf-8; name=data.csv\r\n\r\n" +
		"a,b\r\n1,2\r\n--inner--"
	tests := []struct {
		name     string
		path     string
		wantInfo mimeparse.PartInfo
		want     string
	}{
		{name: "the html body part is part 1.1, decoded", path: "1.1",
			wantInfo: mimeparse.PartInfo{PartPath: "1.1", ContentType: "text/html", Charset: "utf-8"},
			want:     `<p>logo <img src="cid:logo@x"></p>`},
		{name: "a base64 inline image comes out as its binary bytes", path: "1.2",
			wantInfo: mimeparse.PartInfo{PartPath: "1.2", ContentType: "image/png", ContentID: "logo@x"},
			want:     string(pngBytes)},
		{name: "a quoted-printable attachment is decoded and named as Parse names it", path: "2",
			wantInfo: mimeparse.PartInfo{PartPath: "2", ContentType: "application/pdf", Filename: "Rechnung März.pdf"},
			want:     "%PDF-1.4 café soft break"},
		{name: "a forwarded message yields its bytes as a .eml", path: "3",
			wantInfo: mimeparse.PartInfo{PartPath: "3", ContentType: "message/rfc822", Filename: "the original.eml"},
			want:     forwarded},
		{name: "an attachment inside the forwarded message has a path below it", path: "3.2",
			wantInfo: mimeparse.PartInfo{PartPath: "3.2", ContentType: "text/csv", Charset: "utf-8", Filename: "data.csv"},
			want:     "a,b\r\n1,2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			info, err := mimeparse.ExtractPart(strings.NewReader(raw), tc.path, &buf, mimeparse.DefaultLimits())
			if err != nil {
				t.Fatalf("ExtractPart(%q) error = %v", tc.path, err)
			}
			tc.wantInfo.Size = int64(len(tc.want))
			if d := cmp.Diff(tc.wantInfo, info); d != "" {
				t.Errorf("ExtractPart(%q) info (-want +got):\n%s", tc.path, d)
			}
			if d := cmp.Diff(tc.want, buf.String()); d != "" {
				t.Errorf("ExtractPart(%q) bytes (-want +got):\n%s", tc.path, d)
			}
		})
	}
}

func TestExtractPart_AgreesWithParse(t *testing.T) {
	t.Parallel()
	// given every attachment Parse lists, when each is extracted by its
	// path, then the same part is found: same type, name, id and size
	raw := extractMail()
	s := mustParse(t, raw)
	if len(s.Attachments) != 4 {
		t.Fatalf("Parse() listed %d attachments, want 4: %+v", len(s.Attachments), s.Attachments)
	}
	for _, a := range s.Attachments {
		info, err := mimeparse.ExtractPart(strings.NewReader(raw), a.PartPath, io.Discard, mimeparse.DefaultLimits())
		if err != nil {
			t.Fatalf("ExtractPart(%q) error = %v", a.PartPath, err)
		}
		got := mimeparse.Attachment{PartPath: info.PartPath, Filename: info.Filename, ContentType: info.ContentType,
			ContentID: info.ContentID, Size: info.Size, Inline: a.Inline}
		if d := cmp.Diff(a, got); d != "" {
			t.Errorf("ExtractPart(%q) disagrees with Parse (-parse +extract):\n%s", a.PartPath, d)
		}
	}
}

func TestExtractPart_CorpusAgreesWithParse(t *testing.T) {
	t.Parallel()
	dir, ok := corpusDirIfPresent(t)
	if !ok {
		t.Skip("corpus folder is absent")
	}
	checked := 0
	for _, f := range corpusMails(t, dir) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := mimeparse.ParseBytes(raw, mimeparse.DefaultLimits())
		if err != nil {
			continue
		}
		rel, _ := filepath.Rel(dir, f)
		for _, a := range s.Attachments {
			info, err := mimeparse.ExtractPart(bytes.NewReader(raw), a.PartPath, io.Discard, mimeparse.DefaultLimits())
			if err != nil {
				t.Errorf("%s: ExtractPart(%q) error = %v", rel, a.PartPath, err)
				continue
			}
			if info.Size != a.Size || info.ContentType != a.ContentType || info.Filename != a.Filename {
				t.Errorf("%s: ExtractPart(%q) = %+v, Parse listed %+v", rel, a.PartPath, info, a)
			}
			checked++
		}
	}
	t.Logf("%d corpus attachments extracted with the size Parse gave", checked)
}

func TestFindContentID(t *testing.T) {
	t.Parallel()
	raw := extractMail()
	for _, cid := range []string{"logo@x", "<logo@x>", "LOGO%40x"} {
		var buf bytes.Buffer
		info, err := mimeparse.FindContentID(strings.NewReader(raw), cid, &buf, mimeparse.DefaultLimits())
		if err != nil {
			t.Fatalf("FindContentID(%q) error = %v", cid, err)
		}
		if info.PartPath != "1.2" || info.ContentType != "image/png" || !bytes.Equal(buf.Bytes(), pngBytes) {
			t.Errorf("FindContentID(%q) = %+v with %d bytes, want part 1.2 with the image", cid, info, buf.Len())
		}
	}
}

func TestExtractPart_Errors(t *testing.T) {
	t.Parallel()
	raw := extractMail()
	for _, path := range []string{"", "9", "1.3", "3.9", "2.1"} {
		if _, err := mimeparse.ExtractPart(strings.NewReader(raw), path, io.Discard, mimeparse.DefaultLimits()); !errors.Is(err, mimeparse.ErrPartNotFound) {
			t.Errorf("ExtractPart(%q) error = %v, want ErrPartNotFound", path, err)
		}
	}
	if _, err := mimeparse.FindContentID(strings.NewReader(raw), "nope@x", io.Discard, mimeparse.DefaultLimits()); !errors.Is(err, mimeparse.ErrPartNotFound) {
		t.Errorf("FindContentID(nope) error = %v, want ErrPartNotFound", err)
	}
	// a write error of the destination stops the walk and is returned
	werr := errors.New("client went away")
	if _, err := mimeparse.ExtractPart(strings.NewReader(raw), "1.2", failingWriter{werr}, mimeparse.DefaultLimits()); !errors.Is(err, werr) {
		t.Errorf("ExtractPart to a failing writer error = %v, want %v", err, werr)
	}
	if _, err := mimeparse.ExtractPart(strings.NewReader(raw), "3", failingWriter{werr}, mimeparse.DefaultLimits()); !errors.Is(err, werr) {
		t.Errorf("ExtractPart of a message to a failing writer error = %v, want %v", err, werr)
	}
	// a read error of the source is not the mail's fault
	rerr := errors.New("disk gone")
	if _, err := mimeparse.ExtractPart(io.MultiReader(strings.NewReader(raw[:200]), failingReader{rerr}), "2", io.Discard, mimeparse.DefaultLimits()); !errors.Is(err, rerr) {
		t.Errorf("ExtractPart from a failing reader error = %v, want %v", err, rerr)
	}
	// limits hold as in Parse
	var pe *mimeparse.ParseError
	if _, err := mimeparse.ExtractPart(strings.NewReader(raw), "3.2", io.Discard, mimeparse.Limits{MaxParts: 3}); !errors.As(err, &pe) || !pe.Limit {
		t.Errorf("ExtractPart over MaxParts error = %v, want a limit *ParseError", err)
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

func BenchmarkExtractPart50MB(b *testing.B) {
	// The attachment of bigMail, streamed out: memory stays that of Parse.
	for b.Loop() {
		r, _, att := bigMail(50 << 20)
		info, err := mimeparse.ExtractPart(r, "2", io.Discard, mimeparse.DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		if info.Size != att {
			b.Fatalf("extracted %d bytes, want %d", info.Size, att)
		}
	}
}
