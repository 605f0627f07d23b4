package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// mailboxRow is a row of GET /api/v1/mailboxes as a client reads it.
type mailboxRow struct {
	AccountID  string `json:"account_id"`
	Name       string `json:"name"`
	LastError  string `json:"last_error"`
	Fetched    int    `json:"fetched"`
	TokenState string `json:"token_state"`
	TokenError string `json:"token_error"`
	// SetAside and LastSetAsideError: see events_test.go.
	SetAside          int    `json:"set_aside"`
	LastSetAsideError string `json:"last_set_aside_error"`
}

func (c apiClient) mailboxes() map[string]mailboxRow {
	c.tb.Helper()
	var out struct {
		Items []mailboxRow `json:"items"`
	}
	if err := json.Unmarshal(c.must(http.MethodGet, "/api/v1/mailboxes", nil), &out); err != nil {
		c.tb.Fatal(err)
	}
	rows := map[string]mailboxRow{}
	for _, r := range out.Items {
		rows[r.Name] = r
	}
	return rows
}

// createdID posts body and returns the id of what was created.
func (c apiClient) createdID(path string, body any) string {
	c.tb.Helper()
	var out struct {
		ID         string `json:"id"`
		Connection struct {
			ID string `json:"id"`
		} `json:"connection"`
	}
	if err := json.Unmarshal(c.must(http.MethodPost, path, body), &out); err != nil {
		c.tb.Fatal(err)
	}
	if out.ID == "" {
		out.ID = out.Connection.ID
	}
	if out.ID == "" {
		c.tb.Fatalf("POST %s answered no id", path)
	}
	return out.ID
}

// consentOverHTTP is "set up OAuth connection" without a browser: the
// authorize call, the provider's consent form submitted as user, and the
// browser's landing on ledgerdesk's callback page, whose text it returns.
// (oauth_browser_test.go does the same in Chromium.)
func consentOverHTTP(t *testing.T, c apiClient, connectionID, user string) string {
	t.Helper()
	var consent struct {
		AuthorizationURL string `json:"authorization_url"`
	}
	if err := json.Unmarshal(c.must(http.MethodPost, "/api/v1/oauth-connections/"+connectionID+"/authorize", nil), &consent); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(consent.AuthorizationURL)
	if err != nil {
		t.Fatal(err)
	}
	form := u.Query()
	form.Set("username", user)
	form.Set("decision", "accept")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(u.Scheme+"://"+u.Host+u.Path, form)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("consent form answered %d, want a redirect", resp.StatusCode)
	}
	code, page := getStatus(t, resp.Header.Get("Location"))
	if code != http.StatusOK {
		t.Fatalf("callback page %d:\n%s", code, page)
	}
	return page
}

