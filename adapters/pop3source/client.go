package pop3source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/saslclient"
)

var (
	// ErrRefused is the Err of every *mailsource.ServerError built from a
	// -ERR reply; the server's words are in its Reply.
	ErrRefused = errors.New("pop3source: server replied -ERR")
	// ErrProtocol means the server sent something POP3 does not allow.
	ErrProtocol = errors.New("pop3source: protocol violation")
)

const (
	// maxStatusLine caps a status or listing line. RFC 1939 allows 512
	// octets; servers put more into -ERR texts, so be generous but bounded.
	maxStatusLine = 16 << 10
	// maxListing caps the entries of one UIDL or LIST answer.
	maxListing = 1 << 20
	// maxUIDL caps a unique-id; RFC 1939 section 7 allows 70 octets, a
	// little more is tolerated.
	maxUIDL = 256
	// maxCommandLine is the longest AUTH command that may carry an initial
	// response (RFC 5034 section 4: 255 octets including CRLF).
	maxCommandLine = 255
	// pipelineWindow is how many commands are in flight when the server
	// advertises PIPELINING (RFC 2449 section 6.6).
	pipelineWindow = 32
)

// replyKind is the first token of a server line.
type replyKind int

const (
	replyOK   replyKind = iota // +OK
	replyErr                   // -ERR
	replyCont                  // "+ " SASL continuation (RFC 5034)
)

// reply is one parsed status line; text is what follows the status token
// (and one space), verbatim.
type reply struct {
	kind replyKind
	text string
}

// readReply reads one status line: "+OK [text]", "-ERR [text]" or, during
// AUTH, "+ [base64]". Lines end in CRLF (a bare LF is accepted) and are
// capped at maxStatusLine octets.
func readReply(r *bufio.Reader) (reply, error) {
	line, err := readLine(r)
	if err != nil {
		return reply{}, err
	}
	return parseReply(line)
}

func parseReply(line string) (reply, error) {
	switch {
	case hasToken(line, "+OK"):
		return reply{kind: replyOK, text: afterToken(line, "+OK")}, nil
	case hasToken(line, "-ERR"):
		return reply{kind: replyErr, text: afterToken(line, "-ERR")}, nil
	case hasToken(line, "+"):
		return reply{kind: replyCont, text: afterToken(line, "+")}, nil
	}
	return reply{}, fmt.Errorf("%w: status line %q", ErrProtocol, clip(line))
}

// hasToken reports whether line starts with tok followed by the end or a
// space. Status tokens are case-sensitive (RFC 1939 section 3 says
// upper case); a few servers write "+ok", which is accepted too.
func hasToken(line, tok string) bool {
	if len(line) < len(tok) || !strings.EqualFold(line[:len(tok)], tok) {
		return false
	}
	return len(line) == len(tok) || line[len(tok)] == ' ' || line[len(tok)] == '\t'
}

func afterToken(line, tok string) string {
	if len(line) == len(tok) {
		return ""
	}
	return line[len(tok)+1:]
}

// readLine reads one line without its line ending.
func readLine(r *bufio.Reader) (string, error) {
	var long []byte
	for {
		frag, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, frag...)
			if len(long) > maxStatusLine {
				return "", fmt.Errorf("%w: line longer than %d octets", ErrProtocol, maxStatusLine)
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		if long != nil {
			frag = append(long, frag...)
		}
		if len(frag) > maxStatusLine+2 {
			return "", fmt.Errorf("%w: line longer than %d octets", ErrProtocol, maxStatusLine)
		}
		frag = bytes.TrimSuffix(frag[:len(frag)-1], []byte{'\r'})
		return string(frag), nil
	}
}

// readListing reads the body of a multi-line UIDL or LIST answer up to the
// terminating ".", undoing dot-stuffing (RFC 1939 section 3), and calls fn
// with the first two fields of each line.
func readListing(r *bufio.Reader, fn func(num int, arg string) error) error {
	for n := 0; ; n++ {
		line, err := readLine(r)
		if err != nil {
			return err
		}
		if line == "." {
			return nil
		}
		if n >= maxListing {
			return fmt.Errorf("%w: listing longer than %d entries", ErrProtocol, maxListing)
		}
		line = strings.TrimPrefix(line, ".")
		num, arg, err := parseListLine(line)
		if err != nil {
			return err
		}
		if err := fn(num, arg); err != nil {
			return err
		}
	}
}

