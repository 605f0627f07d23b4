package imapsource

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/saslclient"
)

// ErrRefused is the Err of every *mailsource.ServerError built from a NO or
// BAD reply; the reply itself is in the ServerError.
var ErrRefused = errors.New("imapsource: server refused")

// ErrNoMechanism means PreventPlainLogin (or TokenSource) is set and the
// server offers none of the SASL mechanisms that would allow it.
var ErrNoMechanism = errors.New("imapsource: no acceptable login mechanism")

// session is one logged-in connection.
type session struct {
	c  *imapclient.Client
	wd *watchdog
	f  *Fetcher

	// folders known to exist (created or listed) in this session
	existing map[string]bool
	// uncreatable holds the refusal of folders CREATE failed for.
	uncreatable map[string]error
	// trash is the folder after_import trash moves to, once looked up.
	trash string
	// literalBroken: a FETCH literal failed mid-read; see abandon.
	literalBroken bool
	// leaked: the client could not be drained; Close would hang.
	leaked bool
	// refused collects NO replies that did not stop the poll.
	refused []error
	// stillHeld is the sink's mailbox lease check (mailsource.Fenced),
	// asked before mails are deleted or moved; nil without a lease.
	stillHeld func() error
	// unrouted holds FETCH responses go-imap could not route by UID.
	unrouted *unrouted
}

// dial connects, waits for the greeting and logs in.
func (f *Fetcher) dial(ctx context.Context) (*session, error) {
	return f.dialNotified(ctx, nil)
}