// TestOAuth_ShortLivedTokensRevocationAndReconnect runs serve on PostgreSQL
// against a Dovecot that checks every XOAUTH2 login at a fake identity
// provider whose access tokens live 2 s: two IMAP accounts and a POP3
// account share one Microsoft 365 connection while 2,050 mails arrive in
// waves over about 10 s; a password account and an SMTP server that checks
// XOAUTH2 the same way sit beside them. Then the refresh token is revoked,
// and the connection is connected again.
func TestOAuth_ShortLivedTokensRevocationAndReconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot, PostgreSQL and an identity provider")
	}
	t.Parallel()
	const ttl = 2 * time.Second
	idp := oauthtest.Start(t, oauthtest.Options{AccessTokenTTL: ttl})
	dv := dovecottest.StartWith(t, dovecottest.Options{OAuth2IntrospectionURL: idp.URL + "/introspect"})
	dv.AddUser(t, "support", "never-used-password")
	for _, f := range []string{"Sales", "Service", "Sent"} {
		dv.CreateFolder(t, "support", f)
	}
	dv.AddUser(t, "billing", "billing-password")
	smtp := smtptest.Start(t, smtptest.Options{IntrospectionURL: idp.URL + "/introspect"})

	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envDatabaseURL: pgtest.NewDatabase(t),
		envSecretKey: strings.Repeat("a1", 32), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}

	conn := api.createdID("/api/v1/oauth-connections", map[string]any{"name": "Contoso 365", "provider": "microsoft365",
		"tenant_id": "contoso.example", "login_base_url": idp.URL, "client_id": oauthtest.DefaultClientID,
		"client_secret": oauthtest.DefaultClientSecret})
	if page := consentOverHTTP(t, api, conn, "support"); !strings.Contains(page, "Connected: Contoso 365") {
		t.Fatalf("callback page:\n%s", page)
	}

	imapHost, imapPort := hostPort(t, dv.IMAPAddr)
	popHost, popPort := hostPort(t, dv.POP3Addr)
	account := func(body map[string]any) string {
		base := map[string]any{"protocol": "imap", "host": imapHost, "port": imapPort, "security": "none",
			"allow_plaintext_auth": true, "poll_interval_seconds": 1, "after_import": "delete", "enabled": true}
		for k, v := range body {
			base[k] = v
		}
		return api.createdID("/api/v1/inbound-accounts", base)
	}
	salesID := account(map[string]any{"name": "sales", "username": "support", "folder": "Sales", "oauth_connection_id": conn,
		"account_address": "sales@desk.example"})
	account(map[string]any{"name": "service", "username": "support", "folder": "Service", "oauth_connection_id": conn,
		"account_address": "service@desk.example"})
	account(map[string]any{"name": "support pop", "protocol": "pop3", "host": popHost, "port": popPort, "username": "support",
		"oauth_connection_id": conn, "account_address": "support@desk.example"})
	account(map[string]any{"name": "billing", "username": "billing", "password": "billing-password",
		"account_address": "billing@desk.example", "sender_address": "billing@desk.example", "auto_reply_template": "default"})
	account(map[string]any{"name": "no login", "username": "nobody"})
	smtpHost, smtpPort := hostPort(t, smtp.Addr)
	api.must(http.MethodPost, "/api/v1/outbound-accounts", map[string]any{"name": "smtp", "default": true, "host": smtpHost,
		"port": smtpPort, "security": "none", "auth": "xoauth2", "username": "support", "oauth_connection_id": conn,
		"sender_address": "billing@desk.example", "sent_folder_account_id": salesID, "sent_folder": "Sent"})

	// 2,050 mails in ten waves a second apart: the import outlives several
	// token lifetimes.
	mail := func(to, tag string, i int) []byte {
		return e2eMail(fmt.Sprintf("customer%d@%s.example", i, tag), to, fmt.Sprintf("%s %d", tag, i), fmt.Sprintf("%s-%d@e2e.example", tag, i))
	}
	start := time.Now()
	for wave := range 10 {
		var sales, service, pop [][]byte
		for i := range 100 {
			n := wave*100 + i
			sales = append(sales, mail("sales@desk.example", "sales", n))
			service = append(service, mail("service@desk.example", "service", n))
			if i < 5 {
				pop = append(pop, mail("support@desk.example", "pop", wave*5+i))
			}
		}
		dv.DeliverManyTo(t, "support", "Sales", sales)
		dv.DeliverManyTo(t, "support", "Service", service)
		dv.DeliverMany(t, "support", pop)
		if wave == 0 {
			dv.DeliverMany(t, "billing", [][]byte{mail("billing@desk.example", "billing", 1), mail("billing@desk.example", "billing", 2)})
		}
		time.Sleep(time.Second)
	}
	api.waitEventsFor(domain.MailReceivedName, 2052, 2*time.Minute)
	elapsed := time.Since(start)
	for _, f := range []string{"Sales", "Service"} {
		if n := dv.FolderCount(t, "support", f); n != 0 {
			t.Errorf("%s still holds %d mails", f, n)
		}
	}
	if n := dv.Count(t, "support"); n != 0 {
		t.Errorf("the POP3 INBOX still holds %d mails", n)
	}
	if got := api.typeCounts()[domain.MailReceivedName]; got != 2052 {
		t.Errorf("%d MailReceived, want exactly 2052", got)
	}
	windows := elapsed.Seconds() / ttl.Seconds()
	refreshes := idp.Refreshes()
	t.Logf("import of 2,052 mails with %s tokens: %.1f s (%.1f token lifetimes); %d refreshes for 3 accounts and the SMTP account on one connection = %.2f per 1,000 mails, %.2f per token lifetime; at most %d in flight; scopes of the last: %q",
		ttl, elapsed.Seconds(), windows, refreshes, float64(refreshes)/2.052, float64(refreshes)/windows,
		idp.MaxConcurrentRefreshes(), idp.RefreshScopes()[len(idp.RefreshScopes())-1])
	if idp.MaxConcurrentRefreshes() != 1 {
		t.Errorf("%d refreshes were in flight at once, want single-flight (1)", idp.MaxConcurrentRefreshes())
	}
	// A token is reused for nine tenths of its life, so the connection
	// needs at most one refresh per 1.8 s, plus the first.
	if limit := int(elapsed.Seconds()/(0.9*ttl.Seconds())) + 2; refreshes > limit {
		t.Errorf("%d refreshes in %s, want at most %d (one per reuse window, whatever the number of accounts)", refreshes, elapsed, limit)
	}
	for _, s := range idp.RefreshScopes() {
		if !strings.Contains(s, "IMAP.AccessAsUser.All") || !strings.Contains(s, "SMTP.Send") {
			t.Errorf("a refresh asked for scopes %q, want the mail scopes every time", s)
		}
	}
	check := func(id string) (ok bool, words string) {
		var r struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/inbound-accounts/"+id+"/check", nil), &r); err != nil {
			t.Fatal(err)
		}
		return r.OK, r.Error
	}
	if ok, words := check(salesID); !ok {
		t.Errorf("check connection of an OAuth account: %s", words)
	}
	rows := api.mailboxes()
	for _, name := range []string{"sales", "service", "support pop"} {
		if rows[name].TokenState != domain.TokenStateOK {
			t.Errorf("mailbox %s: token_state %q, want ok", name, rows[name].TokenState)
		}
	}
	waitFor(t, 30*time.Second, "the account without a login to fail with the reason", func() bool {
		return strings.Contains(api.mailboxes()["no login"].LastError, "neither a password nor an OAuth connection")
	})
	// The billing auto-replies went out over SMTP with XOAUTH2, and their
	// copies into Sent over IMAP with XOAUTH2.
	if n := smtp.WaitCount(2, 30*time.Second); n != 2 {
		t.Fatalf("SMTP server received %d mails, want the 2 auto-replies", n)
	}
	for _, r := range smtp.Received() {
		if r.User != "support" {
			t.Errorf("a mail was submitted as %q, want the XOAUTH2 user support", r.User)
		}
	}
	waitFor(t, 30*time.Second, "2 copies in Sent", func() bool { return dv.FolderCount(t, "support", "Sent") == 2 })

	// Revoked: the next refresh is refused with invalid_grant. Every account
	// of the connection is flagged with the provider's words; the password
	// account goes on.
	revoked := time.Now()
	idp.RevokeRefreshTokens()
	var flaggedAfter time.Duration
	waitFor(t, 30*time.Second, "the accounts to be flagged needs_reconnect", func() bool {
		rows := api.mailboxes()
		for _, name := range []string{"sales", "service", "support pop"} {
			r := rows[name]
			if r.TokenState != domain.TokenStateNeedsReconnect || !strings.Contains(r.TokenError, "AADSTS50173") ||
				!strings.Contains(r.LastError, "needs a reconnect") {
				return false
			}
		}
		flaggedAfter = time.Since(revoked)
		return true
	})
	t.Logf("refresh token revoked: all three accounts flagged needs_reconnect in the mailbox status after %s", flaggedAfter.Round(time.Millisecond))
	// Access tokens issued before the revocation stay good until they
	// expire; mails arriving after the flag wait for the reconnect.
	dv.DeliverManyTo(t, "support", "Sales", [][]byte{mail("sales@desk.example", "late", 1), mail("sales@desk.example", "late", 2)})
	dv.DeliverMany(t, "billing", [][]byte{mail("billing@desk.example", "billing", 3)})
	waitFor(t, 30*time.Second, "the password account to import beside them", func() bool { return dv.Count(t, "billing") == 0 })
	if ok, words := check(salesID); ok || !strings.Contains(words, "AADSTS50173") {
		t.Errorf("check connection while disconnected = %v %q, want the provider's words", ok, words)
	}
	requests := idp.TokenRequests()
	time.Sleep(3 * time.Second)
	if n := idp.TokenRequests() - requests; n != 0 {
		t.Errorf("%d token requests while the connection needs a reconnect, want none", n)
	}
	if n := dv.FolderCount(t, "support", "Sales"); n != 2 {
		t.Errorf("Sales holds %d mails while disconnected, want the 2 late ones", n)
	}

	// Reconnected: the same consent again brings every account back.
	if page := consentOverHTTP(t, api, conn, "support"); !strings.Contains(page, "Connected: Contoso 365") ||
		!strings.Contains(page, "sales") {
		t.Fatalf("reconnect page:\n%s", page)
	}
	waitFor(t, 30*time.Second, "the late mails after the reconnect", func() bool { return dv.FolderCount(t, "support", "Sales") == 0 })
	var health struct {
		TokenState string `json:"token_state"`
	}
	if err := json.Unmarshal(api.must(http.MethodGet, "/api/v1/oauth-connections/"+conn, nil), &health); err != nil || health.TokenState != domain.TokenStateOK {
		t.Errorf("connection after reconnect: %+v, %v", health, err)
	}
	for _, secret := range []string{oauthtest.DefaultClientSecret} {
		if strings.Contains(srv.Log.String(), secret) {
			t.Errorf("the log holds the client secret")
		}
	}
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitEventsFor is waitEvents with its own deadline, for big imports.
func (c apiClient) waitEventsFor(typ string, n int, d time.Duration) {
	c.tb.Helper()
	deadline := time.Now().Add(d)
	for {
		if got := len(c.events(typ)); got >= n {
			return
		} else if time.Now().After(deadline) {
			c.tb.Fatalf("only %d %s events after %s, want %d", got, typ, d, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
