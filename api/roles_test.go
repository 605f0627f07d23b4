package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// recipe makes a request to a route that succeeds for a role allowed to use
// it: the concrete path and body (resources it needs are created first).
type recipe func(tb testing.TB, e *testEnv) (path string, body any)

var seq atomic.Int64

func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

func withAccount(suffix string) recipe {
	return func(tb testing.TB, e *testEnv) (string, any) {
		return "/api/v1/inbound-accounts/" + e.createAccount(tb, uniq("acc")) + suffix, nil
	}
}

func withConnection(suffix string) recipe {
	return func(tb testing.TB, e *testEnv) (string, any) {
		return "/api/v1/oauth-connections/" + e.createConnection(tb, connection(uniq("conn"))) + suffix, nil
	}
}

// recipes has one entry per route of the route table; the test fails for a
// route without one, so a new route cannot go untested.
var recipes = map[string]recipe{
	"GET /api/v1/openapi.json": func(testing.TB, *testEnv) (string, any) { return "/api/v1/openapi.json", nil },
	// The env's streams end at once (withEndedStreams), so a 200 answer ends.
	"GET /api/v1/stream": func(testing.TB, *testEnv) (string, any) { return "/api/v1/stream", nil },
	"GET /metrics":       func(testing.TB, *testEnv) (string, any) { return "/metrics", nil },
	"POST /api/v1/tokens": func(testing.TB, *testEnv) (string, any) {
		return "/api/v1/tokens", map[string]string{"name": uniq("tok"), "role": "analyst"}
	},
	"GET /api/v1/tokens": func(testing.TB, *testEnv) (string, any) { return "/api/v1/tokens", nil },
	"DELETE /api/v1/tokens/:id": func(tb testing.TB, e *testEnv) (string, any) {
		var out struct {
			ID string `json:"id"`
		}
		e.mustJSON(tb, http.MethodPost, "/api/v1/tokens", bootstrapToken, map[string]string{"name": uniq("tok"), "role": "agent"}, http.StatusCreated, &out)
		return "/api/v1/tokens/" + out.ID, nil
	},
	"POST /api/v1/inbound-accounts": func(testing.TB, *testEnv) (string, any) {
		return "/api/v1/inbound-accounts", account(uniq("new"))
	},
	"GET /api/v1/inbound-accounts":        func(testing.TB, *testEnv) (string, any) { return "/api/v1/inbound-accounts", nil },
	"GET /api/v1/inbound-accounts/:id":    withAccount(""),
	"DELETE /api/v1/inbound-accounts/:id": withAccount(""),
	"PUT /api/v1/inbound-accounts/:id": func(tb testing.TB, e *testEnv) (string, any) {
		p, _ := withAccount("")(tb, e)
		// another host needs the password again (domain/secretbinding.go)
		return p, map[string]any{"host": "mail.example.org", "password": "s3cret"}
	},
	"GET /api/v1/inbound-accounts/:id/history": withAccount("/history"),
	"POST /api/v1/inbound-accounts/:id/check":  withAccount("/check"),
	"POST /api/v1/inbound-accounts/:id/poll":   withAccount("/poll"),
	"POST /api/v1/oauth-connections": func(testing.TB, *testEnv) (string, any) {
		return "/api/v1/oauth-connections", connection(uniq("conn"))
	},
	"GET /api/v1/oauth-connections":        func(testing.TB, *testEnv) (string, any) { return "/api/v1/oauth-connections", nil },
	"GET /api/v1/oauth-connections/:id":    withConnection(""),
	"DELETE /api/v1/oauth-connections/:id": withConnection(""),
	"PUT /api/v1/oauth-connections/:id": func(tb testing.TB, e *testEnv) (string, any) {
		p, _ := withConnection("")(tb, e)
		return p, map[string]any{"description": uniq("changed")}
	},
	"GET /api/v1/oauth-connections/:id/history":    withConnection("/history"),
	"POST /api/v1/oauth-connections/:id/authorize": withConnection("/authorize"),
	"GET /api/v1/presets":                          func(testing.TB, *testEnv) (string, any) { return "/api/v1/presets", nil },
	"GET /api/v1/settings":                         func(testing.TB, *testEnv) (string, any) { return "/api/v1/settings", nil },
	"PUT /api/v1/settings": func(testing.TB, *testEnv) (string, any) {
		return "/api/v1/settings", map[string]any{"error_folder": uniq("Errors")}
	},
	"GET /api/v1/mailboxes": func(testing.TB, *testEnv) (string, any) { return "/api/v1/mailboxes", nil },
	"GET /api/v1/events":    func(testing.TB, *testEnv) (string, any) { return "/api/v1/events?limit=5", nil },
	"GET /api/v1/tickets": func(tb testing.TB, e *testEnv) (string, any) {
		_, pos := e.seedTicket(tb, "")
		return fmt.Sprintf("/api/v1/tickets?limit=5&min_position=%d", pos), nil
	},
	"GET /api/v1/tickets/:id":         withTicket(""),
	"GET /api/v1/tickets/:id/history": withTicket("/history"),
	"POST /api/v1/tickets/:id/status": withTicketBody("/status", map[string]any{"status": "in_progress"}),
	"POST /api/v1/tickets/:id/assign": func(tb testing.TB, e *testEnv) (string, any) {
		id, _ := e.seedTicket(tb, "")
		return "/api/v1/tickets/" + id + "/assign", map[string]any{"resource": e.createResource(tb, uniq("team"))}
	},
	"POST /api/v1/tickets/:id/notes":   withTicketBody("/notes", map[string]any{"text": "called the customer"}),
	"POST /api/v1/tickets/:id/replies": withTicketBody("/replies", map[string]any{"body": "We are on it."}),
	"GET /api/v1/users": func(tb testing.TB, e *testEnv) (string, any) {
		_, pos := e.seedUser(tb)
		return fmt.Sprintf("/api/v1/users?min_position=%d", pos), nil
	},
	"GET /api/v1/users/:id": func(tb testing.TB, e *testEnv) (string, any) {
		id, pos := e.seedUser(tb)
		return fmt.Sprintf("/api/v1/users/%s?min_position=%d", id, pos), nil
	},
	"GET /api/v1/locations": func(tb testing.TB, e *testEnv) (string, any) {
		pos := e.seedLocation(tb)
		return fmt.Sprintf("/api/v1/locations?min_position=%d", pos), nil
	},
}

