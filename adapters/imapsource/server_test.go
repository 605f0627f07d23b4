package imapsource

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // CRAM-MD5 test server
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

const (
	testUser     = "alice"
	testPassword = "pw-alice"
	testToken    = "ya29.token-for-alice"
)

// serverOptions shape the in-memory IMAP server of one test.
type serverOptions struct {
	caps      imap.CapSet // nil: IMAP4rev1 + IMAP4rev2 (so UIDPLUS and MOVE)
	username  string      // "" means testUser
	password  string      // "" means testPassword
	mechs     []string    // SASL mechanisms; nil: the server's default PLAIN only
	tls       bool        // implicit TLS with a self-signed certificate
	startTLS  bool        // offer STARTTLS with the same certificate
	preCreate []string    // folders besides INBOX
	// unreadable makes UID FETCH of a body leave out this UID and end in NO,
	// as Dovecot does for a mail file it cannot read.
	unreadable imap.UID
	// bodyFirst makes UID FETCH of a body send BODY[] before UID in each
	// FETCH response, as RFC 9051 allows (items come in any order).
	bodyFirst bool
	// omitUID (with bodyFirst) leaves the UID out of those responses.
	omitUID bool
	// refuseCreate makes CREATE of these folders fail with NO, as a
	// server does when the user may not create folders.
	refuseCreate []string
	// refuseMove makes UID MOVE and UID COPY into these folders fail
	// with NO [OVERQUOTA].
	refuseMove []string
}

type testServer struct {
	addr   string
	user   *imapmemserver.User
	certPE []byte // PEM of the self-signed certificate (tls/startTLS)
	trace  *syncBuffer

	mu           sync.Mutex
	raws         map[string][]byte // delivered mails by folder + "/" + UID
	refuseCreate []string
	refuseMove   []string
}

// refuse sets the folders whose CREATE, and into which MOVE and COPY, the
// server refuses from now on.
func (ts *testServer) refuse(create, move []string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.refuseCreate, ts.refuseMove = create, move
}

func (ts *testServer) refuses(create bool, folder string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if create {
		return slices.Contains(ts.refuseCreate, folder)
	}
	return slices.Contains(ts.refuseMove, folder)
}

// startServer runs go-imap's in-memory server on 127.0.0.1:0 until the
// test ends. Its raw protocol trace is kept for assertions.
func startServer(tb testing.TB, o serverOptions) *testServer {
	tb.Helper()
	if o.password == "" {
		o.password = testPassword
	}
	if o.username == "" {
		o.username = testUser
	}
	if o.caps == nil {
		o.caps = imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}}
	}
	u := imapmemserver.NewUser(o.username, o.password)
	for _, f := range append([]string{"INBOX"}, o.preCreate...) {
		if err := u.Create(f, nil); err != nil {
			tb.Fatalf("create %s: %v", f, err)
		}
	}
	ts := &testServer{user: u, trace: &syncBuffer{}, refuseCreate: o.refuseCreate, refuseMove: o.refuseMove}
	var tlsCfg *tls.Config
	if o.tls || o.startTLS {
		cert, pemBytes := selfSigned(tb)
		ts.certPE = pemBytes
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	opts := &imapserver.Options{
		InsecureAuth: true,
		Caps:         o.caps,
		DebugWriter:  ts.trace,
		Logger:       discardLogger{},
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &testSession{user: u, password: o.password, mechs: o.mechs, unreadable: o.unreadable,
				bodyFirst: o.bodyFirst, omitUID: o.omitUID, ts: ts}, nil, nil
		},
	}
	if o.startTLS {
		opts.TLSConfig = tlsCfg
	}
	srv := imapserver.New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	ts.addr = ln.Addr().String()
	if o.tls {
		ln = tls.NewListener(ln, tlsCfg)
	}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return ts
}

// config returns a fetcher configuration for this server.
func (ts *testServer) config(tb testing.TB) Config {
	tb.Helper()
	host, port, err := net.SplitHostPort(ts.addr)
	if err != nil {
		tb.Fatal(err)
	}
	var p int
	if _, err := fmt.Sscan(port, &p); err != nil {
		tb.Fatal(err)
	}
	return Config{
		Host: host, Port: p, Security: mailsource.SecurityNone, AllowPlaintextAuth: true, // loopback test server
		Username: testUser, Password: testPassword,
		Timeout: 10 * time.Second,
	}
}

