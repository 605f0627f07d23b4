package api

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/htmlsafe"
	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/projections"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// MailBodies is what the article body, attachment and .eml routes need.
type MailBodies struct {
	// Blobs holds the raw mails (the blob store the ingestion writes).
	// Nil: attachment, inline image and .eml downloads answer 503.
	Blobs ingest.Blobs
	// Sanitizer makes article HTML safe to show; nil takes
	// htmlsafe.New(htmlsafe.Options{}) (1 MiB, 2 s, GOMAXPROCS workers).
	Sanitizer *htmlsafe.Sanitizer
}

var defaultSanitizer = sync.OnceValue(func() *htmlsafe.Sanitizer { return htmlsafe.New(htmlsafe.Options{}) })

func (s *server) sanitizer() *htmlsafe.Sanitizer {
	if s.opts.Bodies.Sanitizer != nil {
		return s.opts.Bodies.Sanitizer
	}
	return defaultSanitizer()
}

// articleBody is GET /tickets/{id}/articles/{seq}/body.
type articleBody struct {
	Seq  int64  `json:"seq"`
	Kind string `json:"kind"`
	Text string `json:"text"`
	// HTML is the sanitised HTML, "" for an article without HTML.
	HTML string `json:"html"`
	// HTMLTruncated: the HTML was longer than the sanitiser's bound; the
	// HTML ends with a notice and the .eml has all of it.
	HTMLTruncated bool `json:"html_truncated"`
	// HTMLFallback: sanitising ran out of time; HTML is the text, escaped.
	HTMLFallback bool `json:"html_fallback"`
	// BodyTruncated: the mail's bodies are longer than its event keeps and
	// the raw mail could not be read, so Text and HTML are the kept prefixes.
	BodyTruncated bool `json:"body_truncated,omitempty"`
	// ImagesAsAttachments: the mail was imported with the account's
	// images_as_attachments; its inline (cid:) images are not in HTML but
	// in the attachment list.
	ImagesAsAttachments bool `json:"images_as_attachments,omitempty"`
}

// article finds one article of a ticket by its seq in the tickets view.
func (s *server) article(c echo.Context) (projections.Article, error) {
	p := s.opts.Projections.Tickets
	if p == nil {
		return projections.Article{}, unavailable("the ticket view")
	}
	seq, err := strconv.ParseInt(c.Param("seq"), 10, 64)
	if err != nil || seq < 1 {
		return projections.Article{}, invalid("seq", "%q is not an article number", c.Param("seq"))
	}
	if err := s.waitForProjection(c, p.Name()); err != nil {
		return projections.Article{}, err
	}
	// Only the one article and its one mail are read, however many mails
	// the ticket holds.
	a, err := p.Article(c.Request().Context(), c.Param("id"), seq)
	switch {
	case errors.Is(err, projections.ErrTicketNotFound):
		return projections.Article{}, newProblem(http.StatusNotFound, "there is no ticket with this id")
	case errors.Is(err, projections.ErrArticleNotFound):
		return projections.Article{}, newProblem(http.StatusNotFound, "the ticket has no article %d", seq)
	case err != nil:
		return projections.Article{}, err
	}
	return a, nil
}

