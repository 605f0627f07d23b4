package pop3source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// journal records, in order, what the fake server and the fake sink saw,
// so tests can check that a DELE came after the commit of its mail.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, fmt.Sprintf(format, args...))
}

func (j *journal) all() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.entries...)
}

// fakeMail is one message in the fake maildrop; raw is stored as on disk
// (CRLF) and sent through textproto's DotWriter.
type fakeMail struct {
	uidl string
	raw  []byte
}

// fakeServer is a scripted POP3 server (RFC 1939 with CAPA, STLS, AUTH
// PLAIN/XOAUTH2, PIPELINING) with fault injection. Configure it before the
// first connection.
type fakeServer struct {
	addr string
	ln   net.Listener
	j    *journal

	user, pass string
	token      string   // XOAUTH2 bearer token accepted
	caps       []string // CAPA lines; nil means the default set
	noCapa     bool     // answer CAPA with -ERR (an RFC 1939-only server)
	noAuth     bool     // answer AUTH with -ERR
	starttls   *tls.Config
	// stlsInject is sent right after STLS's +OK, in plain text (an
	// attacker's injected reply).
	stlsInject string
	implicit   *tls.Config
	delay      time.Duration // before every reply line
	// errOn returns a -ERR text for a command line the server should refuse.
	errOn func(line string) (string, bool)
	// dropRETR maps a UIDL to how many body octets are sent before the
	// connection is dropped; it fires once per UIDL.
	dropRETR map[string]int

	mu    sync.Mutex
	mails []fakeMail
	retrs map[string]int
	wg    sync.WaitGroup
}

func newFakeServer(tb testing.TB, j *journal) *fakeServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	s := &fakeServer{addr: ln.Addr().String(), ln: ln, j: j, user: "alice", pass: "secret",
		retrs: map[string]int{}, dropRETR: map[string]int{}}
	tb.Cleanup(func() {
		_ = ln.Close()
		s.wg.Wait()
	})
	return s
}

// start accepts connections; call it after configuring s.
func (s *fakeServer) start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				s.serve(conn)
			}()
		}
	}()
}

func (s *fakeServer) add(mails ...fakeMail) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mails = append(s.mails, mails...)
}

func (s *fakeServer) uidls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.mails {
		out = append(out, m.uidl)
	}
	return out
}

func (s *fakeServer) retrCount(uidl string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retrs[uidl]
}

func (s *fakeServer) hostPort(tb testing.TB) (string, int) {
	tb.Helper()
	h, p, err := net.SplitHostPort(s.addr)
	if err != nil {
		tb.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		tb.Fatal(err)
	}
	return h, port
}

type session struct {
	s      *fakeServer
	conn   net.Conn
	r      *textproto.Reader
	w      *textproto.Writer
	tls    bool
	authed bool
	drop   []fakeMail // maildrop locked at login
	dele   map[int]bool
}

func (ss *session) reply(format string, args ...any) error {
	if ss.s.delay > 0 {
		time.Sleep(ss.s.delay)
	}
	return ss.w.PrintfLine(format, args...)
}

func (ss *session) setConn(c net.Conn) {
	ss.conn = c
	ss.r = textproto.NewReader(bufio.NewReader(c))
	ss.w = textproto.NewWriter(bufio.NewWriter(c))
}

func (s *fakeServer) serve(conn net.Conn) {
	ss := &session{s: s, dele: map[int]bool{}}
	if s.implicit != nil {
		conn = tls.Server(conn, s.implicit)
		ss.tls = true
	}
	ss.setConn(conn)
	if ss.reply("+OK fake POP3 ready") != nil {
		return
	}
	for {
		line, err := ss.r.ReadLine()
		if err != nil {
			return
		}
		s.j.add("server %s", line)
		if s.errOn != nil {
			if text, ok := s.errOn(line); ok {
				if ss.reply("-ERR %s", text) != nil || strings.EqualFold(line, "QUIT") {
					return
				}
				continue
			}
		}
		verb, arg, _ := strings.Cut(line, " ")
		if !ss.handle(strings.ToUpper(verb), arg) {
			return
		}
	}
}

// handle runs one command; false ends the session.
func (ss *session) handle(verb, arg string) bool {
	s := ss.s
	var err error
	switch verb {
	case "CAPA":
		if s.noCapa {
			err = ss.reply("-ERR unknown command")
			break
		}
		caps := s.caps
		if caps == nil {
			caps = []string{"USER", "UIDL", "TOP", "PIPELINING", "SASL PLAIN XOAUTH2"}
		}
		if s.starttls != nil && !ss.tls {
			caps = append(caps, "STLS")
		}
		err = ss.reply("+OK capability list follows")
		for _, c := range caps {
			if err == nil {
				err = ss.reply("%s", c)
			}
		}
		if err == nil {
			err = ss.reply(".")
		}
	case "STLS":
		if s.starttls == nil || ss.tls {
			err = ss.reply("-ERR no STLS here")
			break
		}
		if err = ss.reply("+OK begin TLS%s", s.stlsInject); err != nil {
			return false
		}
		tc := tls.Server(ss.conn, s.starttls)
		if tc.Handshake() != nil {
			return false
		}
		ss.tls = true
		ss.setConn(tc)
	case "USER":
		err = ss.reply("+OK send PASS")
	case "PASS":
		err = ss.login(arg == s.pass, "[AUTH] Invalid login, try again")
	case "AUTH":
		err = ss.auth(arg)
	case "QUIT":
		if ss.authed {
			gone := map[string]bool{}
			for i, m := range ss.drop {
				gone[m.uidl] = ss.dele[i+1]
			}
			s.mu.Lock()
			var keep []fakeMail
			for _, m := range s.mails {
				if !gone[m.uidl] {
					keep = append(keep, m)
				}
			}
			s.mails = keep
			s.mu.Unlock()
		}
		_ = ss.reply("+OK bye")
		return false
	default:
		if !ss.authed {
			err = ss.reply("-ERR not logged in")
			break
		}
		return ss.transaction(verb, arg)
	}
	return err == nil
}

