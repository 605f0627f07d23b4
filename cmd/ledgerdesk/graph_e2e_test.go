package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// TestGraph_importsAndChecksThroughTheAPI runs serve on the embedded store
// with an app-only Microsoft 365 connection whose login and Graph base URLs
// point at the fakes: a Graph account's mails (its folder and a subfolder)
// become tickets and are moved as after_import says; check answers ok, and
// for a mailbox the app may not read, Graph's words, which the mailbox
// status shows after a poll too.
func TestGraph_importsAndChecksThroughTheAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with serve")
	}
	t.Parallel()
	idp := oauthtest.Start(t, oauthtest.Options{})
	graph := graphtest.Start(t, graphtest.Options{CheckToken: graphtest.Introspection(idp.URL + "/introspect")})
	graph.AddMailbox("support@desk.example")
	graph.AddMailbox("sales@desk.example")
	graph.Deny("sales@desk.example")
	for i := range 3 {
		graph.AddMessages("support@desk.example", "Inbox", [][]byte{e2eMail(fmt.Sprintf("customer%d@example.com", i),
			"support@desk.example", fmt.Sprintf("printer %d", i), fmt.Sprintf("g%d@example.com", i))})
	}
	graph.AddMessages("support@desk.example", "Inbox/Escalations", [][]byte{e2eMail("boss@example.com", "support@desk.example",
		"escalated", "esc@example.com")})

	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}
	conn := api.createdID("/api/v1/oauth-connections", map[string]any{"name": "Contoso 365", "provider": "microsoft365",
		"flow": "app_only", "tenant_id": "contoso.example", "login_base_url": idp.URL, "graph_base_url": graph.URL,
		"client_id": oauthtest.DefaultClientID, "client_secret": oauthtest.DefaultClientSecret})
	account := func(name, mailbox string, enabled bool) string {
		return api.createdID("/api/v1/inbound-accounts", map[string]any{"name": name, "protocol": "graph", "mailbox": mailbox,
			"oauth_connection_id": conn, "subfolders": []string{"Inbox/Escalations"}, "after_import": "move",
			"move_folder": "Inbox/Imported", "account_address": mailbox, "poll_interval_seconds": 1, "enabled": enabled})
	}
	support := account("support", "support@desk.example", false)
	sales := account("sales", "sales@desk.example", true)

	var check struct {
		OK          bool   `json:"ok"`
		Error       string `json:"error"`
		ServerReply string `json:"server_reply"`
	}
	if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/inbound-accounts/"+support+"/check", nil), &check); err != nil || !check.OK {
		t.Fatalf("check of the support mailbox = %+v, %v; want ok", check, err)
	}
	if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/inbound-accounts/"+sales+"/check", nil), &check); err != nil ||
		check.OK || check.ServerReply != "ErrorAccessDenied: Access is denied. Check credentials and try again." {
		t.Errorf("check of a denied mailbox = %+v, %v; want Graph's words", check, err)
	}

	api.must(http.MethodPut, "/api/v1/inbound-accounts/"+support, map[string]any{"enabled": true})
	api.waitEvents(domain.TicketCreatedName, 4)
	deadline := time.Now().Add(30 * time.Second)
	for graph.Count("support@desk.example", "Inbox/Imported") != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("Inbox/Imported holds %d mails, want 4", graph.Count("support@desk.example", "Inbox/Imported"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := graph.Count("support@desk.example", "Inbox") + graph.Count("support@desk.example", "Inbox/Escalations"); n != 0 {
		t.Errorf("%d mails left in the polled folders", n)
	}
	if got := api.typeCounts()[domain.MailReceivedName]; got != 4 {
		t.Errorf("%d MailReceived, want 4", got)
	}

	for deadline := time.Now().Add(30 * time.Second); ; {
		var rows struct {
			Items []struct {
				Name        string `json:"name"`
				LastError   string `json:"last_error"`
				ServerReply string `json:"server_reply"`
			} `json:"items"`
		}
		if err := json.Unmarshal(api.must(http.MethodGet, "/api/v1/mailboxes", nil), &rows); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range rows.Items {
			if r.Name == "sales" && r.ServerReply == "ErrorAccessDenied: Access is denied. Check credentials and try again." &&
				strings.Contains(r.LastError, "ErrorAccessDenied") {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the denied mailbox's status never showed Graph's words: %+v", rows.Items)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(graph.WithoutImmutableID()); n != 0 {
		t.Errorf("%d requests without Prefer: IdType=\"ImmutableId\"", n)
	}
}
