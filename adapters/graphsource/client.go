package graphsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph"
	"github.com/ledgerdesk/ledgerdesk/adapters/httpreply"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// Errors at the package boundary; each comes wrapped in a
// *mailsource.ServerError carrying the words that the mailbox status shows.
var (
	// ErrGraph marks an error answer of Graph ({"error":{"code","message"}});
	// errors.As finds the *Error with its code.
	ErrGraph = errors.New("graphsource: Microsoft Graph refused the request")
	// ErrNotGraph marks an answer that is not Graph's JSON: an HTML page of
	// a proxy or portal, or a graph_base_url that names another service.
	ErrNotGraph = errors.New("graphsource: the answer is not Microsoft Graph's JSON (an error page of a proxy, or a wrong Graph base URL)")
	// ErrStalled means a request made no progress for the Timeout.
	ErrStalled = errors.New("graphsource: no progress from Graph within the timeout")
)

// Error is an error answer of Microsoft Graph, with its code and message
// verbatim (https://learn.microsoft.com/graph/errors).
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("graphsource: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Unwrap makes errors.Is(err, ErrGraph) hold.
func (e *Error) Unwrap() error { return ErrGraph }

// reply is how the mailbox status shows e: Graph's code and message.
func (e *Error) reply() string { return e.Code + ": " + e.Message }

// isNotFound says whether Graph answered that the item does not exist
// (any more): ErrorItemNotFound.
func isNotFound(err error) bool {
	var ge *Error
	return errors.As(err, &ge) && ge.Status == http.StatusNotFound && ge.Code == "ErrorItemNotFound"
}

// isRefusal says whether err is an answer of Graph refusing the request
// (a 4xx: no right, quota, bad request), not a broken connection or an
// outage; a poll records refusals and goes on with new mail.
func isRefusal(err error) bool {
	var ge *Error
	return errors.As(err, &ge) && ge.Status >= 400 && ge.Status < 500
}

// tokenMaxAge is how long a token from TokenSource is reused before it is
// asked again (cheaply: it caches); a 401 asks at once.
const tokenMaxAge = 10 * time.Second

// tokenCache holds the access token of one fetcher.
type tokenCache struct {
	src    func(ctx context.Context) (string, error)
	reject func(token string)

	mu  sync.Mutex
	tok string
	at  time.Time
}

func (t *tokenCache) get(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tok != "" && time.Since(t.at) < tokenMaxAge {
		return t.tok, nil
	}
	tok, err := t.src(ctx)
	if err != nil {
		return "", fmt.Errorf("graphsource: access token: %w", err)
	}
	if tok == "" {
		return "", errors.New("graphsource: access token: the token source gave an empty token")
	}
	t.tok, t.at = tok, time.Now()
	return tok, nil
}

// current is the token in use, "" when none.
func (t *tokenCache) current() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tok
}

// renew drops rejected (unless another request renewed it already) and
// returns a fresh token.
func (t *tokenCache) renew(ctx context.Context, rejected string) (string, error) {
	t.mu.Lock()
	if t.tok == rejected {
		if t.reject != nil {
			t.reject(rejected)
		}
		t.tok = ""
	}
	t.mu.Unlock()
	return t.get(ctx)
}

// client sends the requests of one poll or check to one mailbox.
type client struct {
	root          *url.URL // BaseURL
	users         string   // BaseURL + "/v1.0/users/" + escaped mailbox
	mailbox       string
	http          *http.Client
	limiter       *graph.MailboxLimiter
	tokens        *tokenCache
	timeout       time.Duration
	maxRetries    int
	maxRetryAfter time.Duration
	log           *slog.Logger
	requests      atomic.Int64
	// sleep waits between retries; tests shorten it.
	sleep func(ctx context.Context, d time.Duration) error
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// request is one Graph call. op names it in errors and in the mailbox
// status ("list Inbox", "move to HD Error Messages").
type request struct {
	op     string
	method string
	url    string // absolute
	body   []byte // JSON, nil for none
}

// path returns the URL of a path below /users/{mailbox}: segments are
// escaped (ids hold "=" and "-", display names anything), query is
// appended as given.
func (c *client) path(query string, segments ...string) string {
	var b strings.Builder
	b.WriteString(c.users)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	if query != "" {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return b.String()
}

// query encodes OData options in order, with "$" kept literal and spaces
// as %20, as Graph's documentation writes them.
func query(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, kv[i]+"="+strings.ReplaceAll(url.QueryEscape(kv[i+1]), "+", "%20"))
	}
	return strings.Join(parts, "&")
}

// sameOrigin says whether u (a nextLink) points at the Graph we talk to:
// the token goes nowhere else.
func (c *client) sameOrigin(u string) bool {
	p, err := url.Parse(u)
	return err == nil && strings.EqualFold(p.Scheme, c.root.Scheme) && strings.EqualFold(p.Host, c.root.Host)
}