// parseListLine splits "msg-number SP argument [SP ignored]".
func parseListLine(line string) (int, string, error) {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return 0, "", fmt.Errorf("%w: listing line %q", ErrProtocol, clip(line))
	}
	num, err := strconv.Atoi(fields[0])
	if err != nil || num < 1 {
		return 0, "", fmt.Errorf("%w: message number in %q", ErrProtocol, clip(line))
	}
	return num, fields[1], nil
}

// clip shortens server text quoted in protocol errors.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// idleConn refreshes the deadline before every Read and Write, so Timeout
// bounds each wait for the server, not a whole download.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c idleConn) Read(p []byte) (int, error) {
	if err := c.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c idleConn) Write(p []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// client is one POP3 session. It is not safe for concurrent use.
type client struct {
	raw       net.Conn // the TCP connection; closed on ctx cancel
	conn      net.Conn // raw or TLS over it
	r         *bufio.Reader
	tp        *textproto.Reader
	w         *bufio.Writer
	caps      map[string]string // CAPA keyword (upper case) -> its arguments
	stop      func() bool       // unregisters the ctx watcher
	closeOnce sync.Once
	scratch   []byte
	broken    error // first transport error; the session is unusable after it
	quitted   bool  // QUIT was sent
	overTLS   bool  // the session runs over TLS
}

// dial connects and reads the greeting; for starttls it also upgrades.
// It does not log in.
func dial(ctx context.Context, cfg Config, tlsCfg *tls.Config) (*client, error) {
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	d := net.Dialer{Timeout: cfg.Timeout, Control: mailsource.DialControl(cfg.AllowAddr)}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pop3source: connect %s: %w", addr, err)
	}
	c := &client{raw: raw}
	c.stop = context.AfterFunc(ctx, func() { _ = raw.Close() })
	conn := net.Conn(idleConn{Conn: raw, timeout: cfg.Timeout})
	if cfg.Security == mailsource.SecurityTLS {
		tc := tls.Client(conn, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.close()
			return nil, fmt.Errorf("pop3source: tls handshake with %s: %w", addr, err)
		}
		conn = tc
		c.overTLS = true
	}
	c.setConn(conn)
	rep, err := c.readReply("greeting")
	if err == nil && rep.kind != replyOK {
		err = c.refused("greeting", rep)
	}
	if err != nil {
		c.close()
		return nil, err
	}
	if err := c.capa(); err != nil {
		c.close()
		return nil, err
	}
	if cfg.Security == mailsource.SecurityStartTLS {
		if err := c.startTLS(ctx, tlsCfg); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func (c *client) setConn(conn net.Conn) {
	c.conn = conn
	c.r = bufio.NewReaderSize(conn, 64<<10)
	c.tp = textproto.NewReader(c.r)
	c.w = bufio.NewWriterSize(conn, 4<<10)
}

// close drops the connection without QUIT, so no DELE takes effect
// (RFC 1939 section 6).
func (c *client) close() {
	c.closeOnce.Do(func() {
		c.stop()
		_ = c.raw.Close()
	})
}

// fail records a transport error; after it the session is not used again.
func (c *client) fail(op string, err error) error {
	if c.broken == nil {
		c.broken = err
	}
	return fmt.Errorf("pop3source: %s: %w", op, err)
}

// refused turns a -ERR (or an unexpected continuation) into the error that
// carries the server's words.
func (c *client) refused(op string, rep reply) error {
	if rep.kind == replyCont {
		return &mailsource.ServerError{Op: op, Reply: rep.text, Err: fmt.Errorf("%w: unexpected continuation", ErrProtocol)}
	}
	return &mailsource.ServerError{Op: op, Reply: rep.text, Err: ErrRefused}
}

func (c *client) readReply(op string) (reply, error) {
	rep, err := readReply(c.r)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			c.broken = err
			return reply{}, fmt.Errorf("pop3source: %s: %w", op, err)
		}
		return reply{}, c.fail(op, err)
	}
	return rep, nil
}

// send writes one command line; flush sends it.
func (c *client) send(line string) error {
	if _, err := c.w.WriteString(line); err != nil {
		return c.fail(commandName(line), err)
	}
	if _, err := c.w.WriteString("\r\n"); err != nil {
		return c.fail(commandName(line), err)
	}
	return nil
}

