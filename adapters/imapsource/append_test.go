package imapsource

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// sentAt is the date the tests append with; the internal date must keep it.
var sentAt = time.Date(2025, time.March, 14, 9, 26, 53, 0, time.FixedZone("", 3600))

// storedMail is a mail as read back from a folder.
type storedMail struct {
	Flags        []imap.Flag
	InternalDate time.Time
	Body         string
}

// mustReadFolder logs in with LOGIN over c and returns every mail of
// folder with its flags and internal date.
func mustReadFolder(tb testing.TB, c *imapclient.Client, user, password, folder string) []storedMail {
	tb.Helper()
	defer func() { _ = c.Close() }()
	if err := c.Login(user, password).Wait(); err != nil {
		tb.Fatalf("read back: login: %v", err)
	}
	sel, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		tb.Fatalf("read back: select %s: %v", folder, err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	var all imap.SeqSet
	all.AddRange(1, 0) // 1:*
	msgs, err := c.Fetch(all, &imap.FetchOptions{Flags: true, InternalDate: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		tb.Fatalf("read back: fetch %s: %v", folder, err)
	}
	var out []storedMail
	for _, m := range msgs {
		var body []byte
		for _, b := range m.BodySection {
			body = b.Bytes
		}
		flags := slices.DeleteFunc(slices.Clone(m.Flags), func(f imap.Flag) bool { return f == `\Recent` })
		out = append(out, storedMail{Flags: flags, InternalDate: m.InternalDate, Body: string(body)})
	}
	return out
}

// wantStored is what appending testMail(body) with \Seen at sentAt leaves.
func wantStored(body string) []storedMail {
	return []storedMail{{Flags: []imap.Flag{imap.FlagSeen}, InternalDate: sentAt, Body: string(testMail(body))}}
}

var storedCmp = cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })

func TestAppend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		server    serverOptions
		configure func(t *testing.T, c *Config, ca []byte)
		wantCmd   string // a command the server must have seen
	}{
		{name: "LOGIN by default", configure: func(*testing.T, *Config, []byte) {}, wantCmd: "LOGIN"},
		{name: "prevent_plain_login uses AUTHENTICATE PLAIN",
			configure: func(_ *testing.T, c *Config, _ []byte) { c.PreventPlainLogin = true },
			wantCmd:   "AUTHENTICATE PLAIN"},
		{name: "prevent_plain_login falls back to CRAM-MD5",
			server:    serverOptions{mechs: []string{"CRAM-MD5"}},
			configure: func(_ *testing.T, c *Config, _ []byte) { c.PreventPlainLogin = true },
			wantCmd:   "AUTHENTICATE CRAM-MD5"},
		{name: "a token source logs in with AUTHENTICATE XOAUTH2",
			server: serverOptions{mechs: []string{"PLAIN", "XOAUTH2"}},
			configure: func(_ *testing.T, c *Config, _ []byte) {
				c.Password = ""
				c.TokenSource = func(context.Context) (string, error) { return testToken, nil }
			},
			wantCmd: "AUTHENTICATE XOAUTH2"},
		{name: "implicit TLS trusting the extra CA",
			server: serverOptions{tls: true},
			configure: func(_ *testing.T, c *Config, ca []byte) {
				c.Security = mailsource.SecurityTLS
				c.CACertPEM = ca
			},
			wantCmd: "LOGIN"},
		{name: "STARTTLS adding the extra CA to RootCAs, which stay unchanged",
			server: serverOptions{startTLS: true},
			configure: func(t *testing.T, c *Config, ca []byte) {
				c.Security = mailsource.SecurityStartTLS
				c.RootCAs = x509.NewCertPool()
				c.CACertPEM = ca
				t.Cleanup(func() {
					if !c.RootCAs.Equal(x509.NewCertPool()) {
						t.Errorf("Append() added to the caller's RootCAs")
					}
				})
			},
			wantCmd: "LOGIN"},
		{name: "the folder settings play no part",
			configure: func(_ *testing.T, c *Config, _ []byte) {
				c.Folders = []string{" "}
				c.AfterImport = "archive"
				c.BatchSize = -1
			},
			wantCmd: "LOGIN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.server.preCreate = []string{"Sent"}
			ts := startServer(t, tc.server)
			cfg := ts.config(t)
			tc.configure(t, &cfg, ts.certPE)
			raw := testMail("append " + tc.name)

			err := Append(context.Background(), cfg, "Sent", raw, []imap.Flag{imap.FlagSeen}, sentAt)
			if err != nil {
				t.Fatalf("Append() error = %v", err)
			}

			cmds := ts.commands()
			if !slices.ContainsFunc(cmds, func(c string) bool { return strings.HasPrefix(c, tc.wantCmd) }) {
				t.Errorf("commands %q lack %q", cmds, tc.wantCmd)
			}
			if tc.wantCmd != "LOGIN" && slices.ContainsFunc(cmds, func(c string) bool { return strings.HasPrefix(c, "LOGIN") }) {
				t.Errorf("LOGIN sent although %s was wanted", tc.wantCmd)
			}
			if cmds[len(cmds)-1] != "LOGOUT" {
				t.Errorf("last command = %q, want LOGOUT", cmds[len(cmds)-1])
			}
			c := dialTestServer(t, ts, tc.server)
			got := mustReadFolder(t, c, testUser, testPassword, "Sent")
			if diff := cmp.Diff(wantStored("append "+tc.name), got, storedCmp); diff != "" {
				t.Errorf("Sent after Append() (-want +got):\n%s", diff)
			}
		})
	}
}