// deliver appends raw mails to folder.
func (ts *testServer) deliver(tb testing.TB, folder string, raws ...[]byte) {
	tb.Helper()
	for _, raw := range raws {
		data, err := ts.user.Append(folder, literal{bytes.NewReader(raw), int64(len(raw))}, &imap.AppendOptions{})
		if err != nil {
			tb.Fatalf("append to %s: %v", folder, err)
		}
		ts.mu.Lock()
		if ts.raws == nil {
			ts.raws = map[string][]byte{}
		}
		ts.raws[folder+"/"+fmt.Sprint(data.UID)] = raw
		ts.mu.Unlock()
	}
}

// raw returns what deliver put into folder under uid.
func (ts *testServer) raw(folder string, uid imap.UID) ([]byte, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	b, ok := ts.raws[folder+"/"+fmt.Sprint(uid)]
	return b, ok
}

// count returns how many mails folder holds (expunged ones not), or -1
// when the folder does not exist.
func (ts *testServer) count(tb testing.TB, folder string) int {
	tb.Helper()
	st, err := ts.user.Status(folder, &imap.StatusOptions{NumMessages: true})
	if err != nil {
		return -1
	}
	return int(*st.NumMessages)
}

// commands returns the tagged client commands of the trace, e.g.
// "UID EXPUNGE 1:3", in order.
func (ts *testServer) commands() []string {
	var cmds []string
	for _, line := range strings.Split(ts.trace.String(), "\r\n") {
		tag, rest, ok := strings.Cut(line, " ")
		if !ok || tag == "*" || tag == "+" || !strings.HasPrefix(tag, "T") {
			continue
		}
		if strings.HasPrefix(rest, "OK") || strings.HasPrefix(rest, "NO") || strings.HasPrefix(rest, "BAD") {
			continue
		}
		cmds = append(cmds, rest)
	}
	return cmds
}

// testSession is the memserver's session with pluggable SASL mechanisms
// (PLAIN, CRAM-MD5, XOAUTH2), embedding *UserSession as LIBRARIES.md says.
type testSession struct {
	*imapmemserver.UserSession
	user       *imapmemserver.User
	password   string
	mechs      []string
	unreadable imap.UID

	bodyFirst bool
	omitUID   bool
	ts        *testServer
	selected  string
}

func (s *testSession) Select(mailbox string, options *imap.SelectOptions) (*imap.SelectData, error) {
	data, err := s.UserSession.Select(mailbox, options)
	if err == nil {
		s.selected = mailbox
	}
	return data, err
}

func (s *testSession) Create(mailbox string, options *imap.CreateOptions) error {
	if s.ts.refuses(true, mailbox) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNoPerm, Text: "Permission denied"}
	}
	return s.UserSession.Create(mailbox, options)
}

func (s *testSession) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if s.ts.refuses(false, dest) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "Quota exceeded (mailbox for user is full)"}
	}
	return s.UserSession.Move(w, numSet, dest)
}

func (s *testSession) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	if s.ts.refuses(false, dest) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "Quota exceeded (mailbox for user is full)"}
	}
	return s.UserSession.Copy(numSet, dest)
}

// fetchBodyFirst answers a UID FETCH of bodies with each message's BODY[]
// before its UID.
func (s *testSession) fetchBodyFirst(w *imapserver.FetchWriter, uids imap.UIDSet, options *imap.FetchOptions) error {
	all, err := s.Search(imapserver.NumKindUID, &imap.SearchCriteria{}, &imap.SearchOptions{ReturnAll: true})
	if err != nil {
		return err
	}
	inBox, _ := all.All.(imap.UIDSet).Nums()
	for i, uid := range inBox {
		if !uids.Contains(uid) {
			continue
		}
		raw, ok := s.ts.raw(s.selected, uid)
		if !ok {
			return fmt.Errorf("test server: no raw mail for uid %d in %s", uid, s.selected)
		}
		m := w.CreateMessage(uint32(i + 1))
		for _, bs := range options.BodySection {
			wc := m.WriteBodySection(bs, int64(len(raw)))
			if _, err := wc.Write(raw); err != nil {
				return err
			}
			if err := wc.Close(); err != nil {
				return err
			}
		}
		if !s.omitUID {
			m.WriteUID(uid)
		}
		if err := m.Close(); err != nil {
			return err
		}
	}
	return nil
}