// do sends rq with the access token and Prefer: IdType="ImmutableId",
// within the mailbox's concurrency slots, and returns a 2xx answer whose
// Body the caller must close (closing frees the slot). 429 and 503 are
// retried after Retry-After (bounded), a 401 once with a fresh token; any
// other answer becomes a *mailsource.ServerError with Graph's words.
func (c *client) do(ctx context.Context, rq request) (*http.Response, error) {
	renewed := false
	for attempt := 0; ; attempt++ {
		tok, err := c.tokens.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, release, err := c.send(ctx, rq, tok)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return resp, nil
		}
		retryAfter, hasRetryAfter := graph.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		failure := c.failure(rq, resp)
		release()
		switch {
		case resp.StatusCode == http.StatusUnauthorized && !renewed:
			renewed = true
			c.log.Info("graph refused the access token; asking for a fresh one", "op", rq.op)
			if _, err := c.tokens.renew(ctx, tok); err != nil {
				return nil, err
			}
			continue
		case (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) && attempt < c.maxRetries:
			wait := retryAfter
			if !hasRetryAfter {
				wait = min(time.Second<<attempt, c.maxRetryAfter)
			}
			if wait > c.maxRetryAfter {
				return nil, fmt.Errorf("%w (Graph asks to wait %s, more than the %s this poll waits)", failure, wait, c.maxRetryAfter)
			}
			c.log.Info("graph throttled a request; waiting as asked", "op", rq.op, "status", resp.StatusCode, "wait", wait,
				"reply", mailsource.ServerReply(failure))
			if err := c.sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("graphsource: %s: %w", rq.op, err)
			}
			continue
		}
		return nil, failure
	}
}

// send makes one attempt: a slot, the request, and a watchdog that cancels
// it when nothing moves for the timeout. On success the answer's Body
// frees all of that when closed; release frees it at once otherwise.
func (c *client) send(ctx context.Context, rq request, tok string) (_ *http.Response, release func(), _ error) {
	free, err := c.limiter.Acquire(ctx, c.root.String(), c.mailbox)
	if err != nil {
		return nil, nil, fmt.Errorf("graphsource: %s: %w", rq.op, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var stalled atomic.Bool
	watchdog := time.AfterFunc(c.timeout, func() { stalled.Store(true); cancel() })
	release = func() {
		watchdog.Stop()
		cancel()
		free()
	}
	var body io.Reader
	if rq.body != nil {
		body = bytes.NewReader(rq.body)
	}
	req, err := http.NewRequestWithContext(rctx, rq.method, rq.url, body)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("graphsource: %s: %w", rq.op, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Prefer", graph.PreferImmutableID)
	req.Header.Set("User-Agent", "ledgerdesk")
	if rq.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		release()
		if stalled.Load() {
			err = ErrStalled
		}
		return nil, nil, fmt.Errorf("graphsource: %s: %w", rq.op, err)
	}
	resp.Body = &watchedBody{rc: resp.Body, watchdog: watchdog, timeout: c.timeout, stalled: &stalled, release: release}
	return resp, func() {
		_ = resp.Body.Close()
	}, nil
}

// watchedBody is an answer's body: each read with progress puts the
// watchdog off; Close frees the request's slot.
type watchedBody struct {
	rc       io.ReadCloser
	watchdog *time.Timer
	timeout  time.Duration
	stalled  *atomic.Bool
	release  func()
	once     sync.Once
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.watchdog.Reset(b.timeout)
	}
	if err != nil && !errors.Is(err, io.EOF) && b.stalled.Load() {
		err = fmt.Errorf("%w: %w", ErrStalled, err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.rc.Close()
	b.once.Do(b.release)
	return err
}

// maxErrorBody bounds what is read of an error answer.
const maxErrorBody = 64 << 10

// failure turns a non-2xx answer into an error with Graph's words, or,
// when the answer is no Graph JSON, with the status and the page's title.
// It reads and closes the body.
func (c *client) failure(rq request, resp *http.Response) error {
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if e, ok := graph.DecodeError(resp.Header.Get("Content-Type"), raw); ok {
		ge := &Error{Status: resp.StatusCode, Code: e.Code, Message: e.Message}
		return &mailsource.ServerError{Op: rq.op, Reply: ge.reply(), Err: ge}
	}
	return notGraph(rq, resp, raw)
}

// notGraph describes an answer that is not Graph's: its status, its type
// and the title or first words of the page, never the page.
func notGraph(rq request, resp *http.Response, raw []byte) error {
	words := pageWords(raw)
	reply := fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if words != "" {
		reply += ": " + words
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "no content type"
	}
	return &mailsource.ServerError{Op: rq.op, Reply: reply,
		Err: fmt.Errorf("%w: HTTP %d with %s", ErrNotGraph, resp.StatusCode, ct)}
}

var htmlTitle = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)

// pageWords returns an HTML page's title, else its first words, bounded.
func pageWords(raw []byte) string {
	if m := htmlTitle.FindSubmatch(raw); m != nil {
		raw = m[1]
	}
	return httpreply.Excerpt(raw, 120)
}

// maxJSON bounds a JSON answer (a page of 1000 listed messages is about
// half a megabyte).
const maxJSON = 16 << 20

// getJSON GETs url and decodes Graph's JSON answer into out.
func (c *client) getJSON(ctx context.Context, op, u string, out any) error {
	return c.callJSON(ctx, request{op: op, method: http.MethodGet, url: u}, out)
}

// callJSON sends rq and decodes the JSON answer into out (nil: discard).
func (c *client) callJSON(ctx context.Context, rq request, out any) error {
	resp, err := c.do(ctx, rq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxJSON))
		return nil
	}
	if !graph.IsJSON(resp.Header.Get("Content-Type")) {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return notGraph(rq, resp, raw)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSON)).Decode(out); err != nil {
		return &mailsource.ServerError{Op: rq.op, Err: fmt.Errorf("%w: undecodable JSON: %w", ErrNotGraph, err)}
	}
	return nil
}
