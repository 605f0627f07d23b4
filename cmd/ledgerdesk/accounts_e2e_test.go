package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
)

// TestAccounts_CheckPollNowAndMailboxesDisabled runs against the embedded
// store (the default) and a real Dovecot: "check connection" answers ok or
// the server's exact words, poll-now fetches at once, and mailboxes_disabled
// stops all fetching until it is switched off again.
func TestAccounts_CheckPollNowAndMailboxesDisabled(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot")
	}
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "support", "right-password")
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}
	host, portStr, _ := net.SplitHostPort(dv.POP3Addr)
	port, _ := strconv.Atoi(portStr)

	create := func(name, password string, interval int) string {
		var created struct{ ID string }
		raw := api.must(http.MethodPost, "/api/v1/inbound-accounts", map[string]any{"name": name, "protocol": "pop3",
			"host": host, "port": port, "security": "none", "allow_plaintext_auth": true, "username": "support", "password": password,
			"poll_interval_seconds": interval, "after_import": "delete", "enabled": true})
		if err := json.Unmarshal(raw, &created); err != nil || created.ID == "" {
			t.Fatalf("create account: %s", raw)
		}
		return created.ID
	}
	type checkResult struct {
		OK          bool   `json:"ok"`
		Error       string `json:"error"`
		ServerReply string `json:"server_reply"`
	}
	check := func(id string) checkResult {
		var r checkResult
		_ = json.Unmarshal(api.must(http.MethodPost, "/api/v1/inbound-accounts/"+id+"/check", nil), &r)
		return r
	}

	// Disable all mailboxes first, so nothing is fetched behind our back.
	api.must(http.MethodPut, "/api/v1/settings", map[string]any{"mailboxes_disabled": true})
	wrong := create("wrong password", "nope", 3600)
	if r := check(wrong); r.OK || !strings.Contains(r.ServerReply, "Authentication failed") {
		t.Errorf("check with a wrong password = %+v, want not ok with Dovecot's own words", r)
	}
	good := create("support", "right-password", 3600)
	if r := check(good); !r.OK {
		t.Errorf("check with the right password = %+v, want ok", r)
	}

	dv.Deliver(t, "support", e2eMail("a@customer.example", "support@desk.example", "one", "pn1@customer.example"))
	if code, body := api.do(http.MethodPost, "/api/v1/inbound-accounts/"+good+"/poll", nil); code != http.StatusConflict {
		t.Errorf("poll now while mailboxes are disabled = %d %s, want 409", code, body)
	}
	time.Sleep(2 * time.Second) // the scheduler took the settings on before the PUT was answered
	if n := dv.Count(t, "support"); n != 1 {
		t.Fatalf("a mail was fetched while mailboxes_disabled was set: %d left, want 1", n)
	}

	// Switched on again: the hourly account is polled at once on start, and
	// poll-now fetches a second mail without waiting an hour.
	api.must(http.MethodDelete, "/api/v1/inbound-accounts/"+wrong, nil)
	api.must(http.MethodPut, "/api/v1/settings", map[string]any{"mailboxes_disabled": false})
	waitCount(t, dv, "support", 0)
	dv.Deliver(t, "support", e2eMail("b@customer.example", "support@desk.example", "two", "pn2@customer.example"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := api.do(http.MethodPost, "/api/v1/inbound-accounts/"+good+"/poll", nil)
		if code == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("poll now = %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitCount(t, dv, "support", 0)
	api.waitEvents("MailReceived", 2)
}

func waitCount(t *testing.T, dv *dovecottest.Server, user string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for dv.Count(t, user) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d mails after 30s, want %d", user, dv.Count(t, user), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
