// Command smtpsink is a tiny SMTP submission server for end-to-end tests:
// it accepts mail (optionally after AUTH PLAIN or CRAM-MD5 for one user)
// and stores each message as NNNNNN.eml in a directory, written to a
// temporary name and renamed, so a reader never sees half a message. It
// prints "listening ADDR" on stdout once it accepts connections.
package main

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	dir := flag.String("dir", "", "directory for received messages")
	user := flag.String("user", "", "user name for AUTH (empty: no AUTH)")
	pass := flag.String("pass", "", "password for AUTH")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "smtpsink: -dir is required")
		os.Exit(2)
	}
	b := &backend{dir: *dir, user: *user, pass: *pass}
	srv := smtp.NewServer(b)
	srv.Domain = "smtpsink.invalid"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
		os.Exit(1)
	}
	fmt.Println("listening", ln.Addr().String())
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
		os.Exit(1)
	}
}

type backend struct {
	dir, user, pass string
	mu              sync.Mutex
	n               int
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{b: b}, nil }

func (b *backend) store(from string, to []string, data []byte) error {
	b.mu.Lock()
	b.n++
	n := b.n
	b.mu.Unlock()
	name := filepath.Join(b.dir, fmt.Sprintf("%06d.eml", n))
	env := fmt.Sprintf("X-Sink-Mail-From: <%s>\r\nX-Sink-Rcpt-To: %s\r\n", from, strings.Join(to, ", "))
	if err := os.WriteFile(name+".tmp", append([]byte(env), data...), 0o600); err != nil {
		return err
	}
	return os.Rename(name+".tmp", name)
}

type session struct {
	b    *backend
	auth bool
	from string
	to   []string
}

func (s *session) AuthMechanisms() []string {
	if s.b.user == "" {
		return nil
	}
	return []string{sasl.Plain, "CRAM-MD5"}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, u, p string) error {
			if u != s.b.user || p != s.b.pass {
				return smtp.ErrAuthFailed
			}
			s.auth = true
			return nil
		}), nil
	case "CRAM-MD5":
		return &cram{s: s}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

type cram struct {
	s         *session
	challenge []byte
}

func (c *cram) Next(resp []byte) ([]byte, bool, error) {
	if c.challenge == nil {
		c.challenge = fmt.Appendf(nil, "<%d@smtpsink.invalid>", time.Now().UnixNano())
		return c.challenge, false, nil
	}
	u, digest, _ := strings.Cut(string(resp), " ")
	mac := hmac.New(md5.New, []byte(c.s.b.pass))
	mac.Write(c.challenge)
	if u != c.s.b.user || !hmac.Equal([]byte(digest), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		return nil, true, smtp.ErrAuthFailed
	}
	c.s.auth = true
	return nil, true, nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.b.user != "" && !s.auth {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := s.b.store(s.from, s.to, data); err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "cannot store: " + err.Error()}
	}
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }
