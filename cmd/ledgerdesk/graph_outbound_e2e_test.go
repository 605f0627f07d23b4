package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	gomail "github.com/emersion/go-message/mail"

	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
)

// TestServe_GraphOutgoingAccountSendsAReply: serve wires the outbound saga
// to Graph. An agent's reply on a ticket leaves a graph outgoing account
// through sendMail at the connection's graph_base_url, with an app-only
// token for that Graph from the connection's identity provider.
func TestServe_GraphOutgoingAccountSendsAReply(t *testing.T) {
	t.Parallel()
	idp := oauthtest.Start(t, oauthtest.Options{})
	type request struct{ path, auth, prefer, contentType, body string }
	var (
		mu   sync.Mutex
		reqs []request
	)
	graph := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, request{r.URL.EscapedPath(), r.Header.Get("Authorization"), r.Header.Get("Prefer"), r.Header.Get("Content-Type"), string(b)})
		mu.Unlock()
		w.Header().Set("request-id", "e2e-1")
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(graph.Close)

	env := map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken}
	srv := startServe(t, env)
	api := apiClient{tb: t, base: srv.URL}
	conn := api.createdID("/api/v1/oauth-connections", map[string]any{"name": "Contoso Graph", "provider": "microsoft365",
		"flow": "app_only", "tenant_id": "contoso.example", "login_base_url": idp.URL, "graph_base_url": graph.URL,
		"client_id": oauthtest.DefaultClientID, "client_secret": oauthtest.DefaultClientSecret})
	api.must(http.MethodPost, "/api/v1/outbound-accounts", map[string]any{"name": "graph", "default": true, "protocol": "graph",
		"mailbox": "support@desk.example", "oauth_connection_id": conn, "sender_address": "support@desk.example"})

	db, err := embedded.OpenDB(filepath.Join(env[envDataDir], "ledgerdesk.db"))
	if err != nil {
		t.Fatal(err)
	}
	store := embedded.New(db, nil)
	t.Cleanup(func() { _ = store.Close(); _ = db.Close() })
	ids, _, _ := seedDirectory(t, store)
	api.must(http.MethodPost, "/api/v1/tickets/"+ids[0]+"/replies", map[string]any{"body": "On it."})

	api.waitEventsFor(domain.OutboundMailSentName, 1, 30*time.Second)
	mu.Lock()
	got := append([]request(nil), reqs...)
	mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("sendMail got %d requests, want 1", len(got))
	}
	r := got[0]
	if r.path != "/v1.0/users/support@desk.example/sendMail" || r.prefer != `IdType="ImmutableId"` || r.contentType != "text/plain" {
		t.Errorf("request %s with Prefer %q and Content-Type %q", r.path, r.prefer, r.contentType)
	}
	raw, err := base64.StdEncoding.DecodeString(r.body)
	if err != nil {
		t.Fatalf("body is not base64: %v", err)
	}
	mr, err := gomail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := mr.Header.Subject()
	irt, _ := mr.Header.MsgIDList("In-Reply-To")
	if subject != "Re: [Ticket#1001] Printer 0" || len(irt) != 1 || irt[0] != "uid-0@example.org" {
		t.Errorf("posted mail: subject %q, In-Reply-To %v; want the ticket's reference and thread", subject, irt)
	}
	// the token is the identity provider's, issued for the Graph at
	// graph_base_url (as for a national cloud)
	resp, err := http.PostForm(idp.URL+"/introspect", url.Values{"token": {r.auth[len("Bearer "):]}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var intro struct {
		Active bool   `json:"active"`
		Scope  string `json:"scope"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&intro); err != nil {
		t.Fatal(err)
	}
	if !intro.Active || intro.Scope != graph.URL+"/.default" {
		t.Errorf("Authorization token introspects as %+v, want an active app-only token for %s", intro, graph.URL)
	}
	var sent []domain.OutboundMailSent
	for _, e := range api.events(domain.OutboundMailSentName) {
		var p domain.OutboundMailSent
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, p)
	}
	if len(sent) != 1 || sent[0].Reply != "202 Accepted (request-id e2e-1)" {
		t.Errorf("OutboundMailSent = %+v, want Graph's 202 with its request-id", sent)
	}

	// The outgoing check of a graph account gets a token, and with
	// send_test_to posts the test mail and answers Graph's reply.
	var accounts struct {
		Items []struct{ ID string } `json:"items"`
	}
	if err := json.Unmarshal(api.must(http.MethodGet, "/api/v1/outbound-accounts", nil), &accounts); err != nil || len(accounts.Items) != 1 {
		t.Fatalf("outbound accounts: %+v, %v", accounts, err)
	}
	check := "/api/v1/outbound-accounts/" + accounts.Items[0].ID + "/check"
	var res struct {
		OK           bool   `json:"ok"`
		TestMailSent bool   `json:"test_mail_sent"`
		ServerReply  string `json:"server_reply"`
	}
	if err := json.Unmarshal(api.must(http.MethodPost, check, nil), &res); err != nil || !res.OK || res.TestMailSent {
		t.Errorf("check = %+v, %v; want ok without a test mail", res, err)
	}
	if err := json.Unmarshal(api.must(http.MethodPost, check, map[string]any{"send_test_to": "agent@desk.example"}), &res); err != nil ||
		!res.OK || !res.TestMailSent || res.ServerReply != "202 Accepted (request-id e2e-1)" {
		t.Errorf("check with send_test_to = %+v, %v; want the test mail sent and Graph's 202", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reqs) != 2 || reqs[1].path != "/v1.0/users/support@desk.example/sendMail" {
		t.Errorf("Graph got %d requests, want the reply and one test mail", len(reqs))
	}
}
