package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// scrape reads /metrics with token and parses it with the client library's
// own parser.
func scrape(tb testing.TB, base, token string) map[string]*dto.MetricFamily {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET /metrics = %d %s", resp.StatusCode, raw)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		tb.Fatalf("parse /metrics: %v\n%s", err, raw)
	}
	return families
}

// value returns the value of the series of family with exactly labels
// (a counter, gauge or the count of a histogram), and whether it is there.
func value(families map[string]*dto.MetricFamily, family string, labels map[string]string) (float64, bool) {
	f := families[family]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if fmt.Sprint(got) != fmt.Sprint(labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetrics_ScrapeShowsTheImport scrapes a running serve on PostgreSQL
// with a metrics token before and after mails are delivered into a real
// Dovecot and imported: the account's counters move, and every family the
// README names is there, labelled with ids only.
func TestMetrics_ScrapeShowsTheImport(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot and PostgreSQL")
	}
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "support", "pw1")
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envDatabaseURL: pgtest.NewDatabase(t),
		envSecretKey: strings.Repeat("ef", 32), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/tokens", map[string]string{"name": "prometheus", "role": "metrics"}), &tok); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/tickets", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a metrics token on /api/v1/tickets = %d, want 403", resp.StatusCode)
		}
	}
	var conn struct {
		Connection struct {
			ID string `json:"id"`
		} `json:"connection"`
	}
	if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/oauth-connections", map[string]any{"name": "Contoso",
		"provider": "microsoft365", "flow": "delegated", "tenant_id": "contoso.onmicrosoft.com",
		"client_id": "11111111-2222-3333-4444-555555555555", "client_secret": "very-secret-value"}), &conn); err != nil {
		t.Fatal(err)
	}
	host, portStr, _ := net.SplitHostPort(dv.IMAPAddr)
	port, _ := strconv.Atoi(portStr)
	var acc struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/inbound-accounts", map[string]any{"name": "support",
		"protocol": "imap", "host": host, "port": port, "security": "none", "allow_plaintext_auth": true,
		"username": "support", "password": "pw1", "poll_interval_seconds": 1, "after_import": "delete", "enabled": true,
		"account_address": "support@desk.example", "create_unknown_users": true}), &acc); err != nil || acc.ID == "" {
		t.Fatalf("account id %q: %v", acc.ID, err)
	}
	id := acc.ID
	imported := map[string]string{"account_id": id, "result": "imported"}

	before, _ := value(scrape(t, srv.URL, tok.Token), "ledgerdesk_mailbox_mails_total", imported)
	const mails = 3
	for i := range mails {
		dv.Deliver(t, "support", e2eMail("Erika <erika@customer.example>", "support@desk.example",
			fmt.Sprintf("Printer %d", i), fmt.Sprintf("metrics%d@customer.example", i)))
	}
	var families map[string]*dto.MetricFamily
	deadline := time.Now().Add(60 * time.Second)
	for {
		families = scrape(t, srv.URL, tok.Token)
		if n, _ := value(families, "ledgerdesk_mailbox_mails_total", imported); n >= before+mails {
			break
		}
		if time.Now().After(deadline) {
			n, _ := value(families, "ledgerdesk_mailbox_mails_total", imported)
			t.Fatalf("imported counter at %v after 60s, want %v", n, before+mails)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n, _ := value(families, "ledgerdesk_mailbox_mails_total", imported); n != before+mails {
		t.Errorf("imported = %v, want %v", n, before+mails)
	}
	for _, want := range []struct {
		family string
		labels map[string]string
		min    float64
	}{
		{"ledgerdesk_mailbox_polls_total", map[string]string{"account_id": id, "outcome": "ok"}, 1},
		{"ledgerdesk_mailbox_commits_total", map[string]string{"account_id": id, "outcome": "ok"}, 1},
		{"ledgerdesk_mailbox_commit_duration_seconds", map[string]string{}, 1},
		{"ledgerdesk_mailbox_poll_duration_seconds", map[string]string{}, 1},
		{"ledgerdesk_mailbox_last_poll_timestamp_seconds", map[string]string{"account_id": id}, 1},
		{"ledgerdesk_mailbox_pushed", map[string]string{"account_id": id}, 0},
		{"ledgerdesk_mailbox_consecutive_failures", map[string]string{"account_id": id}, 0},
		{"ledgerdesk_subscriber_lag_events", map[string]string{"subscriber": "projection.tickets.v1"}, 0},
		{"ledgerdesk_subscriber_lag_seconds", map[string]string{"subscriber": "process.mail-intake.v1"}, 0},
		{"ledgerdesk_subscriber_lag_events", map[string]string{"subscriber": "saga.outbound.v1"}, 0},
		{"ledgerdesk_outbound_mails", map[string]string{"state": "sent"}, 0},
		{"ledgerdesk_oauth_token_state", map[string]string{"connection_id": conn.Connection.ID, "state": "not_connected"}, 1},
		{"ledgerdesk_oauth_token_state", map[string]string{"connection_id": conn.Connection.ID, "state": "ok"}, 0},
		{"ledgerdesk_scrape_store_errors", map[string]string{}, 0},
	} {
		got, ok := value(families, want.family, want.labels)
		if !ok || got < want.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", want.family, want.labels, got, ok, want.min)
		}
	}
	if n, _ := value(families, "ledgerdesk_scrape_store_errors", map[string]string{}); n != 0 {
		t.Errorf("ledgerdesk_scrape_store_errors = %v, want 0; log:\n%s", n, tail(srv.Log.String(), 2000))
	}
	// Ids only: no address, subject or secret in any label.
	for name, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v := l.GetValue(); strings.Contains(v, "@") || strings.Contains(v, "Printer") || strings.Contains(v, "secret") || v == "pw1" {
					t.Errorf("%s has label %s=%q", name, l.GetName(), v)
				}
			}
		}
	}
}
