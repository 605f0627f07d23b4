// Package smtpsend is ledgerdesk's SMTP client side: it dials an outgoing
// account with the configured security (implicit TLS, STARTTLS or none),
// authenticates (none, PLAIN, LOGIN, CRAM-MD5, XOAUTH2), submits one
// prepared message, and reports the server's reply. It also builds the
// messages (Build) and appends copies to an IMAP Sent folder (AppendSent).
//
// A Sender keeps idle connections per account, so a burst of mail pays
// the TCP, TLS and AUTH handshakes once; a connection that went stale is
// detected before MAIL FROM and replaced, which can never send twice.
package smtpsend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/ledgerdesk/ledgerdesk/adapters/saslclient"
)

// Security modes (domain.SecurityTLS and friends use the same words).
const (
	SecurityTLS      = "tls"
	SecurityStartTLS = "starttls"
	SecurityNone     = "none"
)

// Authentication mechanisms (domain.AuthPlain and friends).
const (
	AuthNone    = "none"
	AuthPlain   = "plain"
	AuthLogin   = "login"
	AuthCRAMMD5 = "cram-md5"
	AuthXOAuth2 = "xoauth2"
)

// Account is what a connection needs; the password is plaintext here (the
// caller opens the sealed secret just before sending).
type Account struct {
	Host          string
	Port          int
	Security      string // tls | starttls | none
	TLSSkipVerify bool
	// TLSServerName is the name the certificate must carry when it differs
	// from Host (an alternative certificate name).
	TLSServerName string
	// RootCAs verifies the server's certificate; nil means the system pool.
	RootCAs *x509.CertPool

	Auth     string // none | plain | login | cram-md5 | xoauth2
	Username string
	Password string
	// OAuthToken returns an access token for XOAUTH2.
	OAuthToken func(ctx context.Context) (string, error)

	// MaxSize refuses messages larger than this many bytes before any
	// connection is made; 0 means no limit of our own (the server's SIZE
	// still applies).
	MaxSize int64
	// LocalName is the EHLO name ["localhost"].
	LocalName string
	// Timeout bounds dialling and each command [30s].
	Timeout time.Duration
}

// key identifies the connection an account can reuse.
func (a Account) key() string {
	return strings.Join([]string{a.Host, strconv.Itoa(a.Port), a.Security, strconv.FormatBool(a.TLSSkipVerify),
		a.TLSServerName, a.Auth, a.Username, a.Password}, "\x00")
}

func (a Account) addr() string { return net.JoinHostPort(a.Host, strconv.Itoa(a.Port)) }

func (a Account) timeout() time.Duration {
	if a.Timeout <= 0 {
		return 30 * time.Second
	}
	return a.Timeout
}

func (a Account) tlsConfig() *tls.Config {
	name := a.TLSServerName
	if name == "" {
		name = a.Host
	}
	return &tls.Config{ServerName: name, InsecureSkipVerify: a.TLSSkipVerify, RootCAs: a.RootCAs, MinVersion: tls.VersionTLS12} //nolint:gosec // skip verify is the admin's explicit choice
}

// Envelope is the SMTP envelope of one message.
type Envelope struct {
	From string   // MAIL FROM
	To   []string // RCPT TO
}

// Stages of a submission, named in errors.
const (
	StageDial     = "dial"
	StageTLS      = "starttls"
	StageAuth     = "auth"
	StageMail     = "mail"
	StageRcpt     = "rcpt"
	StageData     = "data"
	StageSize     = "size"
	StageSettings = "settings"
)

// Error is a failed submission. Temporary errors (4xx replies, network
// failures) are worth retrying; permanent ones (5xx, a message too large,
// a bad configuration) are not.
type Error struct {
	Stage     string
	Code      int    // SMTP reply code, 0 when the server gave none
	Enhanced  string // e.g. "5.7.8", "" when none
	Reply     string // the server's reply text or the local error
	Temporary bool
	Err       error
}

func (e *Error) Error() string {
	if e.Code != 0 {
		enh := ""
		if e.Enhanced != "" {
			enh = e.Enhanced + " "
		}
		return fmt.Sprintf("smtp %s: %d %s%s", e.Stage, e.Code, enh, e.Reply)
	}
	return fmt.Sprintf("smtp %s: %s", e.Stage, e.Reply)
}

