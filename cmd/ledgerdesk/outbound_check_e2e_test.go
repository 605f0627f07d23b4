package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
)

// TestOutboundCheck_LogsInAndSendsATestMail drives POST
// /outbound-accounts/{id}/check of a running serve against a real SMTP
// server: a login alone sends nothing, send_test_to delivers a test mail
// and answers the server's 250, and refusals answer the server's words.
func TestOutboundCheck_LogsInAndSendsATestMail(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{Username: "support", Password: "smtp-pw",
		Fail: func(stage, arg string) error {
			if stage == "rcpt" && strings.HasPrefix(arg, "nobody@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "nobody: user unknown"}
			}
			return nil
		}})
	serve := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: serve.URL}
	create := func(name, password string) string {
		var a struct{ ID string } // CRAM-MD5 sends a digest: allowed without TLS
		raw := api.must(http.MethodPost, "/api/v1/outbound-accounts", map[string]any{"name": name, "host": srv.Host,
			"port": srv.Port, "security": "none", "auth": "cram-md5", "username": "support", "password": password,
			"sender_address": "support@desk.example", "sender_name": "Desk"})
		if err := json.Unmarshal(raw, &a); err != nil || a.ID == "" {
			t.Fatalf("created outbound account = %s (%v)", raw, err)
		}
		return a.ID
	}
	type result struct {
		OK           bool   `json:"ok"`
		TestMailSent bool   `json:"test_mail_sent"`
		Stage        string `json:"stage"`
		Error        string `json:"error"`
		ServerReply  string `json:"server_reply"`
	}
	check := func(id string, body any) result {
		t.Helper()
		var r result
		if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/outbound-accounts/"+id+"/check", body), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	good, wrong := create("smtp", "smtp-pw"), create("smtp wrong", "not-the-pw")

	if r := check(good, nil); !r.OK || r.TestMailSent || srv.Count() != 0 {
		t.Errorf("check without a recipient = %+v with %d mails at the server; want ok and nothing sent", r, srv.Count())
	}
	r := check(good, map[string]any{"send_test_to": "agent@desk.example"})
	if !r.OK || !r.TestMailSent || !strings.HasPrefix(r.ServerReply, "250 ") {
		t.Errorf("check with send_test_to = %+v, want ok, sent, and the server's 250 reply", r)
	}
	got := srv.Received()
	if len(got) != 1 || got[0].From != "support@desk.example" || len(got[0].To) != 1 || got[0].To[0] != "agent@desk.example" ||
		!strings.Contains(string(got[0].Data), "Subject: ledgerdesk: test mail of the outgoing account smtp") ||
		!strings.Contains(string(got[0].Data), "Auto-Submitted: auto-replied") {
		t.Errorf("server received %+v, want one test mail from support@ to agent@", got)
	}
	if r := check(good, map[string]any{"send_test_to": "nobody@desk.example"}); r.OK || r.Stage != "rcpt" ||
		r.ServerReply != "550 5.1.1 nobody: user unknown" {
		t.Errorf("check to a refused recipient = %+v, want stage rcpt and the server's 550 5.1.1 reply", r)
	}
	if r := check(wrong, nil); r.OK || r.Stage != "auth" || !strings.HasPrefix(r.ServerReply, "535 ") {
		t.Errorf("check with a wrong password = %+v, want stage auth and the server's 535", r)
	}
	if code, raw := api.do(http.MethodPost, "/api/v1/outbound-accounts/"+good+"/check", map[string]any{"send_test_to": "not an address"}); code != http.StatusBadRequest {
		t.Errorf("check with a bad send_test_to = %d %s, want 400", code, raw)
	}
	if srv.Count() != 1 {
		t.Errorf("%d mails reached the server, want the one test mail", srv.Count())
	}
}
