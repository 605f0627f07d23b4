package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/oauth"
	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
	"github.com/ledgerdesk/ledgerdesk/projections"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// bootstrapToken is LEDGERDESK_ADMIN_TOKEN in the tests.
const bootstrapToken = "bootstrap-admin-token-for-tests"

type backend struct {
	name string
	open func(tb testing.TB) (eventstore.Store, projections.Reader)
}

// backends are both stores: the embedded one always, PostgreSQL unless
// -short (pgtest fails, not skips, when the server is unreachable).
func backends() []backend {
	bs := []backend{{"embedded", openEmbedded}}
	if !testing.Short() {
		bs = append(bs, backend{"postgres", openPostgres})
	}
	return bs
}

func openEmbedded(tb testing.TB) (eventstore.Store, projections.Reader) {
	tb.Helper()
	s, db := storetest.Embedded(tb)
	return s, projections.SQLReader(db)
}

func openPostgres(tb testing.TB) (eventstore.Store, projections.Reader) {
	tb.Helper()
	s, pool := storetest.Postgres(tb)
	return s, projections.PGReader(pool)
}

// syncBuffer collects the server's log so tests can grep it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testEnv is a running API on a real store, with a token per role.
type testEnv struct {
	url    string
	store  eventstore.Store
	box    *secretbox.Box
	logs   *syncBuffer
	tokens map[domain.Role]string
	// bodies collects every response body, to prove no secret leaves.
	mu     sync.Mutex
	bodies []string

	pollMu  sync.Mutex
	polled  []string
	checked []domain.InboundAccount

	oauth *oauth.Manager
}

type envOption func(*Options, projections.Reader)

func newEnv(tb testing.TB, b backend, opts ...envOption) *testEnv {
	tb.Helper()
	store, reader := b.open(tb)
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		tb.Fatalf("secretbox: %v", err)
	}
	env := &testEnv{store: store, box: box, logs: &syncBuffer{}, tokens: map[domain.Role]string{}}
	logger := slog.New(slog.NewTextHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	status := projections.NewMailboxStatus(store, reader, logger)
	status.Options.PollInterval = 20 * time.Millisecond
	tickets := projections.NewTickets(store, reader, logger)
	users := projections.NewUsers(store, reader, logger)
	locations := projections.NewLocations(store, reader, logger)
	tickets.Options.PollInterval, users.Options.PollInterval, locations.Options.PollInterval = 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond
	o := Options{
		Logger: logger, Store: store, Secrets: box, AdminToken: bootstrapToken, BodyLimit: "64K",
		Now: func() time.Time { return time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC) },
		PollNow: func(id string) error {
			env.pollMu.Lock()
			defer env.pollMu.Unlock()
			env.polled = append(env.polled, id)
			return nil
		},
		Check: func(_ context.Context, a domain.InboundAccount) error {
			env.pollMu.Lock()
			defer env.pollMu.Unlock()
			env.checked = append(env.checked, a)
			return nil
		},
		// The real check talks SMTP: cmd/ledgerdesk's outbound check test.
		CheckOutbound: func(context.Context, domain.OutboundAccount, string) (ticketing.CheckReply, error) {
			return ticketing.CheckReply{}, nil
		},
		Projections: Projections{MailboxStatus: status, Tickets: tickets, Users: users, Locations: locations},
		Commands:    ticketing.NewCommands(store, domain.DeriveMessageIDKey(bytes.Repeat([]byte{9}, 32))),
		Directory:   ticketing.NewDirectory(store),
		Bodies:      MailBodies{Blobs: newTestBlobs(tb, env)},
	}
	tokens, err := oauth.New(oauth.Options{Store: store, Secrets: box, Logger: logger, RedirectURL: "http://127.0.0.1:1" + OAuthCallbackPath})
	if err != nil {
		tb.Fatalf("oauth manager: %v", err)
	}
	env.oauth, o.OAuth = tokens, oauthPortForTest(tokens)
	for _, opt := range opts {
		opt(&o, reader)
	}
	srv := httptest.NewServer(New(o))
	tb.Cleanup(srv.Close)
	env.url = srv.URL

	if o.Projections.MailboxStatus == status {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = status.Run(ctx)
		}()
		tb.Cleanup(func() { cancel(); <-done })
	}
	for _, run := range []func(context.Context) error{tickets.Run, users.Run, locations.Run} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = run(ctx)
		}()
		tb.Cleanup(func() { cancel(); <-done })
	}

	for _, role := range domain.Roles {
		var out struct {
			Token string `json:"token"`
		}
		env.mustJSON(tb, http.MethodPost, "/api/v1/tokens", bootstrapToken, map[string]string{"name": "test " + string(role), "role": string(role)},
			http.StatusCreated, &out)
		env.tokens[role] = out.Token
	}
	return env
}

