package main

import (
	"bytes"
	"net/http"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// TestGraph_MailAutoReplyAndAnswerRoundTrip is Exchange Online through
// Graph both ways, as issue 15 asks: serve with an app-only connection on
// the fake identity provider and the fake Graph; a customer's mail becomes
// a ticket, its auto-reply leaves through sendMail with our threading
// headers, and the customer's answer to it lands on the same ticket.
func TestGraph_MailAutoReplyAndAnswerRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with serve")
	}
	t.Parallel()
	const desk = "support@desk.example"
	idp := oauthtest.Start(t, oauthtest.Options{})
	graph := graphtest.Start(t, graphtest.Options{CheckToken: graphtest.Introspection(idp.URL + "/introspect")})
	graph.AddMailbox(desk)

	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}
	conn := api.createdID("/api/v1/oauth-connections", map[string]any{"name": "Contoso 365", "provider": "microsoft365",
		"flow": "app_only", "tenant_id": "contoso.example", "login_base_url": idp.URL, "graph_base_url": graph.URL,
		"client_id": oauthtest.DefaultClientID, "client_secret": oauthtest.DefaultClientSecret})
	api.must(http.MethodPost, "/api/v1/outbound-accounts", map[string]any{"name": "graph out", "default": true, "protocol": "graph",
		"mailbox": desk, "oauth_connection_id": conn, "sender_address": desk, "sender_name": "Desk"})
	api.createdID("/api/v1/inbound-accounts", map[string]any{"name": "support", "protocol": "graph", "mailbox": desk,
		"oauth_connection_id": conn, "account_address": desk, "sender_address": desk, "auto_reply_template": "default",
		"poll_interval_seconds": 1, "enabled": true})

	graph.AddMessages(desk, "Inbox", [][]byte{e2eMail("Erika Muster <erika@customer.example>", desk, "Printer broken",
		"rt1@customer.example")})
	created := payload[domain.TicketCreated](t, api.waitEvents(domain.TicketCreatedName, 1)[0])

	var sent [][]byte
	for deadline := time.Now().Add(60 * time.Second); len(sent) == 0; sent = graph.Sent(desk) {
		if time.Now().After(deadline) {
			t.Fatalf("no auto-reply through sendMail; log types: %v", api.typeCounts())
		}
		time.Sleep(100 * time.Millisecond)
	}
	reply, err := mail.ReadMessage(bytes.NewReader(sent[0]))
	if err != nil {
		t.Fatalf("the sent auto-reply does not parse: %v", err)
	}
	h := reply.Header
	if h.Get("In-Reply-To") != "<rt1@customer.example>" || !strings.Contains(h.Get("References"), "<rt1@customer.example>") ||
		h.Get("Auto-Submitted") != "auto-replied" || !strings.Contains(h.Get("Subject"), created.Reference) ||
		!strings.Contains(h.Get("To"), "erika@customer.example") || h.Get("Message-Id") == "" {
		t.Errorf("auto-reply headers: %v", h)
	}
	if graph.Count(desk, "SentItems") != 1 {
		t.Errorf("Sent Items holds %d, want the auto-reply", graph.Count(desk, "SentItems"))
	}
	api.waitEvents(domain.OutboundMailSentName, 1)

	// The customer answers the auto-reply without the reference in the
	// subject: In-Reply-To alone finds the ticket.
	graph.AddMessages(desk, "Inbox", [][]byte{e2eMail("erika@customer.example", desk, "Re: thanks", "rt2@customer.example",
		"In-Reply-To: "+h.Get("Message-Id"))})
	appended := payload[domain.MailAppended](t, api.waitEvents(domain.MailAppendedName, 1)[0])
	if appended.TicketID != created.TicketID {
		t.Errorf("the answer went to ticket %s, want %s", appended.TicketID, created.TicketID)
	}
	if n := len(api.events(domain.TicketCreatedName)); n != 1 {
		t.Errorf("%d tickets, want the one", n)
	}
	if n := len(graph.WithoutImmutableID()); n != 0 {
		t.Errorf("%d Graph requests without Prefer: IdType=\"ImmutableId\"", n)
	}
}
