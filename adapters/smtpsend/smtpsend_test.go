package smtpsend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
)

func testMessage(t testing.TB, enc string) []byte {
	t.Helper()
	raw, err := smtpsend.Build(smtpsend.Message{
		From:    smtpsend.Address{Name: "Support Müller", Email: "support@desk.example"},
		To:      []smtpsend.Address{{Name: "Erika", Email: "erika@customer.example"}},
		Subject: "Re: Drucker kaputt [Ticket#1001]", MessageID: "ledgerdesk.t1.o1.abc@desk.example",
		InReplyTo: "m1@customer.example", References: []string{"m0@customer.example", "<m1@customer.example>"},
		Date: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC), Automatic: true,
		Body: "Grüße,\nIhr Ticket 1001 ist angelegt.\n.\nEnde", Encoding: enc,
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestSendSecurityAndAuth(t *testing.T) {
	tests := []struct {
		security, auth string
	}{
		{"none", "none"}, {"none", "cram-md5"}, {"none", "plain"},
		{"starttls", "plain"}, {"starttls", "login"}, {"starttls", "cram-md5"}, {"starttls", "xoauth2"},
		{"tls", "plain"}, {"tls", "login"}, {"tls", "xoauth2"},
	}
	for _, tt := range tests {
		t.Run(tt.security+"/"+tt.auth, func(t *testing.T) {
			t.Parallel()
			opts := smtptest.Options{Security: tt.security}
			if tt.auth != "none" {
				opts.Username, opts.Password, opts.Token = "agent", "s3cret", "tok-123"
			}
			srv := smtptest.Start(t, opts)
			// given an account with the alternative certificate name
			a := smtpsend.Account{Host: srv.Host, Port: srv.Port, Security: tt.security, TLSServerName: smtptest.CertName,
				RootCAs: srv.RootCAs, Auth: tt.auth, Username: opts.Username, Password: opts.Password,
				OAuthToken: func(context.Context) (string, error) { return "tok-123", nil }}
			s := smtpsend.NewSender()
			defer func() { _ = s.Close() }()
			// when two mails are sent
			for range 2 {
				if _, err := s.Send(context.Background(), a, smtpsend.Envelope{From: "support@desk.example", To: []string{"erika@customer.example"}}, testMessage(t, "")); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			// then both arrive over one connection, authenticated as the user
			got := srv.Received()
			if len(got) != 2 || srv.Connections() != 1 {
				t.Fatalf("received %d mails over %d connections, want 2 over 1", len(got), srv.Connections())
			}
			if got[0].User != opts.Username || got[0].From != "support@desk.example" {
				t.Errorf("user %q from %q", got[0].User, got[0].From)
			}
		})
	}
}

func TestSendFailures(t *testing.T) {
	tests := []struct {
		name      string
		opts      smtptest.Options
		account   func(a *smtpsend.Account)
		wantStage string
		wantCode  int
		temporary bool
	}{
		{name: "wrong password", opts: smtptest.Options{Username: "u", Password: "p"},
			account: func(a *smtpsend.Account) { a.Auth, a.Username, a.Password = "plain", "u", "wrong" }, wantStage: "auth", wantCode: 535},
		{name: "wrong cram-md5 password", opts: smtptest.Options{Username: "u", Password: "p"},
			account: func(a *smtpsend.Account) { a.Auth, a.Username, a.Password = "cram-md5", "u", "wrong" }, wantStage: "auth", wantCode: 535},
		{name: "recipient refused", opts: smtptest.Options{Fail: func(stage, arg string) error {
			if stage == "rcpt" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			return nil
		}}, wantStage: "rcpt", wantCode: 550},
		{name: "greylisted", opts: smtptest.Options{Fail: func(stage, arg string) error {
			if stage == "rcpt" {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted, try later"}
			}
			return nil
		}}, wantStage: "rcpt", wantCode: 451, temporary: true},
		{name: "data refused", opts: smtptest.Options{Fail: func(stage, arg string) error {
			if stage == "data" {
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"}
			}
			return nil
		}}, wantStage: "data", wantCode: 554},
		{name: "too large for the account", account: func(a *smtpsend.Account) { a.MaxSize = 100 }, wantStage: "size"},
		{name: "too large for the server", opts: smtptest.Options{MaxMessageBytes: 100}, wantStage: "mail", wantCode: 552},
		{name: "certificate name mismatch", opts: smtptest.Options{Security: "tls"},
			account: func(a *smtpsend.Account) { a.TLSServerName = "" }, wantStage: "dial"},
		{name: "no auth offered", account: func(a *smtpsend.Account) { a.Auth, a.Username, a.Password = "plain", "u", "p" }, wantStage: "auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opts)
			sec := tt.opts.Security
			if sec == "" {
				sec = "none"
			}
			a := smtpsend.Account{Host: srv.Host, Port: srv.Port, Security: sec, RootCAs: srv.RootCAs, TLSServerName: smtptest.CertName, Auth: "none"}
			if tt.opts.Username != "" {
				a.Auth, a.Username, a.Password = "plain", tt.opts.Username, tt.opts.Password
			}
			if tt.account != nil {
				tt.account(&a)
			}
			s := smtpsend.NewSender()
			defer func() { _ = s.Close() }()
			_, err := s.Send(context.Background(), a, smtpsend.Envelope{From: "a@b.example", To: []string{"c@d.example"}}, testMessage(t, ""))
			var se *smtpsend.Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *smtpsend.Error", err)
			}
			if se.Stage != tt.wantStage || se.Code != tt.wantCode || se.Temporary != tt.temporary {
				t.Errorf("stage %q code %d temporary %v (%v), want %q %d %v", se.Stage, se.Code, se.Temporary, se, tt.wantStage, tt.wantCode, tt.temporary)
			}
			if srv.Count() != 0 {
				t.Errorf("server accepted %d mails", srv.Count())
			}
		})
	}
}

func TestBuildHeadersAndEncodings(t *testing.T) {
	for _, enc := range []string{"quoted-printable", "base64", "8bit"} {
		t.Run(enc, func(t *testing.T) {
			raw := testMessage(t, enc)
			if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
				t.Error("bare LF in message")
			}
			r, err := mail.CreateReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			h := r.Header
			subject, _ := h.Subject()
			mid, _ := h.MessageID()
			irt, _ := h.MsgIDList("In-Reply-To")
			refs, _ := h.MsgIDList("References")
			from, _ := h.AddressList("From")
			got := map[string]any{
				"subject": subject, "message-id": mid, "in-reply-to": irt, "references": refs,
				"auto-submitted": h.Get("Auto-Submitted"), "x-auto-response-suppress": h.Get("X-Auto-Response-Suppress"),
				"cte": h.Get("Content-Transfer-Encoding"), "from-name": from[0].Name,
			}
			want := map[string]any{
				"subject": "Re: Drucker kaputt [Ticket#1001]", "message-id": "ledgerdesk.t1.o1.abc@desk.example",
				"in-reply-to": []string{"m1@customer.example"}, "references": []string{"m0@customer.example", "m1@customer.example"},
				"auto-submitted": "auto-replied", "x-auto-response-suppress": "All", "cte": enc, "from-name": "Support Müller",
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("headers (-want +got):\n%s", d)
			}
			p, err := r.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(p.Body)
			if want := "Grüße,\r\nIhr Ticket 1001 ist angelegt.\r\n.\r\nEnde"; strings.TrimSuffix(string(body), "\r\n") != want {
				t.Errorf("body %q, want %q", body, want)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	for name, m := range map[string]smtpsend.Message{
		"no from":          {To: []smtpsend.Address{{Email: "a@b"}}, MessageID: "x@y"},
		"no to":            {From: smtpsend.Address{Email: "a@b"}, MessageID: "x@y"},
		"bad message id":   {From: smtpsend.Address{Email: "a@b"}, To: []smtpsend.Address{{Email: "a@b"}}, MessageID: "<x@y>"},
		"header newline":   {From: smtpsend.Address{Email: "a@b"}, To: []smtpsend.Address{{Email: "a@b"}}, MessageID: "x@y", Subject: "a\r\nBcc: x@y"},
		"unknown encoding": {From: smtpsend.Address{Email: "a@b"}, To: []smtpsend.Address{{Email: "a@b"}}, MessageID: "x@y", Encoding: "7bit-ish"},
	} {
		if _, err := smtpsend.Build(m); err == nil {
			t.Errorf("%s: Build succeeded", name)
		}
	}
}

// TestSendStaleConnection: a pooled connection the server dropped is
// replaced without losing or doubling the mail.
func TestSendStaleConnection(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	a := smtpsend.Account{Host: srv.Host, Port: srv.Port, Security: "none", Auth: "none"}
	s := smtpsend.NewSender()
	defer func() { _ = s.Close() }()
	env := smtpsend.Envelope{From: "a@b.example", To: []string{"c@d.example"}}
	if _, err := s.Send(context.Background(), a, env, testMessage(t, "")); err != nil {
		t.Fatal(err)
	}
	s.IdleTimeout = 0 // the idle connection is now too old: a fresh one must be used
	res, err := s.Send(context.Background(), a, env, testMessage(t, ""))
	if err != nil || res.Reused {
		t.Fatalf("send after idle timeout: reused=%v err=%v", res.Reused, err)
	}
	if srv.Count() != 2 || srv.Connections() != 2 {
		t.Errorf("count %d connections %d, want 2 and 2", srv.Count(), srv.Connections())
	}
}

// TestSendConnectionDroppedAfterAccept: a server that drops the connection
// right after its 250 has the mail; the next send notices the dead pooled
// connection before MAIL FROM and uses a fresh one. Nothing is sent twice.
func TestSendConnectionDroppedAfterAccept(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{CloseAfterData: true})
	a := smtpsend.Account{Host: srv.Host, Port: srv.Port, Security: "none", Auth: "none"}
	s := smtpsend.NewSender()
	defer func() { _ = s.Close() }()
	env := smtpsend.Envelope{From: "a@b.example", To: []string{"c@d.example"}}
	for i := range 3 {
		if _, err := s.Send(context.Background(), a, env, testMessage(t, "")); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond) // let the server drop the connection
	}
	if srv.Count() != 3 || srv.Connections() != 3 {
		t.Errorf("count %d connections %d, want 3 and 3", srv.Count(), srv.Connections())
	}
}
