package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/faultproxy"
)

// deliveryRow is an account's row of GET /api/v1/mailboxes, as far as push
// goes.
type deliveryRow struct {
	AccountID       string     `json:"account_id"`
	Delivery        string     `json:"delivery"`
	DeliverySince   *time.Time `json:"delivery_since"`
	LastPushError   string     `json:"last_push_error"`
	LastPushErrorAt *time.Time `json:"last_push_error_at"`
}

func (c apiClient) delivery(id string) deliveryRow {
	c.tb.Helper()
	var list struct{ Items []deliveryRow }
	if err := json.Unmarshal(c.must(http.MethodGet, "/api/v1/mailboxes", nil), &list); err != nil {
		c.tb.Fatal(err)
	}
	for _, r := range list.Items {
		if r.AccountID == id {
			return r
		}
	}
	return deliveryRow{AccountID: id}
}

// waitMailbox waits until the account's mailbox row satisfies ok.
func (c apiClient) waitDelivery(id, what string, ok func(deliveryRow) bool) deliveryRow {
	c.tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.delivery(id)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("mailbox %s: %s not seen after 30s; row: %+v", id, what, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitConnections waits until user has want IMAP connections on dv.
func waitConnections(tb testing.TB, dv *dovecottest.Server, user string, want int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := dv.Connections(tb, user, "imap")
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s has %d IMAP connections after 30s, want %d: %v", user, n, want, dv.Who(tb))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// createIMAPAccount creates an hourly-polled IMAP account for user at
// addr (a Dovecot's IMAPAddr, or a proxy to it) and returns its id; extra
// fields override the defaults.
func createIMAPAccount(t *testing.T, api apiClient, addr, name, user, password string, extra map[string]any) string {
	t.Helper()
	host, port := hostPort(t, addr)
	body := map[string]any{"name": name, "protocol": "imap", "host": host, "port": port, "security": "none",
		"allow_plaintext_auth": true, "username": user, "password": password, "poll_interval_seconds": 3600,
		"after_import": "delete", "enabled": true}
	for k, v := range extra {
		body[k] = v
	}
	var created struct{ ID string }
	raw := api.must(http.MethodPost, "/api/v1/inbound-accounts", body)
	if err := json.Unmarshal(raw, &created); err != nil || created.ID == "" {
		t.Fatalf("create account: %s", raw)
	}
	return created.ID
}

// TestServe_PushedMailBecomesATicketWithoutAPoll: an account polled only
// hourly keeps an IDLE connection (renewed every second here), so a mail
// delivered later becomes a ticket without a poll being due; when Dovecot
// kicks the connection it comes back and mail still arrives; with push
// off there is no IDLE connection and the mail waits for a poll.
func TestServe_PushedMailBecomesATicketWithoutAPoll(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot")
	}
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "pushed", "pw-pushed")
	dv.AddUser(t, "polled", "pw-polled")
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken, envIdleRenewal: "1s"})
	api := apiClient{tb: t, base: srv.URL}
	proxy := faultproxy.Start(t, dv.IMAPAddr) // counts what the client sends while idle

	pushed := createIMAPAccount(t, api, proxy.Addr(), "pushed", "pushed", "pw-pushed", nil)
	row := api.waitDelivery(pushed, "pushed", func(r deliveryRow) bool { return r.Delivery == "pushed" })
	if row.DeliverySince == nil {
		t.Errorf("pushed account's row = %+v, want delivery_since", row)
	}
	// The start poll (its own connection) is over; the IDLE connection stays.
	api.waitEvents("MailboxPolled", 1)
	waitConnections(t, dv, "pushed", 1)
	before := proxy.ClientBytes()
	time.Sleep(2500 * time.Millisecond) // two IDLE renewals: DONE, IDLE
	if sent := proxy.ClientBytes() - before; sent == 0 {
		t.Errorf("the IDLE connection sent nothing in 2.5s with %s=1s: IDLE was not renewed", envIdleRenewal)
	}

	delivered := time.Now()
	dv.Deliver(t, "pushed", e2eMail("ann@customer.example", "pushed@desk.example", "pushed one", "push1@customer.example"))
	api.waitEvents("TicketCreated", 1)
	t.Logf("figures: pushed mail delivered to TicketCreated in the log in %v (poll interval 1h)", time.Since(delivered).Round(time.Millisecond))
	waitCount(t, dv, "pushed", 0)

	// A kicked IDLE connection is re-established, and the next mail is
	// pushed as well.
	dv.Kick(t, "pushed")
	row = api.waitDelivery(pushed, "the kick as the last push error, pushed again",
		func(r deliveryRow) bool { return r.LastPushError != "" && r.Delivery == "pushed" })
	if row.LastPushErrorAt == nil || row.DeliverySince == nil || row.DeliverySince.Before(*row.LastPushErrorAt) {
		t.Errorf("row after the kick = %+v, want pushed since after the push error", row)
	}
	waitConnections(t, dv, "pushed", 1)
	dv.Deliver(t, "pushed", e2eMail("bob@customer.example", "pushed@desk.example", "pushed two", "push2@customer.example"))
	api.waitEvents("TicketCreated", 2)
	waitCount(t, dv, "pushed", 0)
	if n := len(api.events("MailboxPolled")); n < 1 {
		t.Errorf("%d MailboxPolled events, want the pushed polls recorded", n)
	}

	// push: false: polled, no IDLE connection; the mail waits for a poll.
	polled := createIMAPAccount(t, api, dv.IMAPAddr, "polled", "polled", "pw-polled", map[string]any{"push": false})
	api.waitDelivery(polled, "polled", func(r deliveryRow) bool { return r.Delivery == "polled" })
	var acc struct{ Push *bool }
	_ = json.Unmarshal(api.must(http.MethodGet, "/api/v1/inbound-accounts/"+polled, nil), &acc)
	if acc.Push == nil || *acc.Push {
		t.Errorf("GET the push:false account: push = %v, want false", acc.Push)
	}
	api.waitEvents("MailboxPolled", 2) // its start poll
	waitConnections(t, dv, "polled", 0)
	dv.Deliver(t, "polled", e2eMail("cy@customer.example", "polled@desk.example", "polled one", "poll1@customer.example"))
	time.Sleep(2 * time.Second)
	if n := dv.Count(t, "polled"); n != 1 {
		t.Fatalf("the push:false account's mail was fetched without a poll: %d left, want 1", n)
	}
	if n := dv.Connections(t, "polled", "imap"); n != 0 {
		t.Errorf("the push:false account has %d IMAP connections, want 0", n)
	}
	api.must(http.MethodPost, "/api/v1/inbound-accounts/"+polled+"/poll", nil)
	api.waitEvents("TicketCreated", 3)
}

