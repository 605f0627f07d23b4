package imapsource

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
)

// watchRun is one Watch running in the background of a test.
type watchRun struct {
	established chan struct{}
	newMail     chan struct{}
	done        chan error
	cancel      context.CancelFunc
	notices     atomic.Int64
}

func startWatch(tb testing.TB, f *Fetcher, folder string, renew time.Duration) *watchRun {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchRun{established: make(chan struct{}), newMail: make(chan struct{}, 100), done: make(chan error, 1), cancel: cancel}
	var once atomic.Bool
	go func() {
		w.done <- f.Watch(ctx, folder, mailsource.WatchOptions{Renew: renew,
			Established: func() {
				if !once.Swap(true) {
					close(w.established)
				}
			},
			NewMail: func() {
				w.notices.Add(1)
				select {
				case w.newMail <- struct{}{}:
				default:
				}
			}})
	}()
	tb.Cleanup(func() {
		cancel()
		if err := <-w.done; err != nil && !errors.Is(err, context.Canceled) {
			tb.Logf("Watch() ended with %v", err) // the test has looked at it
		}
	})
	return w
}

func (w *watchRun) waitEstablished(tb testing.TB) {
	tb.Helper()
	select {
	case <-w.established:
	case err := <-w.done:
		tb.Fatalf("Watch() ended before IDLE ran: %v", err)
	case <-time.After(30 * time.Second):
		tb.Fatal("IDLE not established after 30s")
	}
}

func (w *watchRun) waitNewMail(tb testing.TB, what string) {
	tb.Helper()
	select {
	case <-w.newMail:
	case err := <-w.done:
		tb.Fatalf("%s: Watch() ended: %v", what, err)
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s: no NewMail after 30s", what)
	}
}

func (w *watchRun) waitDone(tb testing.TB) error {
	tb.Helper()
	select {
	case err := <-w.done:
		w.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		tb.Fatal("Watch() still running 30s after its connection ended")
		return nil
	}
}

// TestDovecot_WatchAnnouncesNewMailAcrossRenewals idles on a real Dovecot
// with a renewal every 200ms: mail delivered after several renewals is
// still announced, mail already there when the watch starts is announced
// once, and nothing else is.
func TestDovecot_WatchAnnouncesNewMailAcrossRenewals(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	srv.AddUser(t, "erin", "pw-erin")
	srv.Deliver(t, "erin", testMails(1, "before")[0])
	f := mustNew(t, dovecotConfig(t, srv, srv.IMAPAddr, "erin", "pw-erin"))
	w := startWatch(t, f, "INBOX", 200*time.Millisecond)
	w.waitEstablished(t)
	w.waitNewMail(t, "a mail already in the folder when the watch starts")

	time.Sleep(time.Second) // about five renewals
	if n := srv.Connections(t, "erin", "imap"); n != 1 {
		t.Errorf("erin has %d IMAP connections while one watch runs, want 1", n)
	}
	srv.Deliver(t, "erin", testMails(1, "after-renewals")[0])
	w.waitNewMail(t, "a mail delivered after renewals")
	if n := w.notices.Load(); n != 2 {
		t.Errorf("NewMail called %d times for two mails, want 2", n)
	}

	w.cancel()
	if err := w.waitDone(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch() after cancel = %v, want context.Canceled", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Connections(t, "erin", "imap") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the IDLE connection is still logged in 10s after cancel: %v", srv.Who(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDovecot_WatchEndsWhenKicked: an administrator's kick (or a restart)
// ends the watch with an error at once, so the caller re-establishes it;
// a second watch of the same fetcher on an unchanged folder does not
// announce the mail the poll already saw.
func TestDovecot_WatchEndsWhenKicked(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	srv.AddUser(t, "frank", "pw-frank")
	f := mustNew(t, dovecotConfig(t, srv, srv.IMAPAddr, "frank", "pw-frank"))
	w := startWatch(t, f, "INBOX", time.Hour)
	w.waitEstablished(t)
	srv.Kick(t, "frank")
	err := w.waitDone(t)
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Watch() after a kick = %v, want a connection error", err)
	}
	if w.notices.Load() != 0 {
		t.Errorf("NewMail called %d times on an empty folder, want 0", w.notices.Load())
	}

	srv.Deliver(t, "frank", testMails(1, "while-down")[0])
	again := startWatch(t, f, "INBOX", time.Hour)
	again.waitEstablished(t)
	again.waitNewMail(t, "a mail that came while the watch was down")
}

// TestDovecot_WatchWithXOAUTH2 idles after an OAuth2 login that Dovecot
// checks at the identity provider.
func TestDovecot_WatchWithXOAUTH2(t *testing.T) {
	t.Parallel()
	idp := oauthtest.Start(t, oauthtest.Options{})
	srv := dovecottest.StartWith(t, dovecottest.Options{OAuth2IntrospectionURL: idp.URL + "/introspect"})
	srv.AddUser(t, "support", "unused-password")
	cfg := dovecotConfig(t, srv, srv.IMAPAddr, "support", "")
	cfg.TokenSource = func(context.Context) (string, error) { return idp.AccessTokenFor("support"), nil }
	w := startWatch(t, mustNew(t, cfg), "INBOX", time.Hour)
	w.waitEstablished(t)
	srv.Deliver(t, "support", testMails(1, "oauth")[0])
	w.waitNewMail(t, "a mail to an XOAUTH2 watch")
	if !strings.Contains(srv.Log(), "method=XOAUTH2") {
		t.Errorf("Dovecot's log has no XOAUTH2 login:\n%s", srv.Log())
	}
}

// TestWatch_serverWithoutIDLE talks to a bare IMAP4rev1 server that
// offers no IDLE (go-imap's server always does, so a few lines of the
// protocol stand in for one).
func TestWatch_serverWithoutIDLE(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		_, _ = io.WriteString(conn, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] no idle here\r\n")
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch verb, _, _ := strings.Cut(strings.ToUpper(cmd), " "); verb {
			case "CAPABILITY":
				_, _ = io.WriteString(conn, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"+tag+" OK done\r\n")
			case "LOGOUT":
				_, _ = io.WriteString(conn, "* BYE\r\n"+tag+" OK done\r\n")
				return
			default:
				_, _ = io.WriteString(conn, tag+" OK done\r\n")
			}
		}
	}()
	cfg := Config{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Security: mailsource.SecurityNone,
		AllowPlaintextAuth: true, Username: testUser, Password: testPassword, Timeout: 10 * time.Second}
	err = mustNew(t, cfg).Watch(context.Background(), "INBOX", mailsource.WatchOptions{})
	if !errors.Is(err, mailsource.ErrPushUnsupported) {
		t.Errorf("Watch() on a server without IDLE = %v, want ErrPushUnsupported", err)
	}
}

func TestWatch_newMailOnTheInMemoryServer(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	w := startWatch(t, mustNew(t, ts.config(t)), "INBOX", 50*time.Millisecond)
	w.waitEstablished(t)
	ts.deliver(t, "INBOX", testMails(2, "mem")...)
	w.waitNewMail(t, "mail delivered to the in-memory server")
}
