package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

const e2eToken = "e2e-admin-token-0123456789abcdef"

// apiClient talks to a running serve as an admin.
type apiClient struct {
	tb   testing.TB
	base string
}

func (c apiClient) do(method, path string, body any) (int, []byte) {
	c.tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func (c apiClient) must(method, path string, body any) []byte {
	c.tb.Helper()
	code, raw := c.do(method, path, body)
	if code >= 300 {
		c.tb.Fatalf("%s %s = %d %s", method, path, code, raw)
	}
	return raw
}

type loggedEvent struct {
	Position int64           `json:"position"`
	Type     string          `json:"type"`
	Stream   string          `json:"stream"`
	Payload  json.RawMessage `json:"payload"`
}

// events reads the whole global log through GET /api/v1/events.
func (c apiClient) events(types ...string) []loggedEvent {
	c.tb.Helper()
	var out []loggedEvent
	cursor := ""
	for {
		q := url.Values{"limit": {"500"}}
		if cursor != "" {
			q.Set("after", cursor)
		}
		if len(types) > 0 {
			q.Set("type", strings.Join(types, ","))
		}
		var page struct {
			Items      []loggedEvent `json:"items"`
			NextCursor string        `json:"next_cursor"`
		}
		if err := json.Unmarshal(c.must(http.MethodGet, "/api/v1/events?"+q.Encode(), nil), &page); err != nil {
			c.tb.Fatal(err)
		}
		out = append(out, page.Items...)
		if page.NextCursor == "" || len(page.Items) == 0 {
			return out
		}
		cursor = page.NextCursor
	}
}

// waitEvents waits until the log holds at least n events of type typ.
func (c apiClient) waitEvents(typ string, n int) []loggedEvent {
	c.tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		evs := c.events(typ)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("only %d %s events after 60s, want %d; log types: %v", len(evs), typ, n, c.typeCounts())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c apiClient) typeCounts() map[string]int {
	counts := map[string]int{}
	for _, e := range c.events() {
		counts[e.Type]++
	}
	return counts
}

func payload[T any](tb testing.TB, e loggedEvent) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(e.Payload, &v); err != nil {
		tb.Fatal(err)
	}
	return v
}

func e2eMail(from, to, subject, messageID string, extra ...string) []byte {
	h := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n",
		from, to, subject, messageID)
	for _, x := range extra {
		h += x + "\r\n"
	}
	return []byte(h + "\r\nHello, this is the body.\r\n")
}