// dialTestServer connects to ts as the test's own reader would.
func dialTestServer(tb testing.TB, ts *testServer, o serverOptions) *imapclient.Client {
	tb.Helper()
	opts := &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // reading back from the test's server
	var (
		c   *imapclient.Client
		err error
	)
	switch {
	case o.tls:
		c, err = imapclient.DialTLS(ts.addr, opts)
	case o.startTLS:
		c, err = imapclient.DialStartTLS(ts.addr, opts)
	default:
		c, err = imapclient.DialInsecure(ts.addr, opts)
	}
	if err != nil {
		tb.Fatalf("read back: dial: %v", err)
	}
	return c
}

func TestAppend_fails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		server    serverOptions
		folder    string
		configure func(*Config)
		wantErr   error  // nil: any error
		wantReply string // the server's words, "" for none
		noDial    bool   // the error comes before any connection
	}{
		{name: "a wrong password returns the server's words", folder: "Sent",
			configure: func(c *Config) { c.Password = "wrong" },
			wantErr:   ErrRefused, wantReply: "NO [AUTHENTICATIONFAILED] Authentication failed"},
		{name: "a bad token returns the server's words after the JSON challenge", folder: "Sent",
			server: serverOptions{mechs: []string{"XOAUTH2"}},
			configure: func(c *Config) {
				c.TokenSource = func(context.Context) (string, error) { return "expired", nil }
			},
			wantErr: ErrRefused, wantReply: "NO [AUTHENTICATIONFAILED] AUTHENTICATE failed."},
		{name: "a missing folder returns the server's words", folder: "Nowhere",
			configure: func(*Config) {},
			wantErr:   ErrRefused, wantReply: "NO [TRYCREATE] No such mailbox"},
		{name: "prevent_plain_login without PLAIN or CRAM-MD5 refuses to log in", folder: "Sent",
			server:    serverOptions{mechs: []string{"GSSAPI"}},
			configure: func(c *Config) { c.PreventPlainLogin = true },
			wantErr:   ErrNoMechanism},
		{name: "an empty folder name is refused before dialing", folder: " ",
			configure: func(*Config) {}, noDial: true},
		{name: "an invalid connection setting is refused before dialing", folder: "Sent",
			configure: func(c *Config) { c.Security = "ssl" }, noDial: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.server.preCreate = []string{"Sent"}
			ts := startServer(t, tc.server)
			cfg := ts.config(t)
			tc.configure(&cfg)

			err := Append(context.Background(), cfg, tc.folder, testMail("refused"), []imap.Flag{imap.FlagSeen}, sentAt)

			if err == nil {
				t.Fatalf("Append() = nil, want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Append() = %v, want %v", err, tc.wantErr)
			}
			if got := mailsource.ServerReply(err); got != tc.wantReply {
				t.Errorf("ServerReply(Append()) = %q, want %q", got, tc.wantReply)
			}
			if tc.noDial && ts.trace.String() != "" {
				t.Errorf("Append() talked to the server: %q", ts.trace.String())
			}
			if n := ts.count(t, "Sent"); n != 0 {
				t.Errorf("Sent holds %d mails, want 0", n)
			}
		})
	}
}