// articleBody serves the article's text and its sanitised HTML. The HTML is
// bounded in size and time (htmlsafe); when the time runs out the answer
// carries the text as HTML instead, so a hostile mail cannot stall the
// request. cid: images point at the article's inline route.
func (s *server) articleBody(c echo.Context) error {
	a, err := s.article(c)
	if err != nil {
		return err
	}
	text, htmlBody := a.TextBody, a.HTMLBody
	out := articleBody{Seq: a.Seq, Kind: a.Kind}
	if a.BodyTruncated {
		// The event keeps a prefix of each body; the whole is in the raw mail.
		sum, err := s.parseMail(c.Request().Context(), a)
		if err != nil {
			s.logger.Warn("whole article body not read from the stored mail; its prefix shown", "ticket", c.Param("id"),
				"seq", a.Seq, "mail", a.MailID, "err", err)
			out.BodyTruncated = true
		} else {
			text, htmlBody = sum.TextBody, sum.HTMLBody
		}
	}
	out.Text = text
	if htmlBody != "" {
		if a.MailID != "" {
			// The option travels with the mail (MailReceived), not the account.
			m, err := s.mailOf(c.Request().Context(), a)
			if err != nil {
				return err
			}
			out.ImagesAsAttachments = m.ImagesAsAttachments
		}
		base := fmt.Sprintf("%s/tickets/%s/articles/%d/inline/", Prefix, url.PathEscape(c.Param("id")), a.Seq)
		var res htmlsafe.Result
		var err error
		if out.ImagesAsAttachments {
			res, err = s.sanitizer().SanitizeWithoutInlineImages(c.Request().Context(), htmlBody)
		} else {
			res, err = s.sanitizer().Sanitize(c.Request().Context(), htmlBody, base)
		}
		var panicked *htmlsafe.PanicError
		switch {
		case errors.Is(err, htmlsafe.ErrTimeout), errors.As(err, &panicked):
			// The text is still worth showing; the sanitiser logged a panic's stack.
			s.logger.Warn("article HTML not sanitised in time or at all; text shown", "ticket", c.Param("id"), "seq", a.Seq,
				"bytes", len(htmlBody), "err", err)
			out.HTML, out.HTMLFallback = "<pre>"+html.EscapeString(text)+"</pre>", true
		case err != nil:
			return fmt.Errorf("api: sanitise article %d: %w", a.Seq, err)
		default:
			out.HTML, out.HTMLTruncated = res.HTML, res.Truncated
		}
	}
	return c.JSON(http.StatusOK, out)
}

// parseMail parses the article's raw mail for its whole bodies, as the
// ingestion did (mimeparse.Summary keeps up to 2 MiB of each).
func (s *server) parseMail(ctx context.Context, a projections.Article) (mimeparse.Summary, error) {
	rc, err := s.openMail(ctx, a)
	if err != nil {
		return mimeparse.Summary{}, err
	}
	defer func() { _ = rc.Close() }()
	sum, err := mimeparse.Parse(rc, mimeparse.DefaultLimits())
	if err != nil {
		return mimeparse.Summary{}, fmt.Errorf("api: parse mail %s: %w", a.MailID, err)
	}
	return sum, nil
}

// mailOf reads the MailReceived an article comes from; 404 when the
// article is no received mail.
func (s *server) mailOf(ctx context.Context, a projections.Article) (domain.MailReceived, error) {
	if a.MailID == "" {
		return domain.MailReceived{}, newProblem(http.StatusNotFound, "article %d is not a received mail", a.Seq)
	}
	evs, err := s.store.ReadStream(ctx, ticketing.MailStream(a.MailID), 1, 1)
	if err != nil {
		return domain.MailReceived{}, fmt.Errorf("api: read mail %s: %w", a.MailID, err)
	}
	if len(evs) == 0 || evs[0].Type != domain.MailReceivedName {
		return domain.MailReceived{}, newProblem(http.StatusNotFound, "article %d is not a received mail", a.Seq)
	}
	ev, err := domain.UnmarshalEvent(evs[0].Type, evs[0].SchemaVersion, evs[0].Payload)
	if err != nil {
		return domain.MailReceived{}, fmt.Errorf("api: mail %s: %w", a.MailID, err)
	}
	m, ok := ev.(domain.MailReceived)
	if !ok {
		return domain.MailReceived{}, fmt.Errorf("api: mail %s: event is %T", a.MailID, ev)
	}
	return m, nil
}

// attachmentItem is one entry of GET .../attachments.
type attachmentItem struct {
	N           int    `json:"n"`
	PartPath    string `json:"part_path"`
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	ContentID   string `json:"content_id,omitempty"`
	Size        int64  `json:"size"`
	Inline      bool   `json:"inline"`
	// URL downloads it.
	URL string `json:"url"`
}

