// Package dovecottest runs a private, throwaway Dovecot (IMAP and POP3, plain,
// STARTTLS/STLS and implicit TLS) for tests, with its own config, users and
// Maildirs under the test's temp dir and its own ports on 127.0.0.1.
//
// It needs the Debian packages dovecot-imapd and dovecot-pop3d (.ci/prepare
// installs them). Without the dovecot binary, Start fails the test when the
// environment variable CI is set and skips it otherwise; under -short it
// always skips.
//
// Dovecot refuses to run mail processes as root, so when the test runs as
// root the mail users get the uid/gid of nobody:nogroup and their Maildirs
// are owned by them. Servers are independent: tests may start several in
// parallel.
//
// StartWith can add the XOAUTH2 and OAUTHBEARER mechanisms, whose tokens
// Dovecot checks itself against an OAuth2 introspection endpoint (such as
// adapters/oauth/oauthtest's), so that OAuth2 logins are real end to end.
package dovecottest

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvCI is the environment variable that turns a missing dovecot binary from
// a skip into a failure.
const EnvCI = "CI"

const (
	// startTimeout bounds how long Start waits for the ports to accept.
	startTimeout = 15 * time.Second
	// bindAttempts is how often Start picks new ports when Dovecot cannot
	// bind the ones it was given (another process took them in between).
	bindAttempts = 5
	// maxUserIPConnections replaces Dovecot's stock 10 connections per user
	// and IP, which parallel tests exceed.
	maxUserIPConnections = 1000
)

// Server is one running private Dovecot. Its methods may be called from
// several goroutines.
type Server struct {
	// IMAPAddr is host:port of plain IMAP with STARTTLS.
	IMAPAddr string
	// IMAPSAddr is host:port of IMAP over implicit TLS.
	IMAPSAddr string
	// POP3Addr is host:port of plain POP3 with STLS.
	POP3Addr string
	// POP3SAddr is host:port of POP3 over implicit TLS.
	POP3SAddr string
	// CACertPEM is the self-signed certificate the server presents (for
	// "localhost" and 127.0.0.1), PEM encoded. Trust it to verify TLS.
	CACertPEM []byte

	dir       string // config, logs, passwd-file, homes
	baseDir   string // sockets and pid file; short path, sockets have a length limit
	confPath  string
	logPath   string
	passwdDir string // one passwd-file per user
	oauth2URL string // introspection URL of the oauth2 passdb; "" for none
	maxConns  int    // Options.MaxConnections
	// trashFolder is marked \Trash; "" for none
	trashFolder string
	bin         string
	uid, gid    int // owner of mail files; -1 keeps the test's own

	mu      sync.Mutex // guards users, passwd-file writes and stopped
	users   map[string]bool
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the master process has exited
	waitErr error         // set before exited is closed
	stopped bool
}

// Options configure a server started with StartWith. The zero value is the
// server Start runs.
type Options struct {
	// OAuth2IntrospectionURL, when set, adds the XOAUTH2 and OAUTHBEARER
	// mechanisms, whose tokens Dovecot checks itself with an RFC 7662
	// introspection POST (form field token) to this URL on every login,
	// e.g. oauthtest.Provider's URL+"/introspect". A token is accepted when
	// the answer is {"active":true,"username":U} with U the login's user
	// (Dovecot lowercases both). Password logins keep the passwd-file
	// passdb; the userdb stays passwd-file, so an OAuth2 user still needs
	// AddUser (with any password) to have a mailbox.
	OAuth2IntrospectionURL string
	// MaxConnections sizes the server for this many IMAP and POP3
	// connections open at once (one per account polled, or per folder
	// watched with IDLE), e.g. 1,000 mailboxes of one help desk: process
	// and client limits are raised to fit, IMAP processes serve many
	// connections each, and IDLE also checks the mailbox every second
	// when the kernel's inotify instances run out. 0 keeps the small
	// stock limits, which hold about 100 logged-in IMAP connections.
	MaxConnections int
	// TrashFolder, when set, marks that folder \Trash (RFC 6154
	// SPECIAL-USE) in every user's mailbox; Dovecot then lists it with the
	// attribute. Nested names use "/" like CreateFolder. Empty: no folder
	// is marked, as on a server that does not know SPECIAL-USE.
	TrashFolder string
}

