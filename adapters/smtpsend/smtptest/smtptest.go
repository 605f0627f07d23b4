// Package smtptest runs an in-process SMTP submission server (go-smtp's
// server) for tests: implicit TLS, STARTTLS or plain; AUTH PLAIN, LOGIN,
// CRAM-MD5 and XOAUTH2 against fixed credentials, or XOAUTH2 against an
// OAuth2 introspection endpoint; injectable failures; and the received
// messages kept in memory.
package smtptest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// CertName is the only name in the server's certificate, so that clients
// must set it as the alternative certificate name (or skip verification).
const CertName = "mail.smtptest.invalid"

// Options configure a server.
type Options struct {
	Security string // tls | starttls | none [none]
	// Username and Password are the credentials every password mechanism
	// accepts; Token is the XOAUTH2 bearer token. Empty Username and
	// IntrospectionURL: no AUTH.
	Username, Password, Token string
	// IntrospectionURL, when set, replaces the Token check: an XOAUTH2
	// login is accepted only when a POST of token=<token> to this URL
	// (RFC 7662, e.g. oauthtest.Provider's URL+"/introspect") answers
	// {"active":true} with a "username" equal to the SASL user, ignoring
	// case. Otherwise the server sends XOAUTH2's JSON error challenge and,
	// after the client's (empty) answer, 535 5.7.8, as Gmail does. An
	// endpoint that cannot be asked gives 454 4.7.0, a temporary failure.
	IntrospectionURL string
	// Mechanisms offered [PLAIN LOGIN CRAM-MD5 XOAUTH2].
	Mechanisms []string
	// MaxMessageBytes is announced as SIZE; 0 means no limit.
	MaxMessageBytes int64
	// Fail, when set, is asked at each stage ("mail", "rcpt", "data") and
	// fails it with the returned error (use *smtp.SMTPError for a reply).
	Fail func(stage, arg string) error
	// CloseAfterData drops the connection right after accepting a message
	// (after the 250), as a server or a middlebox may.
	CloseAfterData bool
}

// Received is one accepted message.
type Received struct {
	From string
	To   []string
	Data []byte
	User string // authenticated user, "" without AUTH
}

// Server is a running test server.
type Server struct {
	Addr string
	Host string
	Port int
	// RootCAs trusts the server's certificate (for CertName).
	RootCAs *x509.CertPool

	opts Options
	srv  *smtp.Server
	ln   net.Listener

	mu       sync.Mutex
	received []Received
	conns    map[string]bool
	notify   chan struct{}

	introspectErrs []error
}

// Start starts a server on 127.0.0.1 and stops it when the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Security == "" {
		opts.Security = "none"
	}
	if len(opts.Mechanisms) == 0 {
		opts.Mechanisms = []string{sasl.Plain, sasl.Login, "CRAM-MD5", "XOAUTH2"}
	}
	s := &Server{opts: opts, notify: make(chan struct{}, 1), conns: map[string]bool{}}
	cert, pool, err := selfSigned()
	if err != nil {
		tb.Fatal(err)
	}
	s.RootCAs = pool
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns[c.Conn().RemoteAddr().String()] = true // STARTTLS starts a second session on the same connection
		s.mu.Unlock()
		return &session{s: s, conn: c}, nil
	}))
	srv.Domain = "smtptest.invalid"
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.ErrorLog = nopLogger{}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	var ln net.Listener
	switch opts.Security {
	case "tls":
		ln, err = tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	case "starttls":
		srv.TLSConfig = tlsCfg
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	default:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		tb.Fatal(err)
	}
	s.srv, s.ln = srv, ln
	s.Addr = ln.Addr().String()
	s.Host = "127.0.0.1"
	s.Port = ln.Addr().(*net.TCPAddr).Port
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return s
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// Received returns a copy of the accepted messages, oldest first.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Count is the number of accepted messages.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.received)
}