// dialNotified is dial with the server's unsolicited mailbox news (EXISTS,
// EXPUNGE) handed to notices; nil ignores them.
func (f *Fetcher) dialNotified(ctx context.Context, notices *mailboxNotices) (*session, error) {
	cfg := f.cfg
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	d := net.Dialer{Timeout: cfg.Timeout, Control: mailsource.DialControl(cfg.AllowAddr)}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("imapsource: connect %s: %w", addr, err)
	}
	wd, conn := watch(ctx, raw, cfg.Timeout)
	s := &session{wd: wd, f: f, existing: map[string]bool{}, uncreatable: map[string]error{}, unrouted: newUnrouted()}
	fail := func(err error) (*session, error) {
		if s.c != nil {
			_ = s.c.Close()
		} else {
			_ = raw.Close()
		}
		wd.close()
		return nil, s.wrap(err)
	}

	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return fail(err)
	}
	handler := &imapclient.UnilateralDataHandler{Fetch: s.unrouted.handle}
	if notices != nil {
		handler.Mailbox, handler.Expunge = notices.mailbox, notices.expunge
	}
	opts := &imapclient.Options{TLSConfig: tlsCfg, UnilateralDataHandler: handler}
	switch cfg.Security {
	case mailsource.SecurityTLS:
		tc := tls.Client(conn, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(fmt.Errorf("imapsource: tls handshake with %s: %w", addr, err))
		}
		s.c = imapclient.New(tc, opts)
	case mailsource.SecurityStartTLS:
		c, err := imapclient.NewStartTLS(conn, opts)
		if err != nil {
			return fail(serverError("STARTTLS", err))
		}
		s.c = c
	default:
		s.c = imapclient.New(conn, opts)
	}
	if err := s.c.WaitGreeting(); err != nil {
		return fail(serverError("greeting", err))
	}
	if err := s.login(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// login authenticates as Config says; see Config.PreventPlainLogin,
// Config.TokenSource and Config.AllowPlaintextAuth.
func (s *session) login(ctx context.Context) error {
	cfg := s.f.cfg
	if s.c.State() == imap.ConnStateAuthenticated {
		return nil // PREAUTH
	}
	caps := s.c.Caps()
	offered := caps.AuthMechanisms()
	has := func(mech string) bool {
		return slices.ContainsFunc(offered, func(m string) bool { return strings.EqualFold(m, mech) })
	}
	// Without TLS nothing but a CRAM-MD5 digest may cross, unless allowed.
	exposed := cfg.Security == mailsource.SecurityNone && !cfg.AllowPlaintextAuth
	var client sasl.Client
	switch {
	case cfg.TokenSource != nil && exposed:
		return fmt.Errorf("%w: XOAUTH2 would send the access token in clear text", mailsource.ErrPlaintextAuth)
	case exposed && has(saslclient.CRAMMD5):
		client = saslclient.NewCRAMMD5Client(cfg.Username, cfg.Password)
	case exposed:
		return fmt.Errorf("%w: the server offers %s, and only CRAM-MD5 keeps the password off the wire",
			mailsource.ErrPlaintextAuth, describeMechs(offered))
	case cfg.TokenSource != nil:
		if !has(saslclient.XOAuth2) {
			return fmt.Errorf("%w: XOAUTH2 is needed for the OAuth2 login, the server offers %s", ErrNoMechanism, describeMechs(offered))
		}
		resume := s.wd.pause()
		token, err := cfg.TokenSource(ctx)
		resume()
		if err != nil {
			return fmt.Errorf("imapsource: get oauth2 token: %w", err)
		}
		client = saslclient.NewXOAUTH2ClientForIMAP(cfg.Username, token)
	case cfg.PreventPlainLogin && has(sasl.Plain):
		client = sasl.NewPlainClient("", cfg.Username, cfg.Password)
	case cfg.PreventPlainLogin && has(saslclient.CRAMMD5):
		client = saslclient.NewCRAMMD5Client(cfg.Username, cfg.Password)
	case cfg.PreventPlainLogin:
		return fmt.Errorf("%w: prevent_plain_login needs AUTHENTICATE PLAIN or CRAM-MD5, the server offers %s", ErrNoMechanism, describeMechs(offered))
	case caps.Has(imap.CapLoginDisabled) && has(sasl.Plain):
		client = sasl.NewPlainClient("", cfg.Username, cfg.Password)
	default:
		if err := s.c.Login(cfg.Username, cfg.Password).Wait(); err != nil {
			return serverError("login", err)
		}
		return nil
	}
	mech, _, _ := client.Start()
	if err := s.c.Authenticate(client); err != nil {
		return serverError("authenticate "+mech, err)
	}
	return nil
}

func describeMechs(mechs []string) string {
	if len(mechs) == 0 {
		return "no AUTHENTICATE mechanism"
	}
	slices.Sort(mechs)
	return "AUTHENTICATE " + strings.Join(mechs, ", ")
}

// wrap puts the watchdog's cause in front of an I/O error it provoked.
func (s *session) wrap(err error) error {
	if err == nil {
		return nil
	}
	if cause := s.wd.err(); cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	return err
}

// close logs out politely when the connection is healthy and releases it.
// Every command must be finished (drained) before, see watchdog.
func (s *session) close() {
	if !s.wd.broken() {
		_ = s.c.Logout().Wait()
	}
	if !s.leaked {
		_ = s.c.Close()
	}
	s.wd.close()
}

// serverError turns a NO or BAD reply into a *mailsource.ServerError with
// the server's words; other errors are wrapped with op.
func serverError(op string, err error) error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		return &mailsource.ServerError{Op: op, Reply: replyText(ie), Err: ErrRefused}
	}
	return fmt.Errorf("imapsource: %s: %w", op, err)
}

// replyText renders the status response as the server sent it, without
// the tag: "NO [AUTHENTICATIONFAILED] Authentication failed".
func replyText(ie *imap.Error) string {
	var b strings.Builder
	b.WriteString(string(ie.Type))
	if ie.Code != "" {
		b.WriteString(" [" + string(ie.Code) + "]")
	}
	if ie.Text != "" {
		b.WriteString(" " + ie.Text)
	}
	return b.String()
}

// responseCode returns the response code of a NO/BAD reply in err, or "".
func responseCode(err error) imap.ResponseCode {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
}