func (c *client) flush() error {
	if err := c.w.Flush(); err != nil {
		return c.fail("send", err)
	}
	return nil
}

// commandName is the part of a command line that is safe to log.
func commandName(line string) string {
	name, _, _ := strings.Cut(line, " ")
	return name
}

// cmd sends one command and reads its status line; -ERR is an error.
func (c *client) cmd(op, line string) (reply, error) {
	if err := c.send(line); err != nil {
		return reply{}, err
	}
	if err := c.flush(); err != nil {
		return reply{}, err
	}
	rep, err := c.readReply(op)
	if err != nil {
		return reply{}, err
	}
	if rep.kind != replyOK {
		return rep, c.refused(op, rep)
	}
	return rep, nil
}

// capa asks for the capabilities (RFC 2449). A server without CAPA gets an
// empty set, which means: no pipelining, USER/PASS only.
func (c *client) capa() error {
	c.caps = map[string]string{}
	rep, err := c.cmd("CAPA", "CAPA")
	if err != nil {
		if rep.kind == replyErr {
			return nil
		}
		return err
	}
	err = readListingLines(c.r, func(line string) {
		kw, args, _ := strings.Cut(line, " ")
		c.caps[strings.ToUpper(kw)] = args
	})
	if err != nil {
		return c.fail("CAPA", err)
	}
	return nil
}

// readListingLines reads a multi-line answer as raw lines.
func readListingLines(r *bufio.Reader, fn func(line string)) error {
	for n := 0; ; n++ {
		line, err := readLine(r)
		if err != nil {
			return err
		}
		if line == "." {
			return nil
		}
		if n >= maxListing {
			return fmt.Errorf("%w: listing longer than %d entries", ErrProtocol, maxListing)
		}
		fn(strings.TrimPrefix(line, "."))
	}
}

func (c *client) has(capability string) bool {
	_, ok := c.caps[capability]
	return ok
}