// Validate reports every problem of o.
func (o Options) Validate() error {
	var errs []error
	if u := o.OAuth2IntrospectionURL; u != "" {
		pu, err := url.Parse(u)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("dovecottest: OAuth2IntrospectionURL: %w", err))
		case pu.Scheme != "http" && pu.Scheme != "https", pu.Host == "":
			errs = append(errs, fmt.Errorf("dovecottest: OAuth2IntrospectionURL %q is not an absolute http(s) URL", u))
		}
		// The URL goes into a Dovecot settings file verbatim.
		if strings.ContainsAny(u, " \t\r\n\"'#%\\") {
			errs = append(errs, fmt.Errorf("dovecottest: OAuth2IntrospectionURL %q contains a character Dovecot's settings file cannot take as is", u))
		}
	}
	if o.MaxConnections < 0 || o.MaxConnections > maxConnectionsLimit {
		errs = append(errs, fmt.Errorf("dovecottest: MaxConnections %d is outside 0..%d", o.MaxConnections, maxConnectionsLimit))
	}
	if strings.ContainsAny(o.TrashFolder, "\"{}\r\n\t#") {
		errs = append(errs, fmt.Errorf("dovecottest: TrashFolder %q contains a character Dovecot's settings file cannot take as is", o.TrashFolder))
	}
	return errors.Join(errs...)
}

// Start starts a private Dovecot with password logins only and stops it
// when the test ends. It returns once all four ports greet like Dovecot.
// Under go test -short it skips the test: -short means no external servers.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is Start with options; invalid options fail the test.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if err := opts.Validate(); err != nil {
		tb.Fatal(err)
	}
	if testing.Short() {
		tb.Skip("dovecottest: needs a real Dovecot, skipped with -short")
	}
	bin := lookupDovecot()
	if bin == "" {
		msg := "dovecottest: dovecot binary not found; run .ci/prepare (installs dovecot-imapd dovecot-pop3d)"
		if os.Getenv(EnvCI) != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	s := &Server{bin: bin, users: map[string]bool{}, uid: -1, gid: -1, oauth2URL: opts.OAuth2IntrospectionURL,
		maxConns: opts.MaxConnections, trashFolder: opts.TrashFolder}
	if err := s.prepareDirs(tb); err != nil {
		tb.Fatalf("dovecottest: %v", err)
	}
	if err := s.writeCert(); err != nil {
		tb.Fatalf("dovecottest: %v", err)
	}
	if s.oauth2URL != "" {
		// Read by the auth process, which runs as user dovecot under root.
		if err := os.WriteFile(s.oauth2ConfPath(), []byte(s.oauth2Config()), 0o644); err != nil {
			tb.Fatalf("dovecottest: write oauth2 passdb settings: %v", err)
		}
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("dovecottest: log of the server at %s:\n%s", s.IMAPAddr, s.logTail(8<<10))
		}
	})
	var lastErr error
	for range bindAttempts {
		err := s.start()
		if err == nil {
			tb.Cleanup(s.Stop)
			return s
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			break
		}
	}
	tb.Fatalf("dovecottest: start: %v\nlog:\n%s", lastErr, s.logTail(8<<10))
	return nil
}

var errBind = errors.New("dovecot could not bind its ports")

// Seams for this package's own tests.
var (
	lookupDovecot = findDovecot
	pickPorts     = freePorts
)