// listAttachments serves the attachments of a mail article, numbered from 1
// in the order the parser listed them; an article that is no mail has none.
func (s *server) listAttachments(c echo.Context) error {
	a, err := s.article(c)
	if err != nil {
		return err
	}
	items := []attachmentItem{}
	if a.MailID != "" {
		m, err := s.mailOf(c.Request().Context(), a)
		if err != nil {
			return err
		}
		for i, att := range m.Attachments {
			// With images_as_attachments an inline image is an attachment
			// like any other: the body no longer shows it.
			shownAsAttachment := m.ImagesAsAttachments && strings.HasPrefix(att.ContentType, "image/")
			inline := att.Inline && !shownAsAttachment
			items = append(items, attachmentItem{N: i + 1, PartPath: att.PartPath, Filename: attachmentName(att, i+1),
				ContentType: att.ContentType, ContentID: att.ContentID, Size: att.Size, Inline: inline,
				URL: fmt.Sprintf("%s/tickets/%s/articles/%d/attachments/%d", Prefix, url.PathEscape(c.Param("id")), a.Seq, i+1)})
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

// getAttachment downloads attachment n of a mail article: its decoded bytes
// streamed from the stored mail, with its type and name.
func (s *server) getAttachment(c echo.Context) error {
	a, err := s.article(c)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(c.Param("n"))
	if err != nil || n < 1 {
		return invalid("n", "%q is not an attachment number", c.Param("n"))
	}
	m, err := s.mailOf(c.Request().Context(), a)
	if err != nil {
		return err
	}
	if n > len(m.Attachments) {
		return newProblem(http.StatusNotFound, "article %d has no attachment %d", a.Seq, n)
	}
	att := m.Attachments[n-1]
	return s.servePart(c, a, m, att, "attachment", attachmentName(att, n))
}

// getInline serves the inline image a cid: URL of the article's HTML names
// (RFC 2392), found by Content-ID among the mail's attachments.
func (s *server) getInline(c echo.Context) error {
	a, err := s.article(c)
	if err != nil {
		return err
	}
	cid := c.Param("cid")
	if u, err := url.PathUnescape(cid); err == nil {
		cid = u
	}
	m, err := s.mailOf(c.Request().Context(), a)
	if err != nil {
		return err
	}
	for i, att := range m.Attachments {
		if att.ContentID != "" && strings.EqualFold(att.ContentID, cid) && strings.HasPrefix(att.ContentType, "image/") {
			return s.servePart(c, a, m, att, "inline", attachmentName(att, i+1))
		}
	}
	return newProblem(http.StatusNotFound, "article %d has no inline image with this content id", a.Seq)
}

// getEML downloads the article's mail as it was received, byte for byte.
func (s *server) getEML(c echo.Context) error {
	a, err := s.article(c)
	if err != nil {
		return err
	}
	m, err := s.mailOf(c.Request().Context(), a)
	if err != nil {
		return err
	}
	rc, err := s.openMail(c.Request().Context(), a)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	name := m.MessageID
	if name == "" {
		name = "mail-" + strconv.FormatInt(a.Seq, 10)
	}
	h := c.Response().Header()
	downloadHeaders(h, "message/rfc822", "attachment", name+".eml")
	if m.Size > 0 {
		h.Set(echo.HeaderContentLength, strconv.FormatInt(m.Size, 10))
	}
	c.Response().WriteHeader(http.StatusOK)
	if _, err := io.Copy(extendingDeadline(c.Response()), rc); err != nil {
		s.logger.Warn("eml download broken off", "mail", m.MailID, "err", err)
	}
	return nil
}

// openMail opens the raw mail of a mail article (loose blob or pack); the
// article's BlobRef is its MailReceived's.
func (s *server) openMail(ctx context.Context, a projections.Article) (io.ReadCloser, error) {
	if s.opts.Bodies.Blobs == nil {
		return nil, unavailable("the blob store")
	}
	rc, err := ingest.OpenBlob(ctx, s.store, s.opts.Bodies.Blobs, blobstore.Ref(a.BlobRef))
	if errors.Is(err, blobstore.ErrNotFound) || errors.Is(err, blobstore.ErrInvalidRef) {
		return nil, &problemError{status: http.StatusNotFound, detail: "the stored mail of article " +
			strconv.FormatInt(a.Seq, 10) + " is missing", cause: err}
	}
	if err != nil {
		return nil, fmt.Errorf("api: open mail %s: %w", a.MailID, err)
	}
	return rc, nil
}

// servePart streams one MIME part of the article's mail to the client.
// The headers go out with the first byte, so a part that cannot be found
// still answers with a problem document.
func (s *server) servePart(c echo.Context, a projections.Article, m domain.MailReceived, att domain.Attachment, disposition, name string) error {
	rc, err := s.openMail(c.Request().Context(), a)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	ct := att.ContentType
	if strings.HasPrefix(ct, "message/") {
		ct = "message/rfc822"
	}
	w := &deferredWriter{res: c.Response(), out: extendingDeadline(c.Response()), ready: func(h http.Header) {
		downloadHeaders(h, ct, disposition, name)
	}}
	_, err = mimeparse.ExtractPart(rc, att.PartPath, w, mimeparse.DefaultLimits())
	if err != nil {
		if !w.started {
			if errors.Is(err, mimeparse.ErrPartNotFound) {
				return &problemError{status: http.StatusNotFound, detail: "the part is missing from the stored mail", cause: err}
			}
			return fmt.Errorf("api: extract part %s of mail %s: %w", att.PartPath, m.MailID, err)
		}
		s.logger.Warn("attachment download broken off", "mail", m.MailID, "part", att.PartPath, "err", err)
		return nil
	}
	if !w.started {
		w.start() // an empty part
	}
	return nil
}

// deferredWriter sends the status and headers with the first byte.
type deferredWriter struct {
	res     *echo.Response
	out     io.Writer // the body goes here (res, its deadline extended)
	ready   func(http.Header)
	started bool
}

func (w *deferredWriter) start() {
	w.started = true
	w.ready(w.res.Header())
	w.res.WriteHeader(http.StatusOK)
}

func (w *deferredWriter) Write(b []byte) (int, error) {
	if !w.started {
		w.start()
	}
	return w.out.Write(b)
}

// downloadIdle is how long a download may wait for the client to take its
// next bytes. The server's WriteTimeout bounds an ordinary answer as a
// whole; a large mail or attachment to a slow client takes longer, so each
// write of a download moves the deadline on by downloadIdle instead.
const downloadIdle = time.Minute

// extendingDeadline writes to res, moving its write deadline on before
// each write.
func extendingDeadline(res *echo.Response) io.Writer {
	return deadlineWriter{w: res, rc: http.NewResponseController(res)}
}

type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (d deadlineWriter) Write(b []byte) (int, error) {
	// ErrNotSupported (a writer without deadlines, as in some tests) leaves
	// nothing to extend.
	_ = d.rc.SetWriteDeadline(time.Now().Add(downloadIdle))
	return d.w.Write(b)
}

// downloadHeaders sets the headers of a download of mail content. The
// content comes from a stranger, so the browser is told not to sniff it
// and to run nothing in it even when it is opened directly (a text/html or
// SVG attachment would otherwise run on the API's origin).
func downloadHeaders(h http.Header, contentType, disposition, name string) {
	ct := mime.FormatMediaType(contentType, nil)
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set(echo.HeaderContentType, ct)
	h.Set(echo.HeaderContentDisposition, contentDisposition(disposition, name))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", "private, no-store")
}

// attachmentName is the name an attachment is downloaded under; one
// without a name gets "attachment-<n>" and an extension for its type.
func attachmentName(att domain.Attachment, n int) string {
	if att.Filename != "" {
		return att.Filename
	}
	name := "attachment-" + strconv.Itoa(n)
	if strings.HasPrefix(att.ContentType, "message/") {
		return name + ".eml"
	}
	if exts, _ := mime.ExtensionsByType(att.ContentType); len(exts) > 0 {
		return name + exts[0]
	}
	return name
}

// contentDisposition formats a Content-Disposition with an ASCII filename
// for old clients and the exact name as filename* in UTF-8 (RFC 6266
// section 4.3, RFC 5987 / RFC 8187 encoding).
func contentDisposition(disposition, name string) string {
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, name)
	if !utf8.ValidString(name) {
		name = strings.ToValidUTF8(name, "_")
	}
	var ascii strings.Builder
	for _, r := range name {
		if r > 0x7e || r == '"' || r == '%' {
			ascii.WriteByte('_')
			continue
		}
		ascii.WriteRune(r)
	}
	var ext strings.Builder
	for i := 0; i < len(name); i++ {
		b := name[i]
		// attr-char of RFC 8187 section 3.2.1
		if b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte("!#$&+-.^_`|~", b) >= 0 {
			ext.WriteByte(b)
			continue
		}
		fmt.Fprintf(&ext, "%%%02X", b)
	}
	return fmt.Sprintf(`%s; filename="%s"; filename*=UTF-8''%s`, disposition, ascii.String(), ext.String())
}