func TestAppend_tokenSourceIsAskedOnce(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{mechs: []string{"XOAUTH2"}, preCreate: []string{"Sent"}})
	cfg := ts.config(t)
	cfg.Password = ""
	var calls atomic.Int32
	cfg.TokenSource = func(context.Context) (string, error) {
		calls.Add(1)
		return testToken, nil
	}

	if err := Append(context.Background(), cfg, "Sent", testMail("oauth"), nil, time.Time{}); err != nil {
		t.Fatalf("Append() error = %v", err)
	}

	if got := calls.Load(); got != 1 {
		t.Errorf("TokenSource called %d times, want 1", got)
	}
	if strings.Contains(ts.trace.String(), "LOGIN "+testUser) {
		t.Errorf("LOGIN sent although a token source is set")
	}
}

// TestAppend_stalledServerEndsAfterTimeout: a server that greets and then
// never answers holds Append no longer than Config.Timeout.
func TestAppend_stalledServerEndsAfterTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				_, _ = io.WriteString(conn, "* OK [CAPABILITY IMAP4rev1] stalls after this\r\n")
				_, _ = io.Copy(io.Discard, bufio.NewReader(conn))
			}()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	cfg := Config{Host: addr.IP.String(), Port: addr.Port, Security: mailsource.SecurityNone, AllowPlaintextAuth: true,
		Username: "u", Password: "p", Timeout: 200 * time.Millisecond}

	done := make(chan error, 1)
	go func() { done <- Append(context.Background(), cfg, "Sent", testMail("stalled"), nil, sentAt) }()

	select {
	case err := <-done:
		if !errors.Is(err, ErrStalled) {
			t.Errorf("Append() = %v, want ErrStalled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Append() still waiting 10 s after a 200 ms timeout")
	}
}