func TestRoutes_EveryRoleOnEveryRoute(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			// It sends wrong tokens to every route on purpose: no limit
			// (TestAuth_FailedAttemptsPerAddressAreLimited tests it).
			e := newEnv(t, b, withAuthFailureLimit(-1), withEndedStreams(t), withMetrics(t))
			for _, r := range (&server{}).routes() {
				key := r.Method + " " + r.Path
				rec, ok := recipes[key]
				if !ok {
					t.Errorf("no request recipe for route %s: add one to recipes", key)
					continue
				}
				t.Run(key, func(t *testing.T) {
					path, body := rec(t, e)
					if resp, raw := e.do(t, r.Method, path, "", body); resp.StatusCode != http.StatusUnauthorized {
						t.Errorf("without a token: %d %s, want 401", resp.StatusCode, raw)
					} else if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("without a token: WWW-Authenticate %q, want a Bearer challenge", resp.Header.Get("WWW-Authenticate"))
					}
					if resp, raw := e.do(t, r.Method, path, "ldt_unknown", body); resp.StatusCode != http.StatusUnauthorized {
						t.Errorf("unknown token: %d %s, want 401", resp.StatusCode, raw)
					}
					if resp, raw := e.do(t, r.Method, path, "Basic Zm9vOmJhcg==", body); resp.StatusCode != http.StatusUnauthorized {
						t.Errorf("garbage token: %d %s, want 401", resp.StatusCode, raw)
					}
					if resp, raw := e.do(t, r.Method, path, "", body, "Authorization", "Basic "+e.tokens[domain.RoleAdmin]); resp.StatusCode != http.StatusUnauthorized {
						t.Errorf("a token under another scheme: %d %s, want 401", resp.StatusCode, raw)
					}
					for _, role := range domain.Roles {
						allowed := slices.Contains(r.Roles, role)
						if allowed {
							// a fresh resource per allowed call: deletes consume theirs
							path, body = rec(t, e)
						}
						resp, raw := e.do(t, r.Method, path, e.tokens[role], body)
						switch {
						case allowed && (resp.StatusCode < 200 || resp.StatusCode > 299):
							t.Errorf("role %s: %d %s, want 2xx", role, resp.StatusCode, raw)
						case !allowed && resp.StatusCode != http.StatusForbidden:
							t.Errorf("role %s: %d %s, want 403", role, resp.StatusCode, raw)
						}
					}
				})
			}
		})
	}
}

func TestTokens_IssueListRevoke(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin := e.tokens[domain.RoleAdmin]

			// given a token issued by an admin token (not the bootstrap one)
			var issued struct {
				ID, Name, Role, Token, IssuedBy string
				Position                        int64
			}
			resp := e.mustJSON(t, http.MethodPost, "/api/v1/tokens", admin, map[string]string{"name": "reporting", "role": "auditor"}, http.StatusCreated, &issued)
			if !strings.HasPrefix(issued.Token, "ldt_") || issued.ID == "" || issued.Position <= 0 {
				t.Fatalf("issued = %+v, want an ldt_ token, an id and a position", issued)
			}
			if got := resp.Header.Get(HeaderPosition); got != fmt.Sprint(issued.Position) {
				t.Errorf("%s = %q, want %d", HeaderPosition, got, issued.Position)
			}

			// then it works, and the list shows it without hash or token
			e.mustJSON(t, http.MethodGet, "/api/v1/events?limit=1", issued.Token, nil, http.StatusOK, nil)
			e.mustJSON(t, http.MethodGet, "/api/v1/events?limit=1", "", nil, http.StatusOK, nil, "Authorization", "bearer "+issued.Token)
			_, raw := e.do(t, http.MethodGet, "/api/v1/tokens", admin, nil)
			if !strings.Contains(string(raw), `"reporting"`) {
				t.Errorf("GET /tokens = %s, want the token named reporting", raw)
			}
			if strings.Contains(string(raw), issued.Token) || strings.Contains(string(raw), HashToken(issued.Token)) || strings.Contains(string(raw), "hash") {
				t.Errorf("GET /tokens = %s, shows a token or hash", raw)
			}

			// when it is revoked, then it stops working at once
			e.mustJSON(t, http.MethodDelete, "/api/v1/tokens/"+issued.ID, admin, nil, http.StatusOK, nil)
			p := e.problem(t, http.MethodGet, "/api/v1/events?limit=1", issued.Token, nil, http.StatusUnauthorized)
			if !strings.Contains(p.Detail, "revoked") {
				t.Errorf("problem detail %q, want it to say unknown or revoked", p.Detail)
			}
			// and revoking it again is a 404
			e.problem(t, http.MethodDelete, "/api/v1/tokens/"+issued.ID, admin, nil, http.StatusNotFound)

			// and invalid input names the field
			p = e.problem(t, http.MethodPost, "/api/v1/tokens", admin, map[string]string{"name": "x", "role": "root"}, http.StatusUnprocessableEntity)
			if len(p.Errors) != 1 || p.Errors[0].Field != "role" {
				t.Errorf("errors = %+v, want one for role", p.Errors)
			}
		})
	}
}