func (ss *session) login(ok bool, failure string) error {
	if !ok {
		return ss.reply("-ERR %s", failure)
	}
	ss.authed = true
	ss.s.mu.Lock()
	ss.drop = append([]fakeMail(nil), ss.s.mails...)
	ss.s.mu.Unlock()
	return ss.reply("+OK logged in")
}

func (ss *session) auth(arg string) error {
	s := ss.s
	mech, ir, hasIR := strings.Cut(arg, " ")
	if s.noAuth {
		return ss.reply("-ERR AUTH not supported")
	}
	readResponse := func() (string, error) {
		if hasIR {
			return ir, nil
		}
		if err := ss.reply("+ "); err != nil {
			return "", err
		}
		line, err := ss.r.ReadLine()
		s.j.add("server %s", line)
		return line, err
	}
	switch strings.ToUpper(mech) {
	case "PLAIN":
		resp, err := readResponse()
		if err != nil {
			return err
		}
		dec, err := base64.StdEncoding.DecodeString(resp)
		if err != nil {
			return ss.reply("-ERR bad base64")
		}
		parts := strings.Split(string(dec), "\x00")
		ok := len(parts) == 3 && parts[1] == s.user && parts[2] == s.pass
		return ss.login(ok, "[AUTH] Authentication failed.")
	case "CRAM-MD5":
		const challenge = "<1896.697170952@fake.example.test>"
		if err := ss.reply("+ %s", base64.StdEncoding.EncodeToString([]byte(challenge))); err != nil {
			return err
		}
		line, err := ss.r.ReadLine()
		if err != nil {
			return err
		}
		s.j.add("server %s", line)
		dec, _ := base64.StdEncoding.DecodeString(line)
		mac := hmac.New(md5.New, []byte(s.pass))
		mac.Write([]byte(challenge))
		return ss.login(string(dec) == s.user+" "+hex.EncodeToString(mac.Sum(nil)), "[AUTH] Authentication failed.")
	case "XOAUTH2":
		if hasIR {
			return ss.reply("-ERR this server wants the two-line form")
		}
		resp, err := readResponse()
		if err != nil {
			return err
		}
		dec, _ := base64.StdEncoding.DecodeString(resp)
		if string(dec) == "user="+s.user+"\x01auth=Bearer "+s.token+"\x01\x01" {
			return ss.login(true, "")
		}
		challenge := base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"bearer"}`))
		if err := ss.reply("+ %s", challenge); err != nil {
			return err
		}
		if _, err := ss.r.ReadLine(); err != nil {
			return err
		}
		return ss.reply("-ERR Authentication failure: unknown user name or bad password.")
	}
	return ss.reply("-ERR unknown mechanism")
}

func (ss *session) msg(arg string) (int, *fakeMail) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || n > len(ss.drop) || ss.dele[n] {
		return 0, nil
	}
	return n, &ss.drop[n-1]
}

func (ss *session) transaction(verb, arg string) bool {
	s := ss.s
	var err error
	switch verb {
	case "STAT":
		count, size := 0, 0
		for i, m := range ss.drop {
			if !ss.dele[i+1] {
				count++
				size += len(m.raw)
			}
		}
		err = ss.reply("+OK %d %d", count, size)
	case "LIST", "UIDL":
		err = ss.reply("+OK listing follows")
		for i, m := range ss.drop {
			if err != nil || ss.dele[i+1] {
				continue
			}
			if verb == "LIST" {
				err = ss.reply("%d %d", i+1, len(m.raw))
			} else {
				err = ss.reply("%d %s", i+1, m.uidl)
			}
		}
		if err == nil {
			err = ss.reply(".")
		}
	case "RETR":
		n, m := ss.msg(arg)
		if m == nil {
			err = ss.reply("-ERR no such message")
			break
		}
		s.mu.Lock()
		s.retrs[m.uidl]++
		cut, drop := s.dropRETR[m.uidl]
		delete(s.dropRETR, m.uidl)
		s.mu.Unlock()
		if err = ss.reply("+OK %d octets", len(m.raw)); err != nil {
			return false
		}
		dw := ss.w.DotWriter()
		if drop {
			_, _ = dw.Write(m.raw[:cut])
			_ = ss.w.W.Flush()
			return false
		}
		_ = n
		if _, err = dw.Write(m.raw); err == nil {
			err = dw.Close()
		}
	case "DELE":
		n, m := ss.msg(arg)
		if m == nil {
			err = ss.reply("-ERR no such message")
			break
		}
		ss.dele[n] = true
		s.j.add("dele %s", m.uidl)
		err = ss.reply("+OK marked")
	case "NOOP":
		err = ss.reply("+OK")
	case "RSET":
		ss.dele = map[int]bool{}
		err = ss.reply("+OK")
	default:
		err = ss.reply("-ERR unknown command")
	}
	return err == nil
}

// fakeSink is the recorder at the sink port: it stages and commits in
// memory and remembers what it got. Its committed state outlives a poll,
// as the event store does.
type fakeSink struct {
	j          *journal
	committed  map[string]mailsource.Status
	bodies     map[string][]byte // committed received mails
	staged     []stagedMail
	receives   map[string]int // Receive calls per key
	commits    int
	failCommit int // the commit with this number (from 1) fails
	failKey    string
}

type stagedMail struct {
	key    string
	status mailsource.Status
	raw    []byte
}

func newFakeSink(j *journal) *fakeSink {
	return &fakeSink{j: j, committed: map[string]mailsource.Status{}, bodies: map[string][]byte{}, receives: map[string]int{}}
}

func (s *fakeSink) Known(_ context.Context, keys []string) (map[string]mailsource.Status, error) {
	out := map[string]mailsource.Status{}
	for _, k := range keys {
		if st, ok := s.committed[k]; ok {
			out[k] = st
		}
	}
	return out, nil
}

// Receive reads the whole mail, as the blob store does; a read error means
// nothing is staged. A mail with an "X-Unparseable: yes" header fails.
func (s *fakeSink) Receive(_ context.Context, key string, _ int64, r io.Reader) (mailsource.Outcome, error) {
	s.receives[key]++
	raw, err := io.ReadAll(r)
	if err != nil {
		return mailsource.Outcome{}, fmt.Errorf("fake sink: read %s: %w", key, err)
	}
	if key == s.failKey {
		return mailsource.Outcome{}, errors.New("fake sink: blob store down")
	}
	st := mailsource.StatusReceived
	if bytes.Contains(raw, []byte("X-Unparseable: yes")) {
		st = mailsource.StatusFailed
	}
	s.staged = append(s.staged, stagedMail{key: key, status: st, raw: raw})
	return mailsource.Outcome{Status: st}, nil
}

// Digests implements mailsource.ContentDigests over the committed bodies.
func (s *fakeSink) Digests(_ context.Context, keys []string) (map[string]string, error) {
	out := map[string]string{}
	for _, k := range keys {
		if raw, ok := s.bodies[k]; ok {
			sum := sha256.Sum256(raw)
			out[k] = hex.EncodeToString(sum[:])
		}
	}
	return out, nil
}

var _ mailsource.ContentDigests = (*fakeSink)(nil)

func (s *fakeSink) Oversize(_ context.Context, key string, _ int64) error {
	s.staged = append(s.staged, stagedMail{key: key, status: mailsource.StatusFailed})
	return nil
}

func (s *fakeSink) Commit(context.Context) error {
	s.commits++
	staged := s.staged
	s.staged = nil
	if s.commits == s.failCommit {
		s.j.add("commit failed")
		return errors.New("fake sink: database is gone")
	}
	var keys []string
	for _, m := range staged {
		if _, dup := s.committed[m.key]; dup {
			return fmt.Errorf("fake sink: %s committed twice", m.key)
		}
		s.committed[m.key] = m.status
		if m.status == mailsource.StatusReceived {
			s.bodies[m.key] = m.raw
		}
		keys = append(keys, m.key)
	}
	s.j.add("commit %s", strings.Join(keys, " "))
	return nil
}

// selfSigned returns a server certificate for 127.0.0.1 and localhost and
// its PEM. The validity window is fixed, not derived from the clock.
func selfSigned(tb testing.TB) (tls.Certificate, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake pop3"},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost", "pop.example.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		tb.Fatal(err)
	}
	return cert, certPEM
}

// mail builds a small CRLF message whose body is body.
func mail(id, body string) []byte {
	return []byte("From: a@example.com\r\nTo: help@example.com\r\nSubject: mail " + id +
		"\r\nMessage-ID: <" + id + "@example.com>\r\n\r\n" + body)
}

// fetcherFor returns a fetcher for s with the given changes to a default
// plain-text config.
func fetcherFor(tb testing.TB, s *fakeServer, change func(*Config)) *Fetcher {
	tb.Helper()
	host, port := s.hostPort(tb)
	cfg := Config{Host: host, Port: port, Security: mailsource.SecurityNone, AllowPlaintextAuth: true, Username: "alice", Password: "secret",
		Timeout: 10 * time.Second}
	if change != nil {
		change(&cfg)
	}
	f, err := New(cfg, nil)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return f
}