func (e *Error) Unwrap() error { return e.Err }

// classify turns a go-smtp or network error into an *Error.
func classify(stage string, err error) *Error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		enh := ""
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			enh = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return &Error{Stage: stage, Code: se.Code, Enhanced: enh, Reply: se.Message, Temporary: se.Code < 500, Err: err}
	}
	var te *tls.CertificateVerificationError
	if errors.As(err, &te) {
		return &Error{Stage: stage, Reply: err.Error(), Temporary: false, Err: err}
	}
	return &Error{Stage: stage, Reply: err.Error(), Temporary: true, Err: err}
}

// Result is a submission the server accepted.
type Result struct {
	// Reply is the text of the server's final 250 after DATA (often a
	// queue id).
	Reply string
	// Reused tells whether an idle connection was reused.
	Reused bool
}

// Sender submits messages, reusing idle connections per account. It is
// safe for concurrent use; each send has a connection to itself.
type Sender struct {
	// IdleTimeout closes a connection unused for this long [30s].
	IdleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*idleConn
	closed bool
}

type idleConn struct {
	c     *smtp.Client
	since time.Time
}

// NewSender returns a Sender.
func NewSender() *Sender {
	return &Sender{IdleTimeout: 30 * time.Second, idle: map[string][]*idleConn{}}
}

// Close closes the idle connections (with QUIT).
func (s *Sender) Close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle = map[string][]*idleConn{}
	s.closed = true
	s.mu.Unlock()
	for _, list := range idle {
		for _, ic := range list {
			_ = ic.c.Quit()
		}
	}
	return nil
}

// maxIdlePerAccount bounds the idle connections kept per account (one
// per parallel sender is enough).
const maxIdlePerAccount = 8

func (s *Sender) take(key string) *smtp.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		list := s.idle[key]
		if len(list) == 0 {
			return nil
		}
		ic := list[len(list)-1]
		s.idle[key] = list[:len(list)-1]
		if time.Since(ic.since) > s.IdleTimeout {
			go func() { _ = ic.c.Quit() }()
			continue
		}
		return ic.c
	}
}

func (s *Sender) put(key string, c *smtp.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.idle[key]) >= maxIdlePerAccount {
		go func() { _ = c.Quit() }()
		return
	}
	s.idle[key] = append(s.idle[key], &idleConn{c: c, since: time.Now()})
}

// Send submits raw (a complete RFC 5322 message with CRLF line ends) with
// the envelope env over account a. It returns once the server accepted the
// message (its 250 after DATA); nothing after that point can fail the send,
// so a broken connection after acceptance never causes a second copy.
// A reused connection whose MAIL FROM fails is replaced by a fresh one
// transparently: nothing was sent on it.
func (s *Sender) Send(ctx context.Context, a Account, env Envelope, raw []byte) (Result, error) {
	if a.MaxSize > 0 && int64(len(raw)) > a.MaxSize {
		return Result{}, &Error{Stage: StageSize, Reply: fmt.Sprintf("message of %d bytes exceeds the account's max_mail_size of %d", len(raw), a.MaxSize)}
	}
	if len(env.To) == 0 {
		return Result{}, &Error{Stage: StageSettings, Reply: "no recipients"}
	}
	key := a.key()
	if c := s.take(key); c != nil {
		// No RSET first: a completed DATA ends the transaction (RFC 5321
		// section 4.1.1.4), and a dead connection shows at MAIL FROM.
		res, err, accepted := s.submit(ctx, c, a, env, raw)
		if err == nil {
			s.put(key, c)
			res.Reused = true
			return res, nil
		}
		_ = c.Close()
		if accepted {
			return Result{}, err
		}
		// MAIL FROM failed on an idle connection (closed by the server, a
		// 421): nothing was sent, so a fresh connection tries again.
	}
	c, err := Dial(ctx, a)
	if err != nil {
		return Result{}, err
	}
	res, err, _ := s.submit(ctx, c, a, env, raw)
	if err != nil {
		_ = c.Close()
		return Result{}, err
	}
	s.put(key, c)
	return res, nil
}

