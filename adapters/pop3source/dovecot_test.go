package pop3source

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// dovecotFetcher returns a fetcher for user at addr of a real Dovecot.
func dovecotFetcher(tb testing.TB, addr, user, pass string, change func(*Config)) *Fetcher {
	tb.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{Host: h, Port: port, Security: mailsource.SecurityNone, AllowPlaintextAuth: true, Username: user, Password: pass}
	if change != nil {
		change(&cfg)
	}
	f, err := New(cfg, nil)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return f
}

// dovecotMail is mail i; some carry the cases POP3 clients get wrong.
func dovecotMail(i int) []byte {
	body := fmt.Sprintf("mail number %d\r\n", i)
	switch i % 4 {
	case 1:
		body += "..hidden\r\n.\r\n.x\r\n"
	case 2:
		body += strings.Repeat("L", 100<<10) + "\r\n"
	case 3:
		body += "X-Unparseable: yes\r\n"
	}
	return []byte(fmt.Sprintf("From: a@example.com\r\nTo: help@example.com\r\nSubject: dovecot %d\r\n"+
		"Message-ID: <dv%d@example.com>\r\n\r\n%s", i, i, body))
}

func TestDovecot_Poll(t *testing.T) {
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "alice", "pw")
	const n = 40
	raws := make([][]byte, n)
	for i := range raws {
		raws[i] = dovecotMail(i)
	}
	dv.DeliverMany(t, "alice", raws)
	j := &journal{}
	sink := newFakeSink(j)
	f := dovecotFetcher(t, dv.POP3Addr, "alice", "pw", func(c *Config) { c.BatchSize = 7 })

	res, err := f.Poll(t.Context(), sink)
	if err != nil {
		t.Fatalf("Poll() error = %v", err)
	}
	// Every fourth mail is "unparseable" for the fake sink: it stays.
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 30, Failed: 10, Deleted: 30}, res); diff != "" {
		t.Errorf("Poll() result (-want +got):\n%s", diff)
	}
	if got := dv.Count(t, "alice"); got != 10 {
		t.Errorf("mailbox holds %d mails, want the 10 failed ones", got)
	}
	got := map[string]bool{}
	for key, body := range sink.bodies {
		got[string(body)] = true
		if sink.receives[key] != 1 {
			t.Errorf("%s received %d times, want once", key, sink.receives[key])
		}
	}
	for i, raw := range raws {
		if i%4 != 3 && !got[string(raw)] {
			t.Errorf("mail %d did not arrive octet for octet", i)
		}
	}

	res, err = f.Poll(t.Context(), sink)
	if err != nil {
		t.Fatalf("second Poll() error = %v", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{}, res); diff != "" {
		t.Errorf("second Poll() result (-want +got):\n%s", diff)
	}
	if got := len(sink.receives); got != n {
		t.Errorf("%d distinct mails received, want %d", got, n)
	}
}

func TestDovecot_EmptyAfterImport(t *testing.T) {
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "bob", "pw")
	for i := range 5 {
		dv.Deliver(t, "bob", mail(strconv.Itoa(i), "hello\r\n"))
	}
	sink := newFakeSink(&journal{})
	res, err := dovecotFetcher(t, dv.POP3Addr, "bob", "pw", nil).Poll(t.Context(), sink)
	if err != nil {
		t.Fatalf("Poll() error = %v", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 5, Deleted: 5}, res); diff != "" {
		t.Errorf("Poll() result (-want +got):\n%s", diff)
	}
	if got := dv.Count(t, "bob"); got != 0 {
		t.Errorf("mailbox holds %d mails, want 0", got)
	}
	for i := range 5 {
		key := ""
		for k, b := range sink.bodies {
			if bytes.Equal(b, mail(strconv.Itoa(i), "hello\r\n")) {
				key = k
			}
		}
		if key == "" {
			t.Errorf("mail %d missing or altered", i)
		}
	}
	// Last, because Dovecot delays every login from this IP after a failure.
	err = dovecotFetcher(t, dv.POP3Addr, "bob", "wrong", nil).Check(t.Context())
	if got, want := mailsource.ServerReply(err), "[AUTH] Authentication failed."; got != want {
		t.Errorf("Check() with a wrong password = %v, want the reply %q", err, want)
	}
}

func TestDovecot_TLSAndLogin(t *testing.T) {
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "carol", "pw")
	dv.AddUser(t, "utf8", "pässwört✓")
	tests := []struct {
		name    string
		addr    string
		user    string
		change  func(*Config)
		wantErr bool
	}{
		{name: "STLS fails without skip-verify or CA", addr: dv.POP3Addr,
			change: func(c *Config) { c.Security = mailsource.SecurityStartTLS }, wantErr: true},
		{name: "STLS passes with skip-verify", addr: dv.POP3Addr,
			change: func(c *Config) { c.Security = mailsource.SecurityStartTLS; c.TLSSkipVerify = true }},
		{name: "STLS passes with the CA", addr: dv.POP3Addr,
			change: func(c *Config) { c.Security = mailsource.SecurityStartTLS; c.CACertPEM = dv.CACertPEM }},
		{name: "implicit TLS fails without skip-verify or CA", addr: dv.POP3SAddr,
			change: func(c *Config) { c.Security = mailsource.SecurityTLS }, wantErr: true},
		{name: "implicit TLS passes with skip-verify", addr: dv.POP3SAddr,
			change: func(c *Config) { c.Security = mailsource.SecurityTLS; c.TLSSkipVerify = true }},
		{name: "implicit TLS passes with the CA", addr: dv.POP3SAddr,
			change: func(c *Config) { c.Security = mailsource.SecurityTLS; c.CACertPEM = dv.CACertPEM }},
		{name: "prevent plain login without TLS logs in with CRAM-MD5", addr: dv.POP3Addr,
			change: func(c *Config) { c.PreventPlainLogin = true }},
		{name: "AUTH PLAIN carries a UTF-8 password", addr: dv.POP3SAddr, user: "utf8",
			change: func(c *Config) {
				c.Security, c.CACertPEM, c.Password, c.PreventPlainLogin = mailsource.SecurityTLS, dv.CACertPEM, "pässwört✓", true
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			user := tc.user
			if user == "" {
				user = "carol"
			}
			err := dovecotFetcher(t, tc.addr, user, "pw", tc.change).Check(t.Context())
			if (err != nil) != tc.wantErr {
				t.Fatalf("Check() = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}