func (s *testSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	uids, ok := numSet.(imap.UIDSet)
	if s.bodyFirst && ok && len(options.BodySection) > 0 {
		return s.fetchBodyFirst(w, uids, options)
	}
	if s.unreadable == 0 || !ok || len(options.BodySection) == 0 || !uids.Contains(s.unreadable) {
		return s.UserSession.Fetch(w, numSet, options)
	}
	nums, _ := uids.Nums()
	var rest imap.UIDSet
	for _, n := range nums {
		if n != s.unreadable {
			rest.AddNum(n)
		}
	}
	if len(rest) > 0 {
		if err := s.UserSession.Fetch(w, rest, options); err != nil {
			return err
		}
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug, Text: "Some messages could not be FETCHed"}
}

var _ imapserver.SessionIMAP4rev2 = (*testSession)(nil)

func (s *testSession) Login(username, password string) error {
	if err := s.user.Login(username, password); err != nil {
		return err
	}
	s.UserSession = imapmemserver.NewUserSession(s.user)
	return nil
}

func (s *testSession) AuthenticateMechanisms() []string {
	if s.mechs == nil {
		return []string{"PLAIN"}
	}
	return s.mechs
}

func (s *testSession) Authenticate(mech string) (sasl.Server, error) {
	offered := false
	for _, m := range s.AuthenticateMechanisms() {
		offered = offered || m == mech
	}
	if !offered {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "SASL mechanism not supported"}
	}
	switch mech {
	case "PLAIN":
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return imapserver.ErrAuthFailed
			}
			return s.Login(username, password)
		}), nil
	case "CRAM-MD5":
		return &cramMD5Server{challenge: "<1896.697170952@imap.test>", login: func(user, digest string) error {
			mac := hmac.New(md5.New, []byte(s.password))
			mac.Write([]byte("<1896.697170952@imap.test>"))
			if user != testUser || digest != hex.EncodeToString(mac.Sum(nil)) {
				return imapserver.ErrAuthFailed
			}
			s.UserSession = imapmemserver.NewUserSession(s.user)
			return nil
		}}, nil
	case "XOAUTH2":
		return &xoauth2Server{login: func(user, token string) error {
			if user != testUser || token != testToken {
				return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "AUTHENTICATE failed."}
			}
			s.UserSession = imapmemserver.NewUserSession(s.user)
			return nil
		}}, nil
	}
	return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "SASL mechanism not supported"}
}

// cramMD5Server is RFC 2195's server side.
type cramMD5Server struct {
	challenge string
	sent      bool
	login     func(user, digest string) error
}

func (s *cramMD5Server) Next(resp []byte) ([]byte, bool, error) {
	if !s.sent {
		s.sent = true
		return []byte(s.challenge), false, nil
	}
	user, digest, ok := strings.Cut(string(resp), " ")
	if !ok {
		return nil, false, errors.New("malformed CRAM-MD5 response")
	}
	return nil, true, s.login(user, digest)
}

// xoauth2Server checks "user=U\x01auth=Bearer T\x01\x01". On a bad token it
// sends the JSON error challenge first, as Microsoft and Google do, and
// fails after the client's empty reply.
type xoauth2Server struct {
	failed error
	login  func(user, token string) error
}

