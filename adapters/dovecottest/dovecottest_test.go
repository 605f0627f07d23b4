package dovecottest_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
)

func testMail(i int) []byte {
	return []byte(fmt.Sprintf("From: sender%d@example.com\r\nTo: alice@example.com\r\n"+
		"Subject: mail %d\r\nMessage-ID: <m%d@example.com>\r\n\r\nbody %d\r\n", i, i, i, i))
}

// imapCount logs in over c and returns the number of mails in INBOX.
func imapCount(t *testing.T, c *imapclient.Client, user, pass string) uint32 {
	t.Helper()
	defer func() { _ = c.Close() }()
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("Login(%q) = %v", user, err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("Select(INBOX) = %v", err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("Logout() = %v", err)
	}
	return sel.NumMessages
}

func TestServer_IMAP(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t)
	s.AddUser(t, "alice", "secret-1")
	for i := range 3 {
		s.Deliver(t, "alice", testMail(i))
	}
	if got := s.Count(t, "alice"); got != 3 {
		t.Fatalf("Count(alice) = %d, want 3", got)
	}

	tests := []struct {
		name string
		dial func() (*imapclient.Client, error)
	}{
		{"plain IMAP", func() (*imapclient.Client, error) { return imapclient.DialInsecure(s.IMAPAddr, nil) }},
		{"IMAP with STARTTLS and the CA", func() (*imapclient.Client, error) {
			return imapclient.DialStartTLS(s.IMAPAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
		}},
		{"IMAPS with the CA", func() (*imapclient.Client, error) {
			return imapclient.DialTLS(s.IMAPSAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
		}},
		{"IMAPS without verification", func() (*imapclient.Client, error) {
			return imapclient.DialTLS(s.IMAPSAddr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := tc.dial()
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if got := imapCount(t, c, "alice", "secret-1"); got != 3 {
				t.Errorf("INBOX has %d messages, want 3", got)
			}
		})
	}
}

func TestServer_TLSVerificationNeedsTheCA(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t)
	for _, addr := range []string{s.IMAPSAddr, s.POP3SAddr} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost"})
		if err == nil {
			_ = conn.Close()
			t.Errorf("tls.Dial(%s) without the CA succeeded, want a verification error", addr)
		}
		conn, err = tls.Dial("tcp", addr, s.TLSConfig())
		if err != nil {
			t.Errorf("tls.Dial(%s) with the CA = %v", addr, err)
			continue
		}
		_ = conn.Close()
	}
	// The certificate is also valid for the IP address.
	cfg := s.TLSConfig()
	cfg.ServerName = ""
	conn, err := tls.Dial("tcp", s.IMAPSAddr, cfg)
	if err != nil {
		t.Fatalf("tls.Dial(%s) by IP with the CA = %v", s.IMAPSAddr, err)
	}
	_ = conn.Close()
}

func TestServer_AuthMechanisms(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t)
	s.AddUser(t, "bob", "pw-2")
	s.Deliver(t, "bob", testMail(1))
	tests := []struct {
		name   string
		client sasl.Client
	}{
		{"PLAIN", sasl.NewPlainClient("", "bob", "pw-2")},
		{"LOGIN", sasl.NewLoginClient("bob", "pw-2")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := imapclient.DialInsecure(s.IMAPAddr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			if err := c.Authenticate(tc.client); err != nil {
				t.Fatalf("Authenticate(%s) = %v", tc.name, err)
			}
		})
	}
	t.Run("CRAM-MD5 is offered", func(t *testing.T) {
		c, err := imapclient.DialInsecure(s.IMAPAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		if !c.Caps().Has(imap.Cap("AUTH=CRAM-MD5")) {
			t.Errorf("capabilities %v lack AUTH=CRAM-MD5", c.Caps())
		}
	})
	t.Run("a wrong password is refused", func(t *testing.T) {
		c, err := imapclient.DialInsecure(s.IMAPAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		if err := c.Login("bob", "wrong").Wait(); err == nil {
			t.Error("Login with a wrong password succeeded")
		}
	})
}

// pop3Stat logs in over a raw POP3 exchange (upgraded with STLS when
// tlsConfig is set) and returns STAT's count.
func pop3Stat(t *testing.T, conn net.Conn, tlsConfig *tls.Config, user, pass string) string {
	t.Helper()
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	cmd := func(format string, args ...any) string {
		t.Helper()
		if format != "" {
			if err := tp.PrintfLine(format, args...); err != nil {
				t.Fatalf("send %q: %v", format, err)
			}
		}
		line, err := tp.ReadLine()
		if err != nil {
			t.Fatalf("read reply to %q: %v", format, err)
		}
		if !strings.HasPrefix(line, "+OK") {
			t.Fatalf("reply to %q = %q, want +OK", format, line)
		}
		return line
	}
	cmd("") // greeting
	if tlsConfig != nil {
		cmd("STLS")
		tc := tls.Client(conn, tlsConfig)
		if err := tc.Handshake(); err != nil {
			t.Fatalf("STLS handshake: %v", err)
		}
		conn = tc
		tp = textproto.NewConn(tc)
	}
	cmd("USER %s", user)
	cmd("PASS %s", pass)
	stat := cmd("STAT")
	cmd("QUIT")
	f := strings.Fields(stat)
	if len(f) < 2 {
		t.Fatalf("STAT reply %q", stat)
	}
	return f[1]
}

func TestServer_POP3(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t)
	s.AddUser(t, "carol", "pop-pw")
	s.DeliverMany(t, "carol", [][]byte{testMail(1), testMail(2), testMail(3)})

	tests := []struct {
		name string
		addr string
		dial func(addr string) (net.Conn, error)
		stls *tls.Config
	}{
		{"plain POP3", s.POP3Addr, func(a string) (net.Conn, error) { return net.Dial("tcp", a) }, nil},
		{"POP3 with STLS and the CA", s.POP3Addr, func(a string) (net.Conn, error) { return net.Dial("tcp", a) }, s.TLSConfig()},
		{"POP3S with the CA", s.POP3SAddr, func(a string) (net.Conn, error) { return tls.Dial("tcp", a, s.TLSConfig()) }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tc.dial(tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := pop3Stat(t, conn, tc.stls, "carol", "pop-pw"); got != "3" {
				t.Errorf("STAT count = %s, want 3", got)
			}
		})
	}
}

func TestServer_DeliverManyAndFolders(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t)
	s.AddUser(t, "dave", "pw")
	raws := make([][]byte, 200)
	for i := range raws {
		raws[i] = testMail(i)
	}
	s.DeliverMany(t, "dave", raws)
	s.CreateFolder(t, "dave", "Processed")
	if got := s.Count(t, "dave"); got != 200 {
		t.Fatalf("Count(dave) = %d, want 200", got)
	}

	c, err := imapclient.DialInsecure(s.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Login("dave", "pw").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if !c.Caps().Has(imap.CapMove) || !c.Caps().Has(imap.CapUIDPlus) {
		t.Errorf("capabilities %v lack MOVE or UIDPLUS", c.Caps())
	}
	// UIDs follow delivery order.
	fetch, err := c.Fetch(imap.UIDSetNum(1, 2, 200), &imap.FetchOptions{UID: true,
		BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}, Peek: true}}}).Collect()
	if err != nil {
		t.Fatalf("Fetch = %v", err)
	}
	var subjects []string
	for _, m := range fetch {
		for _, b := range m.BodySection {
			subjects = append(subjects, strings.TrimSpace(string(b.Bytes)))
		}
	}
	want := []string{"Subject: mail 0", "Subject: mail 1", "Subject: mail 199"}
	if diff := cmp.Diff(want, subjects); diff != "" {
		t.Errorf("subjects by UID (-want +got):\n%s", diff)
	}
	if _, err := c.Move(imap.UIDSetNum(1, 2), "Processed").Wait(); err != nil {
		t.Fatalf("Move = %v", err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	if got, want := [2]int{s.Count(t, "dave"), s.FolderCount(t, "dave", "Processed")}, [2]int{198, 2}; got != want {
		t.Errorf("INBOX and Processed counts = %v, want %v", got, want)
	}
}

func TestServer_AddUserAfterLogin(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t)
	s.AddUser(t, "erin", "pw1")
	c, err := imapclient.DialInsecure(s.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := imapCount(t, c, "erin", "pw1"); got != 0 {
		t.Errorf("erin's INBOX has %d, want 0", got)
	}
	s.AddUser(t, "frank", "pw2")
	s.Deliver(t, "frank", testMail(7))
	c, err = imapclient.DialInsecure(s.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := imapCount(t, c, "frank", "pw2"); got != 1 {
		t.Errorf("frank's INBOX has %d, want 1", got)
	}
}

func TestStart_TwoServersInParallel(t *testing.T) {
	t.Parallel()
	a, b := dovecottest.Start(t), dovecottest.Start(t)
	if a.IMAPAddr == b.IMAPAddr || a.POP3Addr == b.POP3Addr {
		t.Fatalf("servers share ports: %s %s", a.IMAPAddr, b.IMAPAddr)
	}
	a.AddUser(t, "same", "pw")
	b.AddUser(t, "same", "pw")
	a.Deliver(t, "same", testMail(1))
	b.DeliverMany(t, "same", [][]byte{testMail(1), testMail(2)})
	for _, tc := range []struct {
		s    *dovecottest.Server
		want uint32
	}{{a, 1}, {b, 2}} {
		c, err := imapclient.DialInsecure(tc.s.IMAPAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := imapCount(t, c, "same", "pw"); got != tc.want {
			t.Errorf("INBOX at %s has %d, want %d", tc.s.IMAPAddr, got, tc.want)
		}
	}
	a.Stop()
	if c, err := net.DialTimeout("tcp", a.IMAPAddr, time.Second); err == nil {
		_ = c.Close()
		t.Errorf("%s still accepts after Stop", a.IMAPAddr)
	}
	c, err := imapclient.DialInsecure(b.IMAPAddr, nil)
	if err != nil {
		t.Fatalf("second server gone after the first stopped: %v", err)
	}
	if got := imapCount(t, c, "same", "pw"); got != 2 {
		t.Errorf("INBOX at %s has %d, want 2", b.IMAPAddr, got)
	}
}

func BenchmarkDeliverMany(b *testing.B) {
	s := dovecottest.Start(b)
	s.AddUser(b, "bench", "pw")
	raws := make([][]byte, 10000)
	for i := range raws {
		raws[i] = []byte(strings.Repeat("x", 4000))
	}
	for b.Loop() {
		s.DeliverMany(b, "bench", raws)
	}
	b.ReportMetric(float64(b.N*len(raws))/b.Elapsed().Seconds(), "mails/s")
}

func BenchmarkStartStop(b *testing.B) {
	for b.Loop() {
		s := dovecottest.Start(b)
		s.Stop()
	}
}

// TestServer_ManyConnections holds more logged-in IMAP connections, each
// in IDLE, than Dovecot's stock limits allow (100 imap processes), and
// checks that a mail delivered to the last of them is announced on its
// connection.
func TestServer_ManyConnections(t *testing.T) {
	t.Parallel()
	const conns = 250
	s := dovecottest.StartWith(t, dovecottest.Options{MaxConnections: conns})
	users := make([]string, conns)
	for i := range users {
		users[i] = fmt.Sprintf("user%03d", i)
		s.AddUser(t, users[i], "pw")
	}
	idle := make([]*rawIMAP, conns)
	for i, u := range users {
		nc, err := net.Dial("tcp", s.IMAPAddr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		c := &rawIMAP{conn: nc, r: bufio.NewReader(nc)}
		idle[i] = c
		// Over the limits the login would wait for a free process for ever.
		_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
		for _, step := range []struct{ cmd, want string }{
			{"", "* OK"},
			{"a LOGIN " + u + " pw", "a OK"},
			{"b SELECT INBOX", "b OK"},
			{"c IDLE", "+ "},
		} {
			if err := c.step(step.cmd, step.want); err != nil {
				t.Fatalf("connection %d of %d: %v", i+1, conns, err)
			}
		}
	}
	last := idle[conns-1]
	s.Deliver(t, users[conns-1], testMail(1))
	_ = last.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := last.step("", "* 1 EXISTS"); err != nil {
		t.Fatalf("IDLE of %s did not announce the delivered mail: %v", users[conns-1], err)
	}
}

// rawIMAP is a bare IMAP connection: cheap enough to hold hundreds.
type rawIMAP struct {
	conn net.Conn
	r    *bufio.Reader
}

// step sends cmd (none when empty) and reads lines until one starts with want.
func (c *rawIMAP) step(cmd, want string) error {
	if cmd != "" {
		if _, err := fmt.Fprintf(c.conn, "%s\r\n", cmd); err != nil {
			return fmt.Errorf("send %q: %w", cmd, err)
		}
	}
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("after %q, waiting for %q: %w", cmd, want, err)
		}
		if strings.HasPrefix(line, want) {
			return nil
		}
		if tag, _, ok := strings.Cut(want, " "); ok && tag != "*" && tag != "+" && strings.HasPrefix(line, tag+" ") {
			return fmt.Errorf("%q answered %q", cmd, strings.TrimSpace(line))
		}
	}
}