// TestServe_AccountWritesReachTheSchedulerAtOnce: a created account
// answers poll-now at once (not 409 until the scheduler's next reload); a
// disabled one answers 409 at once and its IDLE connection closes; enabled
// again it is polled and pushed; deleted, it stops.
func TestServe_AccountWritesReachTheSchedulerAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot")
	}
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "support", "pw-support")
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}

	pollNow := func(id string) int {
		code, _ := api.do(http.MethodPost, "/api/v1/inbound-accounts/"+id+"/poll", nil)
		return code
	}
	_, imapPort := hostPort(t, dv.IMAPAddr)
	id := createIMAPAccount(t, api, dv.IMAPAddr, "support", "support", "pw-support", nil)
	if code := pollNow(id); code != http.StatusAccepted {
		t.Fatalf("poll-now right after create = %d, want 202", code)
	}
	api.waitDelivery(id, "pushed", func(r deliveryRow) bool { return r.Delivery == "pushed" })
	waitConnections(t, dv, "support", 1)

	api.must(http.MethodPut, "/api/v1/inbound-accounts/"+id, map[string]any{"name": "support", "protocol": "imap",
		"host": "127.0.0.1", "port": imapPort, "security": "none", "allow_plaintext_auth": true,
		"username": "support", "password": "pw-support", "poll_interval_seconds": 3600, "after_import": "delete", "enabled": false})
	if code := pollNow(id); code != http.StatusConflict {
		t.Errorf("poll-now right after disable = %d, want 409", code)
	}
	start := time.Now()
	waitConnections(t, dv, "support", 0)
	t.Logf("IDLE connection gone %s after the PUT was answered", time.Since(start).Round(time.Millisecond))
	api.waitDelivery(id, "polled once disabled", func(r deliveryRow) bool { return r.Delivery == "polled" })

	api.must(http.MethodPut, "/api/v1/inbound-accounts/"+id, map[string]any{"name": "support", "protocol": "imap",
		"host": "127.0.0.1", "port": imapPort, "security": "none", "allow_plaintext_auth": true,
		"username": "support", "password": "pw-support", "poll_interval_seconds": 3600, "after_import": "delete", "enabled": true})
	if code := pollNow(id); code != http.StatusAccepted {
		t.Errorf("poll-now right after enable = %d, want 202", code)
	}
	waitConnections(t, dv, "support", 1)

	api.must(http.MethodDelete, "/api/v1/inbound-accounts/"+id, nil)
	waitConnections(t, dv, "support", 0)
	if code := pollNow(id); code != http.StatusNotFound {
		t.Errorf("poll-now of a deleted account = %d, want 404", code)
	}
}