// reply is a response whose body has been read and closed.
type reply struct {
	StatusCode int
	Header     http.Header
}

// do sends a request; body is sent as is when it is a string, else as JSON.
func (e *testEnv) do(tb testing.TB, method, path, token string, body any, headers ...string) (reply, []byte) {
	tb.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case io.Reader:
		r = b // unknown length: sent chunked
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			tb.Fatalf("marshal body: %v", err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.url+path, r)
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	e.mu.Lock()
	e.bodies = append(e.bodies, string(raw))
	e.mu.Unlock()
	// The OAuth callback answers the person's browser in HTML, errors too.
	if resp.StatusCode >= 400 && !strings.HasPrefix(path, OAuthCallbackPath) {
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" && method != http.MethodHead {
			tb.Errorf("%s %s: status %d with Content-Type %q, want application/problem+json", method, path, resp.StatusCode, ct)
		}
	}
	return reply{StatusCode: resp.StatusCode, Header: resp.Header}, raw
}

// mustJSON sends a request, wants status and decodes the answer into out.
func (e *testEnv) mustJSON(tb testing.TB, method, path, token string, body any, status int, out any, headers ...string) reply {
	tb.Helper()
	resp, raw := e.do(tb, method, path, token, body, headers...)
	if resp.StatusCode != status {
		tb.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, raw, status)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp
}

// problem decodes a problem document and checks its status.
func (e *testEnv) problem(tb testing.TB, method, path, token string, body any, status int, headers ...string) Problem {
	tb.Helper()
	var p Problem
	e.mustJSON(tb, method, path, token, body, status, &p, headers...)
	if p.Status != status || p.Title == "" || p.Type == "" {
		tb.Errorf("%s %s: problem %+v, want status %d with type and title", method, path, p, status)
	}
	return p
}

// account is a valid inbound account body.
func account(name string) map[string]any {
	return map[string]any{
		"name": name, "protocol": "imap", "host": "imap.example.org", "port": 993, "security": "tls",
		"username": "support@example.org", "password": "s3cret-" + name, "folder": "INBOX",
		"poll_interval_seconds": 60, "after_import": "delete", "account_address": "support@example.org",
		"sender_address": "support@example.org", "sender_name": "Support",
	}
}

// createAccount creates an account as admin and returns its id.
func (e *testEnv) createAccount(tb testing.TB, name string) string {
	tb.Helper()
	var out struct {
		ID string `json:"id"`
	}
	e.mustJSON(tb, http.MethodPost, "/api/v1/inbound-accounts", e.tokens[domain.RoleAdmin], account(name), http.StatusCreated, &out)
	if out.ID == "" {
		tb.Fatalf("create account %s: no id", name)
	}
	return out.ID
}

// logThrough reads the whole global log once it holds the event at
// position. On PostgreSQL a reader sees events only below the oldest
// running transaction of the whole server, which other tests' transactions
// can hold back for a while.
func (e *testEnv) logThrough(tb testing.TB, position int64) []eventstore.RecordedEvent {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var all []eventstore.RecordedEvent
		var after int64
		for {
			page, err := e.store.ReadAll(context.Background(), after, 500)
			if err != nil {
				tb.Fatalf("ReadAll(%d) error = %v", after, err)
			}
			all = append(all, page...)
			if len(page) < 500 {
				break
			}
			after = page[len(page)-1].Position
		}
		for _, ev := range all {
			if ev.Position == position {
				return all
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the global log does not show position %d after 20s (%d events visible)", position, len(all))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