// findDovecot returns the dovecot binary, also where /usr/sbin is not in PATH.
func findDovecot() string {
	if p, err := exec.LookPath("dovecot"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func (s *Server) prepareDirs(tb testing.TB) error {
	s.dir = tb.TempDir()
	// Dovecot's auth (user dovecot) and mail processes (nobody) must reach
	// files below the temp dir, which the testing package creates 0700.
	for _, d := range []string{filepath.Dir(s.dir), s.dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			return fmt.Errorf("open temp dir to dovecot's users: %w", err)
		}
	}
	// Unix socket paths are limited to 108 bytes and test names make
	// tb.TempDir long, so sockets get a short directory of their own.
	base, err := os.MkdirTemp("", "dct")
	if err != nil {
		return fmt.Errorf("create base_dir: %w", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		return fmt.Errorf("chmod base_dir: %w", err)
	}
	s.baseDir = base
	s.confPath = filepath.Join(s.dir, "dovecot.conf")
	s.logPath = filepath.Join(s.dir, "dovecot.log")
	s.passwdDir = filepath.Join(s.dir, "passwd.d")
	for _, d := range []string{"state", "home", "passwd.d"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o755); err != nil {
			return fmt.Errorf("create %s dir: %w", d, err)
		}
	}
	if os.Geteuid() == 0 {
		uid, gid, err := mailOwner()
		if err != nil {
			return err
		}
		s.uid, s.gid = uid, gid
	}
	return nil
}

func (s *Server) writeCert() error {
	certPEM, keyPEM, err := selfSignedCert()
	if err != nil {
		return err
	}
	s.CACertPEM = certPEM
	if err := os.WriteFile(filepath.Join(s.dir, "cert.pem"), certPEM, 0o644); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "key.pem"), keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

// start writes a config with fresh ports, runs the master in the foreground
// and waits for the ports. It returns an error wrapping errBind when the
// ports were taken.
func (s *Server) start() error {
	ports, err := pickPorts(4)
	if err != nil {
		return err
	}
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", fmt.Sprint(p)) }
	s.IMAPAddr, s.IMAPSAddr, s.POP3Addr, s.POP3SAddr = addr(ports[0]), addr(ports[1]), addr(ports[2]), addr(ports[3])
	if err := os.WriteFile(s.confPath, []byte(s.config(ports)), 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	_ = os.Truncate(s.logPath, 0)

	// A file, not a pipe: children inherit the master's stderr, and
	// exec's copying goroutine would make Wait wait for them too.
	out, err := os.Create(filepath.Join(s.dir, "master.out"))
	if err != nil {
		return fmt.Errorf("create master output file: %w", err)
	}
	defer func() { _ = out.Close() }()
	cmd := exec.Command(s.bin, "-F", "-c", s.confPath)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.exited, s.stopped = cmd, exited, false
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		close(exited)
	}()

	// A port accepting is not enough: another process may hold it while
	// Dovecot, failing to bind it, is about to exit. So each port must
	// greet like Dovecot, over TLS with our certificate where it is TLS.
	deadline := time.Now().Add(startTimeout)
	probes := []struct {
		addr     string
		tls      bool
		greeting string
	}{{s.IMAPAddr, false, "* OK"}, {s.IMAPSAddr, true, "* OK"}, {s.POP3Addr, false, "+OK"}, {s.POP3SAddr, true, "+OK"}}
	for _, pr := range probes {
		for {
			err := s.probe(pr.addr, pr.tls, pr.greeting)
			if err == nil {
				break
			}
			select {
			case <-exited:
				master := strings.TrimSpace(s.masterOutput())
				if strings.Contains(master+s.Log(), "in use") {
					return fmt.Errorf("%w: %s", errBind, master)
				}
				werr := s.waitErrLocked()
				if werr == nil {
					werr = errors.New("exit status 0")
				}
				return fmt.Errorf("dovecot exited: %w: %s", werr, master)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				s.Stop()
				return fmt.Errorf("%s does not greet like dovecot after %v: %w", pr.addr, startTimeout, err)
			}
		}
	}
	return nil
}

// probe connects to addr and reads the first line, which must start with
// greeting.
func (s *Server) probe(addr string, useTLS bool, greeting string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	// Short: a slow answer only means another try, while a foreign
	// listener that never greets must not hide that Dovecot has exited.
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if useTLS {
		tc := tls.Client(c, s.TLSConfig())
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		c = tc
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if !strings.HasPrefix(line, greeting) {
		return fmt.Errorf("greeting %q is not dovecot's", line)
	}
	return nil
}

func (s *Server) waitErrLocked() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitErr
}

// Stop kills the server and all its processes. It is registered
// with tb.Cleanup by Start; calling it again is harmless.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.stopped || s.cmd == nil {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()

	// Nothing here is worth a graceful shutdown, and Dovecot's master can
	// sit for seconds on SIGTERM waiting for anvil. It runs in a process
	// group of its own (procAttr), so the group goes at once, children
	// included.
	killGroup(cmd.Process.Pid)
	select {
	case <-exited:
	case <-time.After(2 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	waitGroupGone(cmd.Process.Pid, 2*time.Second)
}

// TLSConfig returns a client config that trusts the server's certificate
// and verifies it for "localhost".
func (s *Server) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CACertPEM)
	return &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// Log returns Dovecot's log so far, for test failure messages.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(read dovecot log: %v)", err)
	}
	return string(b)
}

func (s *Server) logTail(n int) string {
	l := s.Log()
	if len(l) > n {
		l = "…" + l[len(l)-n:]
	}
	if out := strings.TrimSpace(s.masterOutput()); out != "" {
		l = "(master output) " + out + "\n" + l
	}
	return l
}

// masterOutput returns what the master wrote to stdout and stderr, which
// holds the errors from before the log is open (bad config, ports in use).
func (s *Server) masterOutput() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "master.out"))
	return string(b)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// only when picked; Start retries with new ones if Dovecot cannot bind.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