// submit runs MAIL, RCPT and DATA. accepted reports whether MAIL FROM was
// accepted, after which a failure is the message's and not the connection's.
func (s *Sender) submit(ctx context.Context, c *smtp.Client, a Account, env Envelope, raw []byte) (Result, error, bool) {
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	opts := &smtp.MailOptions{Size: int64(len(raw))}
	if !isASCII(env.From) || !allASCII(env.To) {
		opts.UTF8 = true
	}
	if err := c.Mail(env.From, opts); err != nil {
		return Result{}, classify(StageMail, ctxErr(ctx, err)), false
	}
	for _, to := range env.To {
		if err := c.Rcpt(to, nil); err != nil {
			return Result{}, classify(StageRcpt, ctxErr(ctx, err)), true
		}
	}
	w, err := c.Data()
	if err != nil {
		return Result{}, classify(StageData, ctxErr(ctx, err)), true
	}
	if _, err := w.Write(raw); err != nil {
		return Result{}, classify(StageData, ctxErr(ctx, err)), true
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return Result{}, classify(StageData, ctxErr(ctx, err)), true
	}
	return Result{Reply: resp.StatusText}, nil, true
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// Dial connects, says EHLO, secures and authenticates per a. The caller
// owns the returned client.
func Dial(ctx context.Context, a Account) (*smtp.Client, error) {
	mech, err := saslClient(ctx, a)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout())
	defer cancel()
	var conn net.Conn
	d := &net.Dialer{}
	switch a.Security {
	case SecurityTLS:
		conn, err = (&tls.Dialer{NetDialer: d, Config: a.tlsConfig()}).DialContext(ctx, "tcp", a.addr())
	case SecurityStartTLS, SecurityNone, "":
		conn, err = d.DialContext(ctx, "tcp", a.addr())
	default:
		return nil, &Error{Stage: StageSettings, Reply: fmt.Sprintf("security %q is not one of tls, starttls, none", a.Security)}
	}
	if err != nil {
		return nil, classify(StageDial, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	var c *smtp.Client
	if a.Security == SecurityStartTLS {
		c, err = smtp.NewClientStartTLS(conn, a.tlsConfig())
		if err != nil {
			_ = conn.Close()
			return nil, classify(StageTLS, ctxErr(ctx, err))
		}
	} else {
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = a.timeout()
	c.SubmissionTimeout = 2 * a.timeout()
	localName := a.LocalName
	if localName == "" {
		localName = "localhost"
	}
	if a.Security != SecurityStartTLS {
		if err := c.Hello(localName); err != nil {
			_ = c.Close()
			return nil, classify(StageDial, ctxErr(ctx, err))
		}
	}
	if mech != nil {
		if ok, _ := c.Extension("AUTH"); !ok {
			_ = c.Close()
			return nil, &Error{Stage: StageAuth, Reply: "server offers no AUTH; set auth none or use another security"}
		}
		if err := c.Auth(mech); err != nil {
			_ = c.Close()
			e := classify(StageAuth, ctxErr(ctx, err))
			if e.Code == 535 || e.Code == 534 || e.Code == 504 {
				e.Temporary = false
			}
			return nil, e
		}
	}
	return c, nil
}

func saslClient(ctx context.Context, a Account) (sasl.Client, error) {
	switch a.Auth {
	case AuthNone, "":
		return nil, nil
	case AuthPlain:
		return sasl.NewPlainClient("", a.Username, a.Password), nil
	case AuthLogin:
		return saslclient.NewLoginClient(a.Username, a.Password), nil
	case AuthCRAMMD5:
		return saslclient.NewCRAMMD5Client(a.Username, a.Password), nil
	case AuthXOAuth2:
		if a.OAuthToken == nil {
			return nil, &Error{Stage: StageAuth, Reply: "xoauth2 needs an access token source"}
		}
		tok, err := a.OAuthToken(ctx)
		if err != nil {
			return nil, &Error{Stage: StageAuth, Reply: "xoauth2 token: " + err.Error(), Temporary: true, Err: err}
		}
		return saslclient.NewXOAUTH2Client(a.Username, tok), nil
	}
	return nil, &Error{Stage: StageSettings, Reply: fmt.Sprintf("auth %q is not one of none, plain, login, cram-md5, xoauth2", a.Auth)}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}

var _ io.Writer = (*smtp.DataCommand)(nil)
