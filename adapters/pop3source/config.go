package pop3source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// Defaults applied by New to zero fields.
const (
	DefaultTimeout   = 60 * time.Second
	DefaultBatchSize = 500
	// DefaultPortTLS is the implicit-TLS POP3 port (RFC 8314).
	DefaultPortTLS = 995
	// DefaultPortPlain is the POP3 port for starttls and none (RFC 1939).
	DefaultPortPlain = 110
)

// Config describes one POP3 mailbox. The zero values of Port, AfterImport,
// Timeout and BatchSize mean the defaults; everything else is as given.
type Config struct {
	Host     string
	Port     int // 0: 995 for tls, 110 otherwise
	Security mailsource.Security
	// TLSSkipVerify accepts any server certificate (self-signed servers).
	TLSSkipVerify bool
	// TLSServerName is verified instead of Host when set.
	TLSServerName string
	// CACertPEM is added to the system roots when set.
	CACertPEM []byte
	// Username is passed through as typed (Exchange's Domain\User\Alias works).
	Username string
	Password string
	// TokenSource, when set, makes the fetcher log in with AUTH XOAUTH2 using
	// the access token it returns; Password is then not used.
	TokenSource func(ctx context.Context) (string, error)
	// PreventPlainLogin forbids USER/PASS: the password only goes out inside
	// AUTH PLAIN (RFC 5034), which also carries UTF-8 passwords intact.
	PreventPlainLogin bool
	// AllowPlaintextAuth lets a password or token cross a connection
	// without TLS (Security none); without it the login uses CRAM-MD5 or
	// fails with mailsource.ErrPlaintextAuth.
	AllowPlaintextAuth bool
	// AllowAddr, when set, is asked about every address before it is
	// dialled; an error refuses the connection (allowed_mail_hosts).
	AllowAddr func(netip.Addr) error
	// MaxMailSize in octets as reported by LIST; 0 means unlimited. Larger
	// mails are staged with Sink.Oversize and never downloaded.
	MaxMailSize int64
	// AfterImport is delete (default) or keep. POP3 has no folders, so move
	// is rejected by Validate.
	AfterImport mailsource.AfterImport
	// Timeout bounds dialing and every wait for the server (idle time
	// between reads or writes, so a big mail on a slow line still works).
	Timeout time.Duration
	// BatchSize is how many staged mails one Sink.Commit covers.
	BatchSize int
}

// Validate reports every problem of c at once, naming the field.
func (c Config) Validate() error {
	var errs []error
	if c.Host == "" {
		errs = append(errs, errors.New("pop3source: Host is required"))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("pop3source: Port %d is out of range 0..65535", c.Port))
	}
	switch c.Security {
	case mailsource.SecurityTLS, mailsource.SecurityStartTLS, mailsource.SecurityNone:
	default:
		errs = append(errs, fmt.Errorf("pop3source: Security %q must be tls, starttls or none", c.Security))
	}
	if len(c.CACertPEM) > 0 && !x509.NewCertPool().AppendCertsFromPEM(c.CACertPEM) {
		errs = append(errs, errors.New("pop3source: CACertPEM holds no PEM certificate"))
	}
	if c.Username == "" {
		errs = append(errs, errors.New("pop3source: Username is required"))
	}
	if strings.ContainsAny(c.Username, "\r\n\x00") {
		errs = append(errs, errors.New("pop3source: Username must not contain line breaks or NUL"))
	}
	if strings.ContainsAny(c.Password, "\r\n\x00") {
		errs = append(errs, errors.New("pop3source: Password must not contain line breaks or NUL"))
	}
	if c.Password == "" && c.TokenSource == nil {
		errs = append(errs, errors.New("pop3source: Password or TokenSource is required"))
	}
	if c.MaxMailSize < 0 {
		errs = append(errs, fmt.Errorf("pop3source: MaxMailSize %d must not be negative", c.MaxMailSize))
	}
	switch c.AfterImport {
	case "", mailsource.AfterImportDelete, mailsource.AfterImportKeep:
	case mailsource.AfterImportMove:
		errs = append(errs, errors.New("pop3source: AfterImport move is not possible on POP3 (no folders): use delete or keep"))
	default:
		errs = append(errs, fmt.Errorf("pop3source: AfterImport %q must be delete or keep", c.AfterImport))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("pop3source: Timeout %s must not be negative", c.Timeout))
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("pop3source: BatchSize %d must not be negative", c.BatchSize))
	}
	return errors.Join(errs...)
}

// withDefaults fills the zero fields that have defaults.
func (c Config) withDefaults() Config {
	if c.Port == 0 {
		c.Port = DefaultPortPlain
		if c.Security == mailsource.SecurityTLS {
			c.Port = DefaultPortTLS
		}
	}
	if c.AfterImport == "" {
		c.AfterImport = mailsource.AfterImportDelete
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	return c
}

// tlsConfig builds the client TLS settings: system roots plus CACertPEM,
// verified against TLSServerName or Host unless TLSSkipVerify.
func (c Config) tlsConfig() (*tls.Config, error) {
	cfg, err := mailsource.TLSConfig(mailsource.TLSOptions{Host: c.Host, ServerName: c.TLSServerName,
		SkipVerify: c.TLSSkipVerify, CACertPEM: c.CACertPEM, NextProtos: nil})
	if err != nil {
		return nil, fmt.Errorf("pop3source: %w", err)
	}
	return cfg, nil
}
