package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// testClock is a clock the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func withClock(c *testClock) envOption {
	return func(o *Options, _ projections.Reader) { o.Now = c.Now }
}

func withAuthFailureLimit(n int) envOption {
	return func(o *Options, _ projections.Reader) { o.AuthFailureLimit = n }
}

func TestTokens_ExpireAndRefuseUnknownRoles(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, backend{"embedded", openEmbedded}, withClock(clock))
	admin := e.tokens[domain.RoleAdmin]

	// given a token that lives a minute and one that expires at a time
	var short, dated struct {
		ID, Token string
		ExpiresAt time.Time `json:"expires_at"`
	}
	e.mustJSON(t, http.MethodPost, "/api/v1/tokens", admin, map[string]any{"name": "ci", "role": "auditor", "ttl_seconds": 60},
		http.StatusCreated, &short)
	if want := clock.Now().Add(time.Minute); !short.ExpiresAt.Equal(want) {
		t.Errorf("expires_at = %v, want %v", short.ExpiresAt, want)
	}
	e.mustJSON(t, http.MethodPost, "/api/v1/tokens", admin, map[string]any{"name": "report", "role": "analyst",
		"expires_at": clock.Now().Add(time.Hour).Format(time.RFC3339)}, http.StatusCreated, &dated)
	var list struct {
		Items []struct {
			ID        string     `json:"id"`
			ExpiresAt *time.Time `json:"expires_at"`
		} `json:"items"`
	}
	e.mustJSON(t, http.MethodGet, "/api/v1/tokens", admin, nil, http.StatusOK, &list)
	for _, it := range list.Items {
		if it.ID == short.ID && (it.ExpiresAt == nil || !it.ExpiresAt.Equal(short.ExpiresAt)) {
			t.Errorf("GET /tokens shows the short token expiring %v, want %v", it.ExpiresAt, short.ExpiresAt)
		}
	}

	// then it works until it expires, and not from then on
	e.mustJSON(t, http.MethodGet, "/api/v1/events?limit=1", short.Token, nil, http.StatusOK, nil)
	clock.Add(time.Minute)
	p := e.problem(t, http.MethodGet, "/api/v1/events?limit=1", short.Token, nil, http.StatusUnauthorized)
	if !strings.Contains(p.Detail, "expired") {
		t.Errorf("401 detail %q, want it to say expired", p.Detail)
	}
	e.mustJSON(t, http.MethodGet, "/api/v1/tickets?limit=1", dated.Token, nil, http.StatusOK, nil)
	clock.Add(time.Hour)
	e.problem(t, http.MethodGet, "/api/v1/tickets?limit=1", dated.Token, nil, http.StatusUnauthorized)

	// and what would not work is refused, naming the field
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"name": "x", "role": " agent "}, "role"},
		{map[string]any{"name": "x", "role": "Agent"}, "role"},
		{map[string]any{"name": "x", "role": "agent", "expires_at": clock.Now().Add(-time.Second).Format(time.RFC3339)}, "expires_at"},
		{map[string]any{"name": "x", "role": "agent", "ttl_seconds": 0}, "ttl_seconds"},
		{map[string]any{"name": "x", "role": "agent", "ttl_seconds": 60, "expires_at": clock.Now().Add(time.Hour).Format(time.RFC3339)}, "ttl_seconds"},
	} {
		p := e.problem(t, http.MethodPost, "/api/v1/tokens", admin, tc.body, http.StatusUnprocessableEntity)
		if len(p.Errors) == 0 || p.Errors[0].Field != tc.field {
			t.Errorf("POST /tokens %v: errors %+v, want %s named", tc.body, p.Errors, tc.field)
		}
	}
	_, raw := e.do(t, http.MethodGet, "/api/v1/tokens", admin, nil)
	if strings.Contains(string(raw), `" agent "`) || strings.Contains(string(raw), `"Agent"`) {
		t.Errorf("a refused role was stored: %s", raw)
	}
}

func TestAuth_FailedAttemptsPerAddressAreLimited(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, backend{"embedded", openEmbedded}, withClock(clock), withAuthFailureLimit(3))
	admin := e.tokens[domain.RoleAdmin]

	// given three wrong tokens from this address, whatever it claims to forward for
	for i := range 3 {
		e.problem(t, http.MethodGet, "/api/v1/tickets", fmt.Sprintf("ldt_guess-%d", i), nil, http.StatusUnauthorized,
			"X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i), "X-Real-Ip", fmt.Sprintf("198.51.100.%d", i))
	}
	// then every request from it is refused for the rest of the minute, a right token too
	for _, tok := range []string{"ldt_guess-3", admin} {
		resp, raw := e.do(t, http.MethodGet, "/api/v1/tickets", tok, nil)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "60" {
			t.Errorf("after 3 failures: %d (Retry-After %q) %s, want 429 with Retry-After 60", resp.StatusCode, resp.Header.Get("Retry-After"), raw)
		}
	}
	// and a request without a token is no guess and counts for nothing
	clock.Add(time.Minute)
	for range 5 {
		e.problem(t, http.MethodGet, "/api/v1/tickets", "", nil, http.StatusUnauthorized)
	}
	// when the minute is over, the right token works again
	e.mustJSON(t, http.MethodGet, "/api/v1/tickets", admin, nil, http.StatusOK, nil)
}

func TestReadyz_SaysNotReadyWithoutTheReason(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	reason := errors.New("postgres store unreachable: dial tcp 10.1.2.3:5432: password authentication failed for user \"ledgerdesk\"")
	srv := httptest.NewServer(New(Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Ready:  func(context.Context) error { return reason },
	}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body.String(), "not ready") {
		t.Errorf("GET /readyz = %d %s, want 503 saying not ready", resp.StatusCode, body.String())
	}
	for _, leak := range []string{"10.1.2.3", "password", "ledgerdesk", "postgres"} {
		if strings.Contains(body.String(), leak) {
			t.Errorf("GET /readyz answers %s, which tells %q", body.String(), leak)
		}
	}
	if !strings.Contains(logs.String(), "password authentication failed") {
		t.Errorf("the log does not have the reason: %s", logs.String())
	}
}
