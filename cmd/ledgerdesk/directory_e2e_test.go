package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// TestDirectory_MemberRuleEndToEnd drives serve on PostgreSQL with mail
// through a real Dovecot and notifications through an SMTP server: with
// no_status_change_for_resource_members on, a member of the ticket's
// resource (decided by the address of a user an admin added) writes and the
// mail is appended with the status left alone and nobody told; the customer
// writes and the ticket waits for an agent again, and the resource's members
// get the "customer answered" mail through the resource's outgoing account.
func TestDirectory_MemberRuleEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot, SMTP and PostgreSQL")
	}
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "support", "pw1")
	smtp := smtptest.Start(t, smtptest.Options{})
	dbURL := pgtest.NewDatabase(t)
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envDatabaseURL: dbURL,
		envSecretKey: strings.Repeat("cd", 32), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}

	api.must(http.MethodPut, "/api/v1/settings", map[string]any{"no_status_change_for_resource_members": true, "customer_answered_mails": true})
	smtpHost, smtpPort := hostPort(t, smtp.Addr)
	// The default account is not the team's: the notification must go out
	// through the one the resource names.
	api.must(http.MethodPost, "/api/v1/outbound-accounts", map[string]any{"name": "default", "default": true, "host": "127.0.0.1",
		"port": 9, "security": "none", "sender_address": "noreply@desk.example"})
	teamOut := api.createdID("/api/v1/outbound-accounts", map[string]any{"name": "team", "host": smtpHost, "port": smtpPort,
		"security": "none", "sender_address": "team@desk.example", "sender_name": "1st level"})
	anna := api.createdID("/api/v1/users", map[string]any{"user_name": "anna", "email": "Anna@Desk.example", "name": "Anna Agent"})
	team := api.createdID("/api/v1/resources", map[string]any{"name": "1st level", "members": []string{anna}, "outbound_account_id": teamOut})

	imapHost, imapPort := hostPort(t, dv.IMAPAddr)
	api.must(http.MethodPost, "/api/v1/inbound-accounts", map[string]any{"name": "support", "protocol": "imap", "host": imapHost,
		"port": imapPort, "security": "none", "allow_plaintext_auth": true, "username": "support", "password": "pw1",
		"poll_interval_seconds": 1, "after_import": "delete", "enabled": true, "account_address": "support@desk.example",
		"create_unknown_users": true, "resource": team})

	dv.Deliver(t, "support", e2eMail("Erika Muster <erika@customer.example>", "support@desk.example", "Printer broken", "d1@customer.example"))
	created := payload[domain.TicketCreated](t, api.waitEvents(domain.TicketCreatedName, 1)[0])
	if created.ResourceID != team {
		t.Fatalf("ticket's resource = %q, want the account's %q", created.ResourceID, team)
	}
	ref := fmt.Sprintf("[Ticket#%d]", created.Number)

	// One directory: the address of the customer, auto-created by the
	// intake, cannot be given to a user an admin adds.
	if code, raw := api.do(http.MethodPost, "/api/v1/users", map[string]any{"user_name": "erika2", "email": "ERIKA@customer.example"}); code != http.StatusConflict {
		t.Errorf("a user with the auto-created customer's address = %d %s, want 409", code, raw)
	}

	// A member answers (the address in another letter case): appended, the
	// status stays, nobody is told.
	dv.Deliver(t, "support", e2eMail("anna@desk.EXAMPLE", "support@desk.example", "Re: "+ref+" Printer broken", "d2@desk.example"))
	unchanged := payload[domain.StatusLeftUnchanged](t, api.waitEvents(domain.StatusLeftUnchangedName, 1)[0])
	if unchanged.Code != domain.UnchangedResourceMember || unchanged.TicketID != created.TicketID || unchanged.Status != domain.StatusNew {
		t.Errorf("member's mail: %+v, want the status new left unchanged as a resource member's", unchanged)
	}
	appended := api.waitEvents(domain.MailAppendedName, 1)
	if got := payload[domain.MailAppended](t, appended[0]); got.TicketID != created.TicketID {
		t.Errorf("member's mail appended to %s, want %s", got.TicketID, created.TicketID)
	}

	// The customer answers: the ticket waits for an agent and the members
	// are told, through the team's account.
	dv.Deliver(t, "support", e2eMail("erika@customer.example", "support@desk.example", "Re: "+ref+" Printer broken", "d3@customer.example"))
	changed := payload[domain.TicketStatusChanged](t, api.waitEvents(domain.TicketStatusChangedName, 1)[0])
	if changed.To != domain.StatusConfirmedUnread {
		t.Errorf("customer's mail changed the status to %s, want confirmed_unread", changed.To)
	}
	sent := payload[domain.OutboundMailSent](t, api.waitEvents(domain.OutboundMailSentName, 1)[0])
	if sent.Kind != domain.AutoMailCustomerAnswered || sent.AccountID != teamOut || len(sent.To) != 1 || sent.To[0] != "anna@desk.example" {
		t.Errorf("sent %+v, want the customer-answered mail to anna@desk.example through %s", sent, teamOut)
	}
	if n := smtp.WaitCount(1, 10*time.Second); n != 1 {
		t.Fatalf("the SMTP server got %d mails, want 1", n)
	}
	got := smtp.Received()[0]
	if len(got.To) != 1 || got.To[0] != "anna@desk.example" || got.From != "team@desk.example" ||
		!strings.Contains(string(got.Data), ref) || !strings.Contains(string(got.Data), "Erika Muster answered on ticket") {
		t.Errorf("notification: from %s to %v:\n%s", got.From, got.To, got.Data)
	}
	counts := api.typeCounts()
	if counts[domain.NotificationQueuedName] != 1 || counts[domain.StatusLeftUnchangedName] != 1 || counts[domain.MailAppendedName] != 2 {
		t.Errorf("log: %v, want one notification (the customer's answer), one status left unchanged (the member's), two mails appended", counts)
	}

	// A removed requester keeps the ticket, shown as removed.
	removed := struct {
		Position int64 `json:"position"`
	}{}
	if err := json.Unmarshal(api.must(http.MethodDelete, "/api/v1/users/"+created.Requester.UserID, nil), &removed); err != nil {
		t.Fatal(err)
	}
	var ticket struct {
		RequesterUserID  string `json:"requester_user_id"`
		RequesterRemoved bool   `json:"requester_removed"`
	}
	if err := json.Unmarshal(api.must(http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s?min_position=%d", created.TicketID, removed.Position), nil), &ticket); err != nil {
		t.Fatal(err)
	}
	if ticket.RequesterUserID != created.Requester.UserID || !ticket.RequesterRemoved {
		t.Errorf("ticket after its requester was removed: %+v, want the requester kept, shown as removed", ticket)
	}
}