// TestDovecot_Append appends to a real Dovecot, which offers LOGIN, PLAIN
// and CRAM-MD5, in the ways the Sent-folder copy uses. Dovecot logs
// method=PLAIN for the LOGIN command too (imap-login runs it as SASL
// PLAIN), so which command was sent is read from a recording proxy.
func TestDovecot_Append(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	sentCommand := func(sent, cmd string) bool {
		for _, line := range strings.Split(sent, "\r\n") {
			if _, rest, ok := strings.Cut(line, " "); ok && strings.HasPrefix(rest, cmd+" ") {
				return true
			}
		}
		return false
	}
	tests := []struct {
		name      string
		addr      func() string
		folder    string // "" means Sent
		configure func(*Config)
		// check judges Append's error; sent is what the client sent
		// (plain text only when Security is none).
		check func(t *testing.T, user, sent string, err error)
	}{
		{name: "prevent_plain_login logs in with AUTHENTICATE PLAIN, never LOGIN",
			addr: func() string { return srv.IMAPAddr },
			configure: func(c *Config) {
				c.Security = mailsource.SecurityNone // so that the proxy sees the commands
				c.AllowPlaintextAuth = true
				c.PreventPlainLogin = true
			},
			check: func(t *testing.T, user, sent string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("Append() error = %v", err)
				}
				if !sentCommand(sent, "AUTHENTICATE PLAIN") || sentCommand(sent, "LOGIN") {
					t.Errorf("client sent %q, want AUTHENTICATE PLAIN and no LOGIN", sent)
				}
				if strings.Contains(sent, "pw-"+user) {
					t.Errorf("the password crossed the wire in clear text")
				}
				if diff := cmp.Diff([]string{"PLAIN"}, loginMethods(srv.Log(), user)); diff != "" {
					t.Errorf("Dovecot's login methods for %s (-want +got):\n%s", user, diff)
				}
			}},
		{name: "without prevent_plain_login the LOGIN command is sent",
			addr:      func() string { return srv.IMAPAddr },
			configure: func(c *Config) { c.Security, c.AllowPlaintextAuth = mailsource.SecurityNone, true },
			check: func(t *testing.T, _, sent string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("Append() error = %v", err)
				}
				if !sentCommand(sent, "LOGIN") || sentCommand(sent, "AUTHENTICATE") {
					t.Errorf("client sent %q, want LOGIN", sent)
				}
			}},
		{name: "without TLS and allow_plaintext_auth the password stays off the wire: CRAM-MD5",
			addr:      func() string { return srv.IMAPAddr },
			configure: func(c *Config) { c.Security = mailsource.SecurityNone },
			check: func(t *testing.T, user, sent string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("Append() error = %v", err)
				}
				if !strings.Contains(sent, " AUTHENTICATE CRAM-MD5\r\n") || sentCommand(sent, "LOGIN") || sentCommand(sent, "AUTHENTICATE PLAIN") {
					t.Errorf("client sent %q, want AUTHENTICATE CRAM-MD5 only", sent)
				}
				if diff := cmp.Diff([]string{"CRAM-MD5"}, loginMethods(srv.Log(), user)); diff != "" {
					t.Errorf("Dovecot's login methods for %s (-want +got):\n%s", user, diff)
				}
			}},
		{name: "implicit TLS trusting Dovecot's certificate through CACertPEM",
			addr:      func() string { return srv.IMAPSAddr },
			configure: func(c *Config) { c.Security = mailsource.SecurityTLS }, // dovecotConfig sets CACertPEM
			check: func(t *testing.T, _, _ string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("Append() error = %v", err)
				}
			}},
		{name: "implicit TLS without CACertPEM does not trust Dovecot",
			addr: func() string { return srv.IMAPSAddr },
			configure: func(c *Config) {
				c.Security = mailsource.SecurityTLS
				c.CACertPEM = nil
			},
			check: func(t *testing.T, _, _ string, err error) {
				t.Helper()
				var certErr *tls.CertificateVerificationError
				if !errors.As(err, &certErr) {
					t.Errorf("Append() = %v, want a certificate verification error", err)
				}
			}},
		{name: "a wrong password returns Dovecot's words",
			addr:      func() string { return srv.IMAPAddr },
			configure: func(c *Config) { c.Password = "wrong" },
			check: func(t *testing.T, _, _ string, err error) {
				t.Helper()
				if !errors.Is(err, ErrRefused) || !strings.HasPrefix(mailsource.ServerReply(err), "NO [AUTHENTICATIONFAILED]") {
					t.Errorf("Append() = %v (reply %q), want Dovecot's NO [AUTHENTICATIONFAILED]", err, mailsource.ServerReply(err))
				}
			}},
		{name: "a missing folder returns Dovecot's words, creating nothing",
			addr: func() string { return srv.IMAPAddr }, folder: "Nowhere",
			configure: func(*Config) {},
			check: func(t *testing.T, _, _ string, err error) {
				t.Helper()
				if !errors.Is(err, ErrRefused) || !strings.HasPrefix(mailsource.ServerReply(err), "NO [TRYCREATE]") {
					t.Errorf("Append() = %v (reply %q), want Dovecot's NO [TRYCREATE]", err, mailsource.ServerReply(err))
				}
			}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			user := "sent" + string(rune('a'+i))
			srv.AddUser(t, user, "pw-"+user)
			srv.CreateFolder(t, user, "Sent")
			proxy, sent := startRecordingProxy(t, tc.addr())
			cfg := dovecotConfig(t, srv, proxy, user, "pw-"+user)
			tc.configure(&cfg)
			body := "sent copy " + user
			folder := tc.folder
			if folder == "" {
				folder = "Sent"
			}

			err := Append(context.Background(), cfg, folder, testMail(body), []imap.Flag{imap.FlagSeen}, sentAt)

			tc.check(t, user, sent.String(), err)
			want := wantStored(body)
			if err != nil {
				want = nil
			}
			c, derr := imapclient.DialStartTLS(srv.IMAPAddr, &imapclient.Options{TLSConfig: srv.TLSConfig()})
			if derr != nil {
				t.Fatalf("read back: dial: %v", derr)
			}
			got := mustReadFolder(t, c, user, "pw-"+user, "Sent")
			if diff := cmp.Diff(want, got, storedCmp); diff != "" {
				t.Errorf("Sent after Append() (-want +got):\n%s", diff)
			}
			files := srv.FolderFiles(t, user, "Sent")
			if len(want) == 1 && (len(files) != 1 || !strings.HasSuffix(files[0], ":2,S")) {
				t.Errorf("Sent's Maildir files = %q, want one with flags :2,S", files)
			}
		})
	}
}

// startRecordingProxy forwards connections on a free port to target until
// the test ends, recording what clients send.
func startRecordingProxy(tb testing.TB, target string) (string, *syncBuffer) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	sent := &syncBuffer{}
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			go func() {
				_, _ = io.Copy(io.MultiWriter(server, sent), client)
				_ = server.Close()
			}()
			go func() {
				_, _ = io.Copy(client, server)
				_ = client.Close()
			}()
		}
	}()
	return ln.Addr().String(), sent
}

// loginMethods returns the SASL methods of Dovecot's successful logins of
// user, from log lines like
// "imap-login: Login: user=<bob>, method=PLAIN, rip=127.0.0.1, …".
func loginMethods(log, user string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		_, rest, ok := strings.Cut(line, "Login: user=<"+user+">, method=")
		if !ok {
			continue
		}
		method, _, _ := strings.Cut(rest, ",")
		out = append(out, method)
	}
	return out
}