// Connections is the number of connections opened so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// WaitCount waits until at least n messages arrived or d passed, and
// returns the count.
func (s *Server) WaitCount(n int, d time.Duration) int {
	deadline := time.After(d)
	for {
		if c := s.Count(); c >= n {
			return c
		}
		select {
		case <-s.notify:
		case <-deadline:
			return s.Count()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type session struct {
	s    *Server
	conn *smtp.Conn
	user string
	from string
	to   []string
}

// authRequired reports whether the server offers and demands AUTH.
func (o Options) authRequired() bool { return o.Username != "" || o.IntrospectionURL != "" }

func (ss *session) AuthMechanisms() []string {
	if !ss.s.opts.authRequired() {
		return nil
	}
	return ss.s.opts.Mechanisms
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	o := ss.s.opts
	ok := func(user string) error {
		ss.user = user
		return nil
	}
	if o.Username == "" && strings.ToUpper(mech) != "XOAUTH2" {
		// Only XOAUTH2 is configured (IntrospectionURL); an empty user and
		// password must not pass the password mechanisms.
		return nil, smtp.ErrAuthFailed
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if username != o.Username || password != o.Password {
				return smtp.ErrAuthFailed
			}
			return ok(username)
		}), nil
	case sasl.Login:
		return &loginServer{check: func(u, p string) error {
			if u != o.Username || p != o.Password {
				return smtp.ErrAuthFailed
			}
			return ok(u)
		}}, nil
	case "CRAM-MD5":
		return &cramServer{user: o.Username, pass: o.Password, ok: ok}, nil
	case "XOAUTH2":
		if o.IntrospectionURL != "" {
			return &xoauth2Server{check: func(u, tok string) error {
				if err := ss.s.introspect(u, tok); err != nil {
					return err
				}
				return ok(u)
			}}, nil
		}
		return &xoauth2Server{check: func(u, tok string) error {
			if u != o.Username || tok != o.Token {
				return smtp.ErrAuthFailed
			}
			return ok(u)
		}}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (ss *session) fail(stage, arg string) error {
	if ss.s.opts.Fail == nil {
		return nil
	}
	return ss.s.opts.Fail(stage, arg)
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.opts.authRequired() && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	if err := ss.fail("mail", from); err != nil {
		return err
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.fail("rcpt", to); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := ss.fail("data", string(b)); err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.received = append(ss.s.received, Received{From: ss.from, To: ss.to, Data: b, User: ss.user})
	ss.s.mu.Unlock()
	select {
	case ss.s.notify <- struct{}{}:
	default:
	}
	if ss.s.opts.CloseAfterData {
		go func() {
			time.Sleep(20 * time.Millisecond) // after the 250 went out
			_ = ss.conn.Close()
		}()
	}
	return nil
}

func (ss *session) Reset()        { ss.from, ss.to = "", nil }
func (ss *session) Logout() error { return nil }

type loginServer struct {
	state int
	user  string
	check func(u, p string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.state {
	case 0:
		if len(resp) > 0 {
			l.user, l.state = string(resp), 2
			return []byte("Password:"), false, nil
		}
		l.state = 1
		return []byte("Username:"), false, nil
	case 1:
		l.user, l.state = string(resp), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

type cramServer struct {
	user, pass string
	challenge  []byte
	ok         func(string) error
}

func (c *cramServer) Next(resp []byte) ([]byte, bool, error) {
	if c.challenge == nil {
		c.challenge = []byte(fmt.Sprintf("<%d.%d@smtptest.invalid>", time.Now().UnixNano(), len(c.user)))
		return c.challenge, false, nil
	}
	user, digest, _ := strings.Cut(string(resp), " ")
	mac := hmac.New(md5.New, []byte(c.pass))
	mac.Write(c.challenge)
	if user != c.user || !hmac.Equal([]byte(digest), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		return nil, true, smtp.ErrAuthFailed
	}
	return nil, true, c.ok(user)
}

type xoauth2Server struct {
	check   func(user, token string) error
	refused bool // the error challenge went out; the next response ends the exchange
}

// errTokenRefused, from a check, makes xoauth2Server answer with XOAUTH2's
// error challenge first and fail with 535 5.7.8 after the client's reply.
var errTokenRefused = errors.New("smtptest: xoauth2 token refused")

// xoauth2ErrorChallenge is Gmail's error challenge for a bad token. See
// https://developers.google.com/gmail/imap/xoauth2-protocol.
var xoauth2ErrorChallenge = []byte(`{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`)

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.refused {
		return nil, true, smtp.ErrAuthFailed
	}
	var user, token string
	for _, f := range bytes.Split(resp, []byte{1}) {
		k, v, _ := strings.Cut(string(f), "=")
		switch k {
		case "user":
			user = v
		case "auth":
			token = strings.TrimPrefix(v, "Bearer ")
		}
	}
	if user == "" || token == "" {
		return nil, true, errors.New("malformed xoauth2 response")
	}
	err := x.check(user, token)
	if errors.Is(err, errTokenRefused) {
		x.refused = true
		return xoauth2ErrorChallenge, false, nil
	}
	return nil, true, err
}

// introspectTimeout bounds one introspection request.
const introspectTimeout = 10 * time.Second

// errIntrospectionUnavailable is the reply when the introspection endpoint
// cannot be asked: the token may be fine, so the failure is temporary.
var errIntrospectionUnavailable = &smtp.SMTPError{
	Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure",
}

// introspect asks Options.IntrospectionURL whether token is live for user.
// It returns nil, an error wrapping errTokenRefused, or
// errIntrospectionUnavailable.
func (s *Server) introspect(user, token string) error {
	active, tokenUser, err := introspectToken(s.opts.IntrospectionURL, token)
	if err != nil {
		s.mu.Lock()
		s.introspectErrs = append(s.introspectErrs, err)
		s.mu.Unlock()
		return errIntrospectionUnavailable
	}
	if !active {
		return fmt.Errorf("token of %q is not active: %w", user, errTokenRefused)
	}
	if !strings.EqualFold(tokenUser, user) {
		return fmt.Errorf("token of %q belongs to %q: %w", user, tokenUser, errTokenRefused)
	}
	return nil
}

// introspectToken POSTs token to endpoint as RFC 7662 section 2.1 says and
// returns the answer's active and username.
func introspectToken(endpoint, token string) (active bool, username string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), introspectTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return false, "", fmt.Errorf("smtptest: introspection request to %q: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, "", fmt.Errorf("smtptest: introspect at %q: %w", endpoint, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return false, "", fmt.Errorf("smtptest: introspect at %q: status %s", endpoint, resp.Status)
	}
	var answer struct {
		Active   bool   `json:"active"`
		Username string `json:"username"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&answer); err != nil {
		return false, "", fmt.Errorf("smtptest: introspection answer from %q: %w", endpoint, err)
	}
	return answer.Active, answer.Username, nil
}

// IntrospectionErrors returns why introspection requests could not be
// made or read (each answered 454 4.7.0), oldest first.
func (s *Server) IntrospectionErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.introspectErrs...)
}

func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: CertName},
		DNSNames:     []string{CertName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
