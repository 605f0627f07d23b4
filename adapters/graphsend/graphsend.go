// Package graphsend sends mail through Microsoft Graph's sendMail, on
// net/http and without the Graph SDK: POST
// {base}/v1.0/users/{mailbox}/sendMail with Content-Type text/plain and
// the base64 of a complete RFC 5322 message, so that every header we build
// (Message-ID, In-Reply-To, References, Auto-Submitted) reaches the
// recipient unchanged. Graph answers 202 Accepted with an empty body.
//
// A raw MIME send has no saveToSentItems parameter (that is a field of
// the JSON form, which defaults to true); sendMail saves the message in the
// mailbox's Sent Items either way, so no copy of our own is needed.
//
// Failures come back as *Error in the shape of smtpsend.Error (a stage, a
// status code, the server's words, temporary or not), so the outbound saga
// records and retries both protocols alike. This package never sleeps on a
// Retry-After: it returns it to the caller as Error.RetryAfter, and keeps
// the mailbox's requests back until then.
package graphsend

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph"
	"github.com/ledgerdesk/ledgerdesk/adapters/httpreply"
)

// Stages of a send, named in errors (the saga records them as
// OutboundMailFailed.Stage).
const (
	StageSettings = "settings"
	StageSize     = "size"
	StageAuth     = "auth"
	StageSend     = "send"
)

// DefaultBaseURL is Graph in Microsoft's global cloud
// (domain.DefaultGraphBaseURL); national clouds have their own.
const DefaultBaseURL = "https://graph.microsoft.com"

// Account is the mailbox a message is sent as.
type Account struct {
	// BaseURL is Graph's root in the connection's cloud
	// (domain.OAuthConnection.GraphBaseURL) [DefaultBaseURL].
	BaseURL string
	// Mailbox is the user id or address sent as (/users/{mailbox}).
	Mailbox string
	// TokenSource returns a Graph access token. It is called with "" for
	// the token to use, and once more with the token Graph refused (401)
	// for a fresh one, which must differ from it.
	TokenSource func(ctx context.Context, rejected string) (string, error)
	// MaxSize refuses messages larger than this many bytes before any
	// request; 0 means no limit of our own.
	MaxSize int64
}

// Error is a failed send. Temporary errors (429, 408, 5xx, the network, a
// token that could not be had) are worth retrying; permanent ones (any
// other 4xx, an answer that is not Graph's, a bad configuration) are not.
type Error struct {
	Stage string
	// Code is the HTTP status, 0 when there was no answer.
	Code int
	// GraphCode is Graph's error.code (ErrorInvalidRecipients, ...), ""
	// when the answer carried none.
	GraphCode string
	// Reply is Graph's error.code and error.message verbatim, or what was
	// wrong with an answer that was not Graph's, or the local error; with
	// the request-id when Graph gave one.
	Reply     string
	Temporary bool
	// RetryAfter is the server's Retry-After (429, 503), capped at
	// Sender.MaxRetryAfter; 0 when none was given.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("graph %s: %d %s", e.Stage, e.Code, e.Reply)
	}
	return fmt.Sprintf("graph %s: %s", e.Stage, e.Reply)
}

func (e *Error) Unwrap() error { return e.Err }

var _ error = (*Error)(nil)

// Sender posts messages to sendMail. It is safe for concurrent use.
type Sender struct {
	// Client makes the requests [30 s timeout, redirects not followed].
	Client *http.Client
	// Limiter bounds the requests in flight per mailbox
	// [graph.DefaultMailboxLimiter, shared with the inbound fetchers].
	Limiter *graph.MailboxLimiter
	// MaxRetryAfter caps a server's Retry-After [1 h].
	MaxRetryAfter time.Duration
	// Now is the clock of the Retry-After bookkeeping [time.Now].
	Now func() time.Time

	mu        sync.Mutex
	mailboxes map[string]*mailbox
}

// mailbox is the per-mailbox state: the time before which Graph asked not
// to be called.
type mailbox struct {
	waitUntil time.Time
}

// NewSender returns a Sender with the defaults.
func NewSender() *Sender {
	return &Sender{}
}

func (s *Sender) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	return defaultClient
}

