package smtptest_test

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/saslclient"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
)

// recording is a SASL client that keeps the challenges it was sent.
type recording struct {
	sasl.Client
	challenges [][]byte
}

func (r *recording) Next(challenge []byte) ([]byte, error) {
	r.challenges = append(r.challenges, challenge)
	return r.Client.Next(challenge)
}

// sendAs authenticates with client and submits one mail.
func sendAs(t *testing.T, s *smtptest.Server, client sasl.Client) error {
	t.Helper()
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Auth(client); err != nil {
		return err
	}
	return c.SendMail("agent@example.com", []string{"customer@example.org"},
		strings.NewReader("Subject: hi\r\n\r\nbody\r\n"))
}

// wantReply checks that err is the SMTP reply code and enhanced code.
func wantReply(t *testing.T, err error, code int, enhanced smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enhanced {
		t.Errorf("error = %v, want %d %v", err, code, enhanced)
	}
}

func TestServer_XOAUTH2Introspection(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{AccessTokenTTL: time.Second})
	s := smtptest.Start(t, smtptest.Options{IntrospectionURL: p.URL + "/introspect"})
	authFailed := smtp.EnhancedCode{5, 7, 8}

	t.Run("a live token is accepted", func(t *testing.T) {
		if err := sendAs(t, s, saslclient.NewXOAUTH2Client("agent@example.com", p.AccessTokenFor("agent@example.com"))); err != nil {
			t.Fatalf("send = %v", err)
		}
		if got := s.Received(); len(got) != 1 || got[0].User != "agent@example.com" {
			t.Errorf("Received() = %+v, want one mail from agent@example.com", got)
		}
	})
	t.Run("the user name is compared ignoring case", func(t *testing.T) {
		if err := sendAs(t, s, saslclient.NewXOAUTH2Client("Agent@Example.COM", p.AccessTokenFor("agent@example.com"))); err != nil {
			t.Errorf("send = %v", err)
		}
	})
	t.Run("another user's token gets the error challenge, then 535 5.7.8", func(t *testing.T) {
		client := &recording{Client: saslclient.NewXOAUTH2Client("agent@example.com", p.AccessTokenFor("boss@example.com"))}
		wantReply(t, sendAs(t, s, client), 535, authFailed)
		if len(client.challenges) != 1 {
			t.Fatalf("challenges = %q, want one", client.challenges)
		}
		var challenge map[string]string
		if err := json.Unmarshal(client.challenges[0], &challenge); err != nil || challenge["status"] != "401" {
			t.Errorf("challenge = %q (%v), want XOAUTH2's JSON error with status 401", client.challenges[0], err)
		}
	})
	t.Run("an unknown token is refused", func(t *testing.T) {
		wantReply(t, sendAs(t, s, saslclient.NewXOAUTH2Client("agent@example.com", "made-up")), 535, authFailed)
	})
	t.Run("an expired token is refused", func(t *testing.T) {
		tok := p.AccessTokenFor("agent@example.com")
		time.Sleep(1100 * time.Millisecond) // the provider's shortest TTL is one second
		wantReply(t, sendAs(t, s, saslclient.NewXOAUTH2Client("agent@example.com", tok)), 535, authFailed)
	})
	t.Run("a revoked token is refused", func(t *testing.T) {
		tok := p.AccessTokenFor("agent@example.com")
		p.RevokeAccessTokens()
		wantReply(t, sendAs(t, s, saslclient.NewXOAUTH2Client("agent@example.com", tok)), 535, authFailed)
	})
	t.Run("password mechanisms have no credentials to match", func(t *testing.T) {
		wantReply(t, sendAs(t, s, sasl.NewPlainClient("", "", "")), 535, authFailed)
	})
	t.Run("mail without AUTH is refused", func(t *testing.T) {
		c, err := smtp.Dial(s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		wantReply(t, c.Mail("agent@example.com", nil), 502, smtp.EnhancedCode{5, 7, 0})
	})
	if got := p.Introspections(); got != 6 {
		t.Errorf("Introspections() = %d, want 6 (one per XOAUTH2 login)", got)
	}
	if got := s.Count(); got != 2 {
		t.Errorf("Count() = %d, want 2", got)
	}
}

func TestServer_XOAUTH2IntrospectionUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/introspect"
	_ = ln.Close() // nothing listens there now
	s := smtptest.Start(t, smtptest.Options{IntrospectionURL: url})
	wantReply(t, sendAs(t, s, saslclient.NewXOAUTH2Client("agent", "tok")), 454, smtp.EnhancedCode{4, 7, 0})
	if got := s.IntrospectionErrors(); len(got) != 1 {
		t.Errorf("IntrospectionErrors() = %v, want one", got)
	}
}

func TestServer_XOAUTH2FixedToken(t *testing.T) {
	t.Parallel()
	s := smtptest.Start(t, smtptest.Options{Username: "agent", Password: "pw", Token: "tok-1"})
	if err := sendAs(t, s, saslclient.NewXOAUTH2Client("agent", "tok-1")); err != nil {
		t.Errorf("send with the fixed token = %v", err)
	}
	wantReply(t, sendAs(t, s, saslclient.NewXOAUTH2Client("agent", "other")), 535, smtp.EnhancedCode{5, 7, 8})
}