func (s *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if s.failed != nil {
		return nil, false, s.failed
	}
	var user, token string
	for _, f := range strings.Split(string(resp), "\x01") {
		if v, ok := strings.CutPrefix(f, "user="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(f, "auth=Bearer "); ok {
			token = v
		}
	}
	if err := s.login(user, token); err != nil {
		s.failed = err
		// The error is sent as a challenge first; the NO follows the client's reply.
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.example/"}`), false, nil //nolint:nilerr // see above
	}
	return nil, true, nil
}

type literal struct {
	*bytes.Reader
	size int64
}

func (l literal) Size() int64 { return l.size }

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// selfSigned makes a certificate for 127.0.0.1 and localhost.
func selfSigned(tb testing.TB) (tls.Certificate, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imap.test"},
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Unix(1<<33, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost", "imap.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pemBytes
}

// fakeSink is a recording mailsource.Sink with the semantics of the real
// one: staged work becomes visible to Known only on Commit, and a failed
// Commit drops it.
type fakeSink struct {
	mu         sync.Mutex
	committed  map[string]mailsource.Status
	staged     map[string]mailsource.Status
	bodies     map[string][]byte // committed raw mails by key
	stagedRaw  map[string][]byte // received raw mails not committed yet
	received   []string          // keys handed to Receive, in order
	oversize   []string          // keys handed to Oversize
	sizes      map[string]int64  // size argument of Receive by key
	commits    int
	failCommit int // fail this many Commit calls
	// readLimit, when > 0, makes Receive read only this many bytes (to prove
	// the fetcher drains the rest itself).
	readLimit int
	// onReceive, when set, runs inside Receive (e.g. to cancel a context).
	onReceive func(key string)
}

func newFakeSink() *fakeSink {
	return &fakeSink{committed: map[string]mailsource.Status{}, staged: map[string]mailsource.Status{},
		bodies: map[string][]byte{}, stagedRaw: map[string][]byte{}, sizes: map[string]int64{}}
}

func (s *fakeSink) Known(_ context.Context, keys []string) (map[string]mailsource.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]mailsource.Status{}
	for _, k := range keys {
		if st, ok := s.committed[k]; ok {
			out[k] = st
		}
	}
	return out, nil
}

func (s *fakeSink) Receive(ctx context.Context, key string, size int64, r io.Reader) (mailsource.Outcome, error) {
	if s.onReceive != nil {
		s.onReceive(key)
	}
	if s.readLimit > 0 {
		r = io.LimitReader(r, int64(s.readLimit))
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return mailsource.Outcome{}, err
	}
	if err := ctx.Err(); err != nil {
		return mailsource.Outcome{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = append(s.received, key)
	s.sizes[key] = size
	st := mailsource.StatusReceived
	out := mailsource.Outcome{Status: st}
	if bytes.Contains(raw, []byte("GARBAGE")) {
		out = mailsource.Outcome{Status: mailsource.StatusFailed, Reason: "unparseable"}
	}
	s.staged[key] = out.Status
	s.stagedRaw[key] = raw
	return out, nil
}

func (s *fakeSink) Oversize(_ context.Context, key string, _ int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oversize = append(s.oversize, key)
	s.staged[key] = mailsource.StatusFailed
	return nil
}

func (s *fakeSink) Commit(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits++
	if s.failCommit > 0 {
		s.failCommit--
		s.staged = map[string]mailsource.Status{}
		s.stagedRaw = map[string][]byte{}
		return errors.New("fake sink: database unavailable")
	}
	for k, st := range s.staged {
		if _, dup := s.committed[k]; dup {
			return fmt.Errorf("fake sink: %s committed twice", k)
		}
		s.committed[k] = st
		if raw, ok := s.stagedRaw[k]; ok {
			s.bodies[k] = raw
		}
	}
	s.staged = map[string]mailsource.Status{}
	s.stagedRaw = map[string][]byte{}
	return nil
}

// endPoll drops what was staged and not committed, as a sink does when its
// poll ends (a sink serves one poll).
func (s *fakeSink) endPoll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.staged = map[string]mailsource.Status{}
	s.stagedRaw = map[string][]byte{}
}

// keys returns the committed keys with the given status, sorted.
func (s *fakeSink) keys(st mailsource.Status) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, v := range s.committed {
		if v == st {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// testMail is a small RFC 5322 message; body text makes it unique.
func testMail(body string) []byte {
	return []byte("From: sender@example.org\r\nTo: desk@example.org\r\nSubject: " + body +
		"\r\nMessage-ID: <" + strings.ReplaceAll(body, " ", ".") + "@example.org>\r\n\r\n" + body + "\r\n")
}

func testMails(n int, prefix string) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = testMail(fmt.Sprintf("%s %d", prefix, i+1))
	}
	return out
}