// defaultClient does not follow redirects: a redirected POST turns into a
// GET elsewhere, which could never send, and a 3xx is not Graph's answer.
var defaultClient = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (s *Sender) limiter() *graph.MailboxLimiter {
	if s.Limiter != nil {
		return s.Limiter
	}
	return graph.DefaultMailboxLimiter
}

func (s *Sender) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Sender) maxRetryAfter() time.Duration {
	if s.MaxRetryAfter > 0 {
		return s.MaxRetryAfter
	}
	return time.Hour
}

func (s *Sender) mailbox(key string) *mailbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mailboxes == nil {
		s.mailboxes = map[string]*mailbox{}
	}
	m, ok := s.mailboxes[key]
	if !ok {
		m = &mailbox{}
		s.mailboxes[key] = m
	}
	return m
}

// throttled returns how long the mailbox must still wait, 0 when it need
// not.
func (s *Sender) throttled(m *mailbox) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(m.waitUntil.Sub(s.now()), 0)
}

func (s *Sender) throttle(m *mailbox, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until := s.now().Add(d); until.After(m.waitUntil) {
		m.waitUntil = until
	}
}

// Send posts raw (a complete RFC 5322 message) to the account's sendMail
// and returns the reply to record: "202 Accepted", with Graph's request-id
// when it gave one. A 401 gets one fresh token and one more request; a 429
// or 503 returns its Retry-After in the *Error and keeps the mailbox's
// further sends back until then (they fail at once, without a request).
// Only 202 counts as sent: any other answer is an *Error.
func (s *Sender) Send(ctx context.Context, a Account, raw []byte) (string, error) {
	if err := a.validate(); err != nil {
		return "", err
	}
	if a.MaxSize > 0 && int64(len(raw)) > a.MaxSize {
		return "", &Error{Stage: StageSize, Reply: fmt.Sprintf("message of %d bytes exceeds the account's max_mail_size of %d", len(raw), a.MaxSize)}
	}
	endpoint := sendMailURL(a.BaseURL, a.Mailbox)
	m := s.mailbox(endpoint)
	if wait := s.throttled(m); wait > 0 {
		return "", &Error{Stage: StageSend, Code: http.StatusTooManyRequests, Temporary: true, RetryAfter: wait,
			Reply: fmt.Sprintf("not sent: Graph asked to wait %s more before the next request to mailbox %s (Retry-After)", wait.Round(time.Second), a.Mailbox)}
	}
	release, err := s.limiter().Acquire(ctx, baseURL(a.BaseURL), a.Mailbox)
	if err != nil {
		return "", &Error{Stage: StageSend, Reply: "waiting for a free request slot of the mailbox: " + err.Error(), Temporary: true, Err: err}
	}
	defer release()
	body := make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	base64.StdEncoding.Encode(body, raw)

	token, err := a.TokenSource(ctx, "")
	if err != nil {
		return "", tokenError(err, "")
	}
	reply, err := s.post(ctx, endpoint, token, body)
	var ge *Error
	if errors.As(err, &ge) && ge.Code == http.StatusUnauthorized {
		// The token may have been revoked or expired early: one fresh
		// token and one more request. Nothing was sent on a 401.
		fresh, terr := a.TokenSource(ctx, token)
		if terr != nil {
			return "", tokenError(terr, ge.Reply)
		}
		if fresh == token {
			ge.Reply += " (no fresh token to try)"
			return "", ge
		}
		reply, err = s.post(ctx, endpoint, fresh, body)
		if errors.As(err, &ge) && ge.Code == http.StatusUnauthorized {
			ge.Reply += " (with a fresh token too)"
		}
	}
	if errors.As(err, &ge) && ge.RetryAfter > 0 {
		s.throttle(m, ge.RetryAfter)
	}
	return reply, err
}

func tokenError(err error, refused string) *Error {
	reply := "access token: " + err.Error()
	if refused != "" {
		reply = "Graph refused the access token (" + refused + "); a fresh " + reply
	}
	return &Error{Stage: StageAuth, Reply: reply, Temporary: true, Err: err}
}

