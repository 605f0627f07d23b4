package smtpsend

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
)

// Body encodings.
const (
	EncodingQuotedPrintable = "quoted-printable"
	EncodingBase64          = "base64"
	Encoding8Bit            = "8bit"
)

// Address is a display name and a mail address.
type Address struct {
	Name  string
	Email string
}

// Message is one plain-text mail to build.
type Message struct {
	From    Address
	To      []Address
	Cc      []Address
	ReplyTo []Address
	Subject string
	// MessageID is ours, without angle brackets (domain.OutgoingMessageID).
	MessageID string
	// InReplyTo and References thread the mail (without angle brackets).
	InReplyTo  string
	References []string
	Date       time.Time
	// Automatic marks an automatic mail (auto-reply, error mail): it gets
	// Auto-Submitted: auto-replied (RFC 3834) and X-Auto-Response-Suppress:
	// All, so that well-behaved systems do not answer it.
	Automatic bool
	Body      string
	// Encoding is the body's Content-Transfer-Encoding [quoted-printable].
	Encoding string
}

// Build renders m as an RFC 5322 message with CRLF line ends: a
// text/plain; charset=utf-8 body in the chosen transfer encoding and
// RFC 2047-encoded non-ASCII header text.
func Build(m Message) ([]byte, error) {
	var errs []error
	if m.From.Email == "" {
		errs = append(errs, errors.New("from: empty"))
	}
	if len(m.To) == 0 {
		errs = append(errs, errors.New("to: empty"))
	}
	if m.MessageID == "" || strings.ContainsAny(m.MessageID, "<> \r\n") || !strings.Contains(m.MessageID, "@") {
		errs = append(errs, fmt.Errorf("message id %q: want local@domain without brackets", m.MessageID))
	}
	enc := m.Encoding
	switch enc {
	case "":
		enc = EncodingQuotedPrintable
	case EncodingQuotedPrintable, EncodingBase64, Encoding8Bit:
	default:
		errs = append(errs, fmt.Errorf("encoding %q is not one of quoted-printable, base64, 8bit", enc))
	}
	for _, s := range []string{m.Subject, m.From.Name, m.From.Email} {
		if strings.ContainsAny(s, "\r\n") {
			errs = append(errs, errors.New("header text must not contain line breaks"))
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("smtpsend: build message: %w", err)
	}
	var h mail.Header
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	h.SetDate(date)
	h.SetAddressList("From", addrs([]Address{m.From}))
	h.SetAddressList("To", addrs(m.To))
	if len(m.Cc) > 0 {
		h.SetAddressList("Cc", addrs(m.Cc))
	}
	if len(m.ReplyTo) > 0 {
		h.SetAddressList("Reply-To", addrs(m.ReplyTo))
	}
	h.SetSubject(m.Subject)
	h.SetMessageID(m.MessageID)
	if m.InReplyTo != "" {
		h.SetMsgIDList("In-Reply-To", []string{strings.Trim(m.InReplyTo, "<> ")})
	}
	if refs := cleanIDs(m.References); len(refs) > 0 {
		h.SetMsgIDList("References", refs)
	}
	if m.Automatic {
		h.Set("Auto-Submitted", "auto-replied")
		h.Set("X-Auto-Response-Suppress", "All")
	}
	h.Set("MIME-Version", "1.0")
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	h.Set("Content-Transfer-Encoding", enc)

	var buf bytes.Buffer
	w, err := mail.CreateSingleInlineWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("smtpsend: build message: %w", err)
	}
	body := crlf(m.Body)
	if enc == Encoding8Bit {
		// Dot-stuffing is the SMTP client's job; lines are only capped by
		// RFC 5322's 998 characters, which a template does not reach.
		body = strings.TrimSuffix(body, "\r\n") + "\r\n"
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return nil, fmt.Errorf("smtpsend: build message: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("smtpsend: build message: %w", err)
	}
	return buf.Bytes(), nil
}

func addrs(as []Address) []*mail.Address {
	out := make([]*mail.Address, 0, len(as))
	for _, a := range as {
		out = append(out, &mail.Address{Name: a.Name, Address: a.Email})
	}
	return out
}

func cleanIDs(ids []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, id := range ids {
		id = strings.Trim(strings.TrimSpace(id), "<>")
		if id == "" || seen[id] || strings.ContainsAny(id, " \r\n<>") {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

// crlf normalises line ends to CRLF (the canonical form that QP and base64
// encode, RFC 2045 section 6.7).
func crlf(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}