// TestIntake_EndToEnd drives a running serve on PostgreSQL with mails
// delivered into a real Dovecot and checks what each mail came to mean,
// through the API's global event log.
func TestIntake_EndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot and PostgreSQL")
	}
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "support", "pw1")
	dv.AddUser(t, "replies", "pw2")
	dbURL := pgtest.NewDatabase(t)
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envDatabaseURL: dbURL,
		envSecretKey: strings.Repeat("ef", 32), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}

	host, portStr, _ := net.SplitHostPort(dv.IMAPAddr)
	port, _ := strconv.Atoi(portStr)
	api.must(http.MethodPut, "/api/v1/settings", map[string]any{"reactivation_window_seconds": 3})
	account := func(name, user, pw, address string, extra map[string]any) {
		body := map[string]any{"name": name, "protocol": "imap", "host": host, "port": port, "security": "none",
			"allow_plaintext_auth": true, "username": user, "password": pw, "poll_interval_seconds": 1, "after_import": "delete", "enabled": true,
			"account_address": address, "sender_address": address}
		for k, v := range extra {
			body[k] = v
		}
		api.must(http.MethodPost, "/api/v1/inbound-accounts", body)
	}
	account("support", "support", "pw1", "support@desk.example", map[string]any{"create_unknown_users": true,
		"create_location_from_domain": true, "auto_bundle": true, "auto_reply_template": "default"})
	account("replies only", "replies", "pw2", "replies@desk.example", map[string]any{"no_new_tickets": true})

	// A new ticket, its user and location, and the auto-reply.
	dv.Deliver(t, "support", e2eMail("Erika Muster <erika@customer.example>", "support@desk.example", "Printer broken", "m1@customer.example"))
	created := payload[domain.TicketCreated](t, api.waitEvents(domain.TicketCreatedName, 1)[0])
	ref := fmt.Sprintf("[Ticket#%d]", created.Number)
	autoReply := payload[domain.AutoReplyQueued](t, api.waitEvents(domain.AutoReplyQueuedName, 1)[0])
	if autoReply.TicketID != created.TicketID || !strings.Contains(autoReply.Subject, ref) {
		t.Errorf("auto-reply = %+v, want one for ticket %s with %s in the subject", autoReply, created.TicketID, ref)
	}

	// A reply by subject reference and one by In-Reply-To to our auto-reply.
	dv.Deliver(t, "support", e2eMail("erika@customer.example", "support@desk.example", "RE: AW: "+ref+" Printer broken", "m2@customer.example"))
	dv.Deliver(t, "support", e2eMail("erika@customer.example", "support@desk.example", "Thanks", "m3@customer.example",
		"In-Reply-To: <"+autoReply.MessageID+">"))
	for _, e := range api.waitEvents(domain.MailAppendedName, 2) {
		if got := payload[domain.MailAppended](t, e); got.TicketID != created.TicketID {
			t.Errorf("a reply was appended to ticket %s, want %s", got.TicketID, created.TicketID)
		}
	}

	// Two mails of one sender with one subject in one polling interval: one
	// ticket, the second bundled into it.
	dv.DeliverMany(t, "support", [][]byte{
		e2eMail("Max <max@other.example>", "support@desk.example", "Invoice question", "m4@other.example"),
		e2eMail("Max <max@other.example>", "support@desk.example", "Invoice question", "m5@other.example"),
	})
	bundled := payload[domain.MailBundled](t, api.waitEvents(domain.MailBundledName, 1)[0])
	tickets := api.waitEvents(domain.TicketCreatedName, 2)
	if second := payload[domain.TicketCreated](t, tickets[1]); bundled.TicketID != second.TicketID {
		t.Errorf("bundled into %s, want the invoice ticket %s", bundled.TicketID, second.TicketID)
	}

	// An agent closes the ticket: a reply inside the reactivation window
	// reactivates it; after the window it gets the ticket-closed error mail.
	store := openStoreForTest(t, dbURL)
	cmds := ticketing.NewCommands(store, domain.MessageIDKey{}) // it only closes: no Message-ID to key
	if _, err := cmds.Handle(context.Background(), created.TicketID, domain.CloseTicket{Actor: "token:e2e-agent", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	dv.Deliver(t, "support", e2eMail("erika@customer.example", "support@desk.example", "Re: "+ref+" again", "m6@customer.example"))
	api.waitEvents(domain.TicketReactivatedName, 1)
	if _, err := cmds.Handle(context.Background(), created.TicketID, domain.CloseTicket{Actor: "token:e2e-agent", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // past the 3 s window
	dv.Deliver(t, "support", e2eMail("erika@customer.example", "support@desk.example", "Re: "+ref+" too late", "m7@customer.example"))
	closedMail := payload[domain.ErrorMailQueued](t, api.waitEvents(domain.ErrorMailQueuedName, 1)[0])
	if closedMail.Template != domain.TemplateTicketClosed || closedMail.TicketID != created.TicketID {
		t.Errorf("error mail = %+v, want the ticket_closed template for ticket %s", closedMail, created.TicketID)
	}

	// A reply-only account rejects a mail without a reference (error mail)
	// and takes one with a valid reference.
	dv.Deliver(t, "replies", e2eMail("newbie@third.example", "replies@desk.example", "Hello?", "m8@third.example"))
	errMails := api.waitEvents(domain.ErrorMailQueuedName, 2)
	if got := payload[domain.ErrorMailQueued](t, errMails[1]); got.Template != domain.TemplateError || got.To.Email != "newbie@third.example" {
		t.Errorf("reply-only error mail = %+v, want the error template to newbie@third.example", got)
	}
	rejected := api.waitEvents(domain.MailRejectedName, 2)
	if got := payload[domain.MailRejected](t, rejected[len(rejected)-1]); got.TicketID != "" {
		t.Errorf("reply-only rejection names ticket %q, want none", got.TicketID)
	}

	// Bounces never open a ticket: one about our auto-reply is recorded on
	// its ticket, a foreign one is skipped.
	dv.Deliver(t, "support", dsn("dsn1@mx.example", autoReply.MessageID))
	dv.Deliver(t, "support", dsn("dsn2@mx.example", "someone-else@elsewhere.example"))
	failure := payload[domain.DeliveryFailureRecorded](t, api.waitEvents(domain.DeliveryFailureRecordedName, 1)[0])
	if failure.TicketID != created.TicketID {
		t.Errorf("delivery failure recorded on %s, want %s", failure.TicketID, created.TicketID)
	}
	waitSkipped(t, api, domain.SkipBounce)

	counts := api.typeCounts()
	t.Logf("event log after the scenario: %v", counts)
	if counts[domain.TicketCreatedName] != 2 {
		t.Errorf("%d tickets created, want 2 (no ticket from replies, bundles, rejections or bounces); log: %v", counts[domain.TicketCreatedName], counts)
	}
	users := map[string]int{}
	for _, e := range api.events(domain.UserAutoCreatedName) {
		users[payload[domain.UserAutoCreated](t, e).Email]++
	}
	if users["erika@customer.example"] != 1 || users["max@other.example"] != 1 {
		t.Errorf("users auto-created = %v, want erika and max once each", users)
	}
	locations := map[string]int{}
	for _, e := range api.events(domain.LocationAutoCreatedName) {
		locations[payload[domain.LocationAutoCreated](t, e).Domain]++
	}
	if locations["customer.example"] != 1 || locations["other.example"] != 1 {
		t.Errorf("locations auto-created = %v, want customer.example and other.example once each", locations)
	}
	if dv.Count(t, "support") != 0 || dv.Count(t, "replies") != 0 {
		t.Errorf("mailboxes not emptied: support %d, replies %d", dv.Count(t, "support"), dv.Count(t, "replies"))
	}
}

func waitSkipped(t *testing.T, api apiClient, code string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range api.events(domain.MailSkippedName) {
			if payload[domain.MailSkipped](t, e).Code == code {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no MailSkipped with code %s within 60s; log: %v", code, api.typeCounts())
}

// dsn is a delivery status notification (RFC 3464) about the message with
// Message-ID bounced.
func dsn(messageID, bounced string) []byte {
	return []byte("From: Mail Delivery System <MAILER-DAEMON@mx.example>\r\nTo: support@desk.example\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <" + messageID + ">\r\nReturn-Path: <>\r\n" +
		"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n" +
		"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n" +
		"Final-Recipient: rfc822; gone@customer.example\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: support@desk.example\r\nTo: gone@customer.example\r\n" +
		"Subject: Re: something\r\nMessage-ID: <" + bounced + ">\r\n\r\n--b--\r\n")
}

func openStoreForTest(t *testing.T, dbURL string) *postgres.Store {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := postgres.New(pool, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