func (a Account) validate() error {
	var problems []string
	if strings.TrimSpace(a.Mailbox) == "" || strings.ContainsAny(a.Mailbox, " /\\?#\r\n") {
		problems = append(problems, fmt.Sprintf("mailbox %q is not an address or a user id", a.Mailbox))
	}
	if a.BaseURL != "" {
		if u, err := url.Parse(a.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			problems = append(problems, fmt.Sprintf("graph base URL %q is not an http(s) URL", a.BaseURL))
		}
	}
	if a.TokenSource == nil {
		problems = append(problems, "no access token source")
	}
	if len(problems) > 0 {
		return &Error{Stage: StageSettings, Reply: strings.Join(problems, "; ")}
	}
	return nil
}

// baseURL is Graph's root of the account, DefaultBaseURL when unset.
func baseURL(base string) string {
	if base == "" {
		return DefaultBaseURL
	}
	return base
}

// sendMailURL is {base}/v1.0/users/{mailbox}/sendMail.
func sendMailURL(base, mailbox string) string {
	return strings.TrimRight(baseURL(base), "/") + "/v1.0/users/" + url.PathEscape(mailbox) + "/sendMail"
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// post makes one request and interprets the answer.
func (s *Sender) post(ctx context.Context, endpoint, token string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return "", &Error{Stage: StageSettings, Reply: err.Error(), Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Prefer", graph.PreferImmutableID)
	resp, err := s.client().Do(req)
	if err != nil {
		return "", networkError(ctx, err)
	}
	defer resp.Body.Close()
	requestID := resp.Header.Get("request-id")
	if resp.StatusCode == http.StatusAccepted {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		reply := resp.Status
		if requestID != "" {
			reply += " (request-id " + requestID + ")"
		}
		return reply, nil
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return "", s.answerError(resp, data, requestID)
}

// networkError classifies a request that got no answer: temporary, except
// a certificate that does not verify (a configuration problem).
func networkError(ctx context.Context, err error) *Error {
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return &Error{Stage: StageSend, Reply: err.Error(), Err: err}
	}
	return &Error{Stage: StageSend, Reply: err.Error(), Temporary: true, Err: err}
}

// answerError turns an answer other than 202 into an *Error.
func (s *Sender) answerError(resp *http.Response, data []byte, requestID string) *Error {
	e := &Error{Stage: StageSend, Code: resp.StatusCode, Temporary: temporaryStatus(resp.StatusCode)}
	if ge, ok := graph.DecodeError(resp.Header.Get("Content-Type"), data); ok {
		e.GraphCode = ge.Code
		e.Reply = ge.Code + ": " + ge.Message
	} else {
		e.Reply = fmt.Sprintf("%s from %s, not a Graph answer (%s): %s", resp.Status, resp.Request.URL.Host,
			orNone(resp.Header.Get("Content-Type")), excerpt(data))
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		// Graph answers sendMail with 202 only. Whatever else answered
		// with success may or may not have sent; retrying could send twice.
		e.Reply = fmt.Sprintf("%s from %s instead of 202 Accepted: not known to be sent, not retried", resp.Status, resp.Request.URL.Host)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		e.Reply = fmt.Sprintf("%s from %s to %q: Graph does not redirect sendMail; check graph_base_url", resp.Status,
			resp.Request.URL.Host, resp.Header.Get("Location"))
	}
	if requestID != "" {
		e.Reply += " (request-id " + requestID + ")"
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		wait, _ := graph.ParseRetryAfter(resp.Header.Get("Retry-After"), s.now())
		e.RetryAfter = min(wait, s.maxRetryAfter())
	}
	return e
}

// temporaryStatus says which answers are worth another attempt: throttling
// (429), a request timeout (408) and server errors. Other answers are
// Graph's verdict on this mail and stay the same on every attempt.
func temporaryStatus(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500
}

func orNone(ct string) string {
	if ct == "" {
		return "no content type"
	}
	return ct
}

// maxExcerpt is how many characters of an answer that is not Graph's
// an error quotes.
const maxExcerpt = 200

// excerpt is the start of an answer as one line of text, tags dropped, so
// an HTML error page reads as its words.
func excerpt(body []byte) string {
	if s := httpreply.Excerpt(body, maxExcerpt); s != "" {
		return s
	}
	return "an empty body"
}