// saslMechanism reports whether CAPA's SASL line lists mech.
func (c *client) saslMechanism(mech string) bool {
	for _, m := range strings.Fields(c.caps["SASL"]) {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// startTLS upgrades with STLS (RFC 2595 section 4) and asks CAPA again, as
// the old answer must be discarded. It never falls back to plain text.
func (c *client) startTLS(ctx context.Context, tlsCfg *tls.Config) error {
	if _, err := c.cmd("STLS", "STLS"); err != nil {
		return err
	}
	if c.r.Buffered() > 0 {
		// Bytes after the +OK were sent before the handshake and could be an
		// injected reply; refuse them (the STARTTLS injection class of bugs).
		c.broken = ErrProtocol
		return fmt.Errorf("pop3source: STLS: %w: data after +OK before the TLS handshake", ErrProtocol)
	}
	tc := tls.Client(c.conn, tlsCfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.fail("STLS handshake", err)
	}
	c.setConn(tc)
	c.overTLS = true
	return c.capa()
}

// login authenticates: without TLS and AllowPlaintextAuth, only CRAM-MD5
// (the password never crosses in clear) or nothing; else XOAUTH2 with a
// token source; with plain login prevented, CRAM-MD5 on a connection
// without TLS when the server offers it, else AUTH PLAIN; AUTH PLAIN when
// the server offers it; USER/PASS otherwise.
func (c *client) login(ctx context.Context, cfg Config) error {
	exposed := !c.overTLS && !cfg.AllowPlaintextAuth
	switch {
	case cfg.TokenSource != nil && exposed:
		return fmt.Errorf("%w: XOAUTH2 would send the access token in clear text", mailsource.ErrPlaintextAuth)
	case exposed && c.saslMechanism(saslclient.CRAMMD5):
		return c.authCRAMMD5(cfg.Username, cfg.Password)
	case exposed:
		return fmt.Errorf("%w: the server offers no AUTH CRAM-MD5, which alone keeps the password off the wire",
			mailsource.ErrPlaintextAuth)
	case cfg.TokenSource != nil:
		token, err := cfg.TokenSource(ctx)
		if err != nil {
			return fmt.Errorf("pop3source: get oauth2 token: %w", err)
		}
		return c.authXOAUTH2(cfg.Username, token)
	case cfg.PreventPlainLogin && !c.overTLS && c.saslMechanism(saslclient.CRAMMD5):
		return c.authCRAMMD5(cfg.Username, cfg.Password)
	case cfg.PreventPlainLogin || c.saslMechanism("PLAIN"):
		return c.authPlain(cfg.Username, cfg.Password)
	default:
		if _, err := c.cmd("login", "USER "+cfg.Username); err != nil {
			return err
		}
		_, err := c.cmd("login", "PASS "+cfg.Password)
		return err
	}
}

// authPlain runs AUTH PLAIN (RFC 5034, RFC 4616) with an empty authzid.
// The credentials travel as UTF-8 bytes, untouched. The initial response
// goes on the command line when that stays within 255 octets, otherwise
// after the server's "+".
func (c *client) authPlain(user, pass string) error {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	if len("AUTH PLAIN ")+len(ir)+2 <= maxCommandLine {
		return c.finishAuth("AUTH PLAIN", "AUTH PLAIN "+ir, nil)
	}
	return c.finishAuth("AUTH PLAIN", "AUTH PLAIN", fixed(ir))
}

// authXOAUTH2 runs AUTH XOAUTH2 the way Microsoft 365 requires: the command
// alone, then the base64 response on its own line after the server's "+".
func (c *client) authXOAUTH2(user, token string) error {
	mech, ir, _ := saslclient.NewXOAUTH2Client(user, token).Start() // cannot fail
	return c.finishAuth("AUTH "+mech, "AUTH "+mech, fixed(base64.StdEncoding.EncodeToString(ir)))
}

// authCRAMMD5 runs AUTH CRAM-MD5 (RFC 2195): the answer to the server's
// challenge is the user name and HMAC-MD5(password, challenge) in hex.
func (c *client) authCRAMMD5(user, pass string) error {
	sc := saslclient.NewCRAMMD5Client(user, pass)
	mech, _, _ := sc.Start() // cannot fail; no initial response
	return c.finishAuth("AUTH "+mech, "AUTH "+mech, func(challenge string) (string, error) {
		dec, err := base64.StdEncoding.DecodeString(challenge)
		if err != nil {
			return "", fmt.Errorf("%w: %s challenge is not base64", ErrProtocol, mech)
		}
		resp, err := sc.Next(dec)
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(resp), nil
	})
}

// fixed answers the first continuation with response, whatever it says.
func fixed(response string) func(string) (string, error) {
	return func(string) (string, error) { return response, nil }
}

// finishAuth sends line; respond, when set, answers the first
// continuation. A later continuation (or the first one when respond is
// nil) is an error challenge (XOAUTH2 sends base64 JSON): it is answered
// with an empty line to get the final -ERR, and its decoded text is kept
// with the error.
func (c *client) finishAuth(op, line string, respond func(challenge string) (string, error)) error {
	if err := c.send(line); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	var challenge string
	for round := 0; ; round++ {
		rep, err := c.readReply(op)
		if err != nil {
			return err
		}
		switch {
		case rep.kind == replyOK:
			return nil
		case rep.kind == replyErr:
			se := &mailsource.ServerError{Op: op, Reply: rep.text, Err: ErrRefused}
			if challenge != "" {
				se.Err = fmt.Errorf("%w (challenge %s)", ErrRefused, challenge)
			}
			return se
		case round > 2:
			return c.fail(op, fmt.Errorf("%w: endless continuations", ErrProtocol))
		case round == 0 && respond != nil:
			response, err := respond(rep.text)
			if err != nil {
				// "*" cancels the exchange (RFC 5034 section 4).
				_ = c.send("*")
				_ = c.flush()
				c.broken = err
				return fmt.Errorf("pop3source: %s: %w", op, err)
			}
			if err := c.send(response); err != nil {
				return err
			}
		default:
			if dec, derr := base64.StdEncoding.DecodeString(rep.text); derr == nil {
				challenge = string(dec)
			} else {
				challenge = rep.text
			}
			// An empty line answers an error challenge; "*" would cancel,
			// but servers answer both with -ERR and the empty line keeps
			// their reason.
			if err := c.send(""); err != nil {
				return err
			}
		}
		if err := c.flush(); err != nil {
			return err
		}
	}
}

// entry is one message of the maildrop.
type entry struct {
	num  int
	uidl string
	size int64
	key  string // the source key; set by the poll
}

// scan lists the maildrop with UIDL and LIST (pipelined when allowed) and
// returns the messages that appear in both, in message-number order.
func (c *client) scan() ([]entry, error) {
	if err := c.send("UIDL"); err != nil {
		return nil, err
	}
	pipelined := c.has("PIPELINING")
	if pipelined {
		if err := c.send("LIST"); err != nil {
			return nil, err
		}
	}
	if err := c.flush(); err != nil {
		return nil, err
	}
	uidls := map[int]string{}
	uidlErr := c.readMulti("UIDL", func(num int, arg string) error {
		if len(arg) > maxUIDL {
			return fmt.Errorf("%w: UIDL of message %d is %d octets long", ErrProtocol, num, len(arg))
		}
		uidls[num] = arg
		return nil
	})
	if uidlErr != nil && c.broken != nil {
		return nil, uidlErr
	}
	if !pipelined {
		if uidlErr != nil {
			return nil, uidlErr
		}
		if err := c.send("LIST"); err != nil {
			return nil, err
		}
		if err := c.flush(); err != nil {
			return nil, err
		}
	}
	var entries []entry
	listErr := c.readMulti("LIST", func(num int, arg string) error {
		size, err := strconv.ParseInt(arg, 10, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("%w: size %q of message %d", ErrProtocol, clip(arg), num)
		}
		if uid, ok := uidls[num]; ok {
			entries = append(entries, entry{num: num, uidl: uid, size: size})
		}
		return nil
	})
	if uidlErr != nil {
		return nil, uidlErr
	}
	if listErr != nil {
		return nil, listErr
	}
	return entries, nil
}

// readMulti reads a status line and, after +OK, a listing.
func (c *client) readMulti(op string, fn func(num int, arg string) error) error {
	rep, err := c.readReply(op)
	if err != nil {
		return err
	}
	if rep.kind != replyOK {
		return c.refused(op, rep)
	}
	if err := readListing(c.r, fn); err != nil {
		return c.fail(op, err)
	}
	return nil
}

// body is the reader handed to the sink for one RETR: textproto's DotReader
// (dot-unstuffing, lines of any length) with CRLF line endings restored, so
// the sink gets the message as the server stores it (RFC 5322 form, the
// same octets IMAP returns) and LIST's size matches. A bare LF on the wire
// comes out as CRLF. It remembers a transport error.
type body struct {
	dot       io.Reader
	scratch   []byte
	pendingLF bool
	err       error // sticky: io.EOF or the transport error
	broken    error // the transport error, if reading failed
}

func (c *client) newBody() *body {
	if c.scratch == nil {
		c.scratch = make([]byte, 32<<10)
	}
	return &body{dot: c.tp.DotReader(), scratch: c.scratch}
}

func (b *body) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	if b.pendingLF {
		p[0] = '\n'
		n, b.pendingLF = 1, false
	}
	if b.err != nil {
		if n > 0 {
			return n, nil
		}
		return 0, b.err
	}
	want := (len(p) - n) / 2
	if want == 0 {
		if n > 0 {
			return n, nil
		}
		want = 1
	}
	want = min(want, len(b.scratch))
	m, err := b.dot.Read(b.scratch[:want])
	src := b.scratch[:m]
	for len(src) > 0 {
		i := bytes.IndexByte(src, '\n')
		if i < 0 {
			n += copy(p[n:], src)
			break
		}
		n += copy(p[n:], src[:i])
		src = src[i+1:]
		p[n] = '\r'
		n++
		if n < len(p) {
			p[n] = '\n'
			n++
		} else {
			b.pendingLF = true
		}
	}
	if err != nil {
		b.err = err
		if !errors.Is(err, io.EOF) {
			b.broken = err
		}
		if b.pendingLF {
			return n, nil
		}
		return n, err
	}
	return n, nil
}

// drain reads the rest of the message so the session stays in step.
func (b *body) drain() error {
	if b.err != nil {
		if errors.Is(b.err, io.EOF) {
			return nil
		}
		return b.err
	}
	_, err := io.Copy(io.Discard, b)
	return err
}

// quit ends the session; DELEs take effect only when QUIT answers +OK
// (RFC 1939 section 6).
func (c *client) quit() error {
	c.quitted = true
	_, err := c.cmd("QUIT", "QUIT")
	c.close()
	return err
}
