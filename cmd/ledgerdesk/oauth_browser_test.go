package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// chromium finds Debian's chromium, which .ci/prepare installs. A missing
// browser fails the test: the consent is what an admin does in one.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("LEDGERDESK_TEST_CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: run .ci/prepare (it installs Debian's chromium) or set LEDGERDESK_TEST_CHROMIUM")
	return ""
}

// browser starts a headless Chromium for one test, with the flags that keep
// it off the network it cannot reach here.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// TestOAuth_ConsentInABrowser is "set up OAuth connection" as an admin does
// it: the URL from authorize opened in headless Chromium, the provider's
// consent page accepted, ledgerdesk's callback page read; then a mail in the
// Dovecot mailbox, which logs in with the consented token, becomes a ticket.
// A declined consent shows the provider's words instead.
func TestOAuth_ConsentInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Chromium and Dovecot")
	}
	t.Parallel()
	idp := oauthtest.Start(t, oauthtest.Options{Username: "someone-else"})
	dv := dovecottest.StartWith(t, dovecottest.Options{OAuth2IntrospectionURL: idp.URL + "/introspect"})
	dv.AddUser(t, "support", "never-used-password")
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}
	conn := api.createdID("/api/v1/oauth-connections", map[string]any{"name": "Contoso 365", "provider": "microsoft365",
		"tenant_id": "contoso.example", "login_base_url": idp.URL, "client_id": oauthtest.DefaultClientID,
		"client_secret": oauthtest.DefaultClientSecret})
	host, port := hostPort(t, dv.IMAPAddr)
	api.must(http.MethodPost, "/api/v1/inbound-accounts", map[string]any{"name": "support", "protocol": "imap", "host": host,
		"port": port, "security": "none", "allow_plaintext_auth": true, "username": "support", "oauth_connection_id": conn, "poll_interval_seconds": 1,
		"after_import": "delete", "enabled": true, "account_address": "support@desk.example", "create_unknown_users": true})
	authorize := func() string {
		var consent struct {
			AuthorizationURL string `json:"authorization_url"`
		}
		if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/oauth-connections/"+conn+"/authorize", nil), &consent); err != nil {
			t.Fatal(err)
		}
		return consent.AuthorizationURL
	}
	ctx := browser(t)
	// The first call starts the browser and must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	text := func(id string) string {
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("read #%s: %v", id, err)
		}
		return v
	}

	// Declined: the page says so, in the provider's words.
	if err := chromedp.Do(ctx, chromedp.Navigate(authorize()), chromedp.WaitVisible(chromedp.ID("deny")),
		chromedp.Click(chromedp.ID("deny")), chromedp.WaitVisible(chromedp.ID("result"))); err != nil {
		t.Fatalf("declined consent in Chromium: %v", err)
	}
	if title, detail := text("result"), text("detail"); title != "Not connected: Contoso 365" || !strings.Contains(detail, "AADSTS65004") {
		t.Errorf("declined consent page: %q / %q", title, detail)
	}

	// Accepted, signing in as the mailbox user.
	if err := chromedp.Do(ctx, chromedp.Navigate(authorize()), chromedp.WaitVisible(chromedp.ID("accept")),
		chromedp.SetValue(chromedp.ID("username"), "support"), chromedp.Click(chromedp.ID("accept")),
		chromedp.WaitVisible(chromedp.ID("result"))); err != nil {
		t.Fatalf("consent in Chromium: %v", err)
	}
	if title, accounts := text("result"), text("accounts"); title != "Connected: Contoso 365" || !strings.Contains(accounts, "support (inbound)") {
		t.Fatalf("callback page: %q, accounts %q", title, accounts)
	}
	dv.Deliver(t, "support", e2eMail("Erika <erika@customer.example>", "support@desk.example", "Printer on fire", "browser-1@customer.example"))
	created := payload[domain.TicketCreated](t, api.waitEvents(domain.TicketCreatedName, 1)[0])
	if created.Subject != "Printer on fire" {
		t.Errorf("ticket %+v, want the delivered mail's", created)
	}
}
