package smtpsend_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/imapsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend"
)

// TestAppendSent checks that each SentFolder field reaches the IMAP login
// against a real Dovecot (which offers LOGIN, PLAIN and CRAM-MD5, and no
// XOAUTH2). Dovecot logs method=PLAIN for the LOGIN command too, so the
// commands are read from a recording proxy on plain-text connections.
func TestAppendSent(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(srv.CACertPEM)
	date := time.Date(2025, time.March, 14, 9, 26, 53, 0, time.UTC)
	tests := []struct {
		name      string
		addr      func() string
		configure func(*smtpsend.SentFolder)
		wantErr   func(error) bool // nil: success, a copy flagged \Seen in Sent
		// wantSent and neverSent are IMAP commands the client must and must
		// not have sent (plain-text connections only).
		wantSent, neverSent string
	}{
		{name: "prevent_plain_login sends AUTHENTICATE PLAIN, never LOGIN",
			addr: func() string { return srv.IMAPAddr },
			configure: func(f *smtpsend.SentFolder) {
				f.Security = smtpsend.SecurityNone
				f.PreventPlainLogin = true
			},
			wantSent: "AUTHENTICATE PLAIN", neverSent: "LOGIN"},
		{name: "without allow_plaintext_auth no password crosses in clear: CRAM-MD5",
			addr: func() string { return srv.IMAPAddr },
			configure: func(f *smtpsend.SentFolder) {
				f.Security = smtpsend.SecurityNone
				f.PreventPlainLogin, f.AllowPlaintextAuth = true, false
			},
			wantSent: "AUTHENTICATE CRAM-MD5", neverSent: "AUTHENTICATE PLAIN"},
		{name: "without allow_plaintext_auth no token crosses in clear",
			addr: func() string { return srv.IMAPAddr },
			configure: func(f *smtpsend.SentFolder) {
				f.Security, f.AllowPlaintextAuth = smtpsend.SecurityNone, false
				f.TokenSource = func(context.Context) (string, error) { return "token", nil }
			},
			wantErr:   func(err error) bool { return errors.Is(err, mailsource.ErrPlaintextAuth) },
			neverSent: "AUTHENTICATE"},
		{name: "without prevent_plain_login the LOGIN command is sent",
			addr:      func() string { return srv.IMAPAddr },
			configure: func(f *smtpsend.SentFolder) { f.Security = smtpsend.SecurityNone },
			wantSent:  "LOGIN", neverSent: "AUTHENTICATE"},
		{name: "implicit TLS trusting the account's CACertPEM",
			addr: func() string { return srv.IMAPSAddr },
			configure: func(f *smtpsend.SentFolder) {
				f.Security = smtpsend.SecurityTLS
				f.CACertPEM = srv.CACertPEM
			}},
		{name: "STARTTLS trusting RootCAs",
			addr: func() string { return srv.IMAPAddr },
			configure: func(f *smtpsend.SentFolder) {
				f.Security = smtpsend.SecurityStartTLS
				f.RootCAs = roots
			}},
		{name: "implicit TLS trusting neither does not trust Dovecot",
			addr:      func() string { return srv.IMAPSAddr },
			configure: func(f *smtpsend.SentFolder) { f.Security = smtpsend.SecurityTLS },
			wantErr: func(err error) bool {
				var certErr *tls.CertificateVerificationError
				return errors.As(err, &certErr)
			}},
		{name: "a wrong password carries Dovecot's words",
			addr: func() string { return srv.IMAPAddr },
			configure: func(f *smtpsend.SentFolder) {
				f.Security = smtpsend.SecurityNone
				f.Password = "wrong"
			},
			wantErr: func(err error) bool {
				return strings.HasPrefix(mailsource.ServerReply(err), "NO [AUTHENTICATIONFAILED]")
			}},
		{name: "a token source asks for XOAUTH2, which this Dovecot lacks",
			addr: func() string { return srv.IMAPAddr },
			configure: func(f *smtpsend.SentFolder) {
				f.Security = smtpsend.SecurityNone
				f.TokenSource = func(context.Context) (string, error) { return "token", nil }
			},
			wantErr:   func(err error) bool { return errors.Is(err, imapsource.ErrNoMechanism) },
			neverSent: "LOGIN"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			user := "copy" + strconv.Itoa(i)
			srv.AddUser(t, user, "pw-"+user)
			srv.CreateFolder(t, user, "Sent")
			proxy, sent := recordingProxy(t, tc.addr())
			host, port, _ := net.SplitHostPort(proxy)
			p, _ := strconv.Atoi(port)
			// Loopback Dovecot; the cases that check the plaintext rule unset it.
			f := smtpsend.SentFolder{Host: host, Port: p, Username: user, Password: "pw-" + user,
				Folder: "Sent", Timeout: 30 * time.Second, AllowPlaintextAuth: true}
			tc.configure(&f)

			err := smtpsend.AppendSent(context.Background(), f, []byte("Subject: copy\r\n\r\nbody\r\n"), date)

			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("AppendSent() error = %v", err)
			case tc.wantErr != nil && !tc.wantErr(err):
				t.Errorf("AppendSent() = %v (reply %q), not the error wanted", err, mailsource.ServerReply(err))
			}
			cmds := sent.commands()
			if tc.wantSent != "" && !hasCommand(cmds, tc.wantSent) {
				t.Errorf("client sent %q, want %s", cmds, tc.wantSent)
			}
			if tc.neverSent != "" && hasCommand(cmds, tc.neverSent) {
				t.Errorf("client sent %q, want no %s", cmds, tc.neverSent)
			}
			files := srv.FolderFiles(t, user, "Sent")
			switch {
			case tc.wantErr == nil && (len(files) != 1 || !strings.HasSuffix(files[0], ":2,S")):
				t.Errorf("Sent holds %q, want one mail flagged \\Seen (:2,S)", files)
			case tc.wantErr != nil && len(files) != 0:
				t.Errorf("Sent holds %q after a failure, want nothing", files)
			}
		})
	}
}

func hasCommand(cmds []string, cmd string) bool {
	for _, c := range cmds {
		if strings.HasPrefix(c, cmd+" ") || c == cmd {
			return true
		}
	}
	return false
}

// clientRecord is what clients sent through a recordingProxy.
type clientRecord struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (r *clientRecord) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

// commands returns the sent lines without their tags ("LOGIN a b").
func (r *clientRecord) commands() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, line := range strings.Split(r.buf.String(), "\r\n") {
		if _, rest, ok := strings.Cut(line, " "); ok {
			out = append(out, rest)
		}
	}
	return out
}

// recordingProxy forwards connections on a free port to target until the
// test ends, recording what clients send.
func recordingProxy(tb testing.TB, target string) (string, *clientRecord) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	rec := &clientRecord{}
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
				_, _ = io.Copy(io.MultiWriter(server, rec), client)
				_ = server.Close()
			}()
			go func() {
				_, _ = io.Copy(client, server)
				_ = client.Close()
			}()
		}
	}()
	return ln.Addr().String(), rec
}
