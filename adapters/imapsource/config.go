package imapsource

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
	DefaultTimeout     = 60 * time.Second
	DefaultBatchSize   = 500
	DefaultErrorFolder = "HD Error Messages"
	// DefaultPortTLS is the implicit-TLS IMAP port (RFC 8314).
	DefaultPortTLS = 993
	// DefaultPortPlain is the IMAP port for starttls and none (RFC 9051).
	DefaultPortPlain = 143
)

// Config describes one IMAP account. The zero values of Port, Folders,
// AfterImport, ErrorFolder, Timeout and BatchSize mean the defaults.
type Config struct {
	Host     string
	Port     int // 0: 993 for tls, 143 otherwise
	Security mailsource.Security
	// TLSSkipVerify accepts any server certificate (self-signed servers).
	TLSSkipVerify bool
	// TLSServerName is verified instead of Host when set.
	TLSServerName string
	// CACertPEM is added to the system roots (or to RootCAs) when set.
	CACertPEM []byte
	// RootCAs, when set, verifies the server's certificate instead of the
	// system roots (the saga's Sent-folder copy passes the pool the SMTP
	// side trusts); it is not modified.
	RootCAs *x509.CertPool
	// Username is passed through as typed (Exchange's Domain\User\Alias works).
	Username string
	Password string
	// TokenSource, when set, makes the fetcher log in with AUTHENTICATE
	// XOAUTH2 using the access token it returns; Password is then not used.
	TokenSource func(ctx context.Context) (string, error)
	// PreventPlainLogin forbids LOGIN: the password only goes out inside
	// AUTHENTICATE PLAIN (RFC 4616, carries UTF-8 intact) or as a CRAM-MD5
	// digest (RFC 2195), whichever the server offers, in that order.
	PreventPlainLogin bool
	// AllowPlaintextAuth lets a password or token cross a connection
	// without TLS (Security none); without it the login uses CRAM-MD5 or
	// fails with mailsource.ErrPlaintextAuth.
	AllowPlaintextAuth bool
	// AllowAddr, when set, is asked about every address before it is
	// dialled; an error refuses the connection (allowed_mail_hosts).
	AllowAddr func(netip.Addr) error
	// Folders are polled in order; nil means ["INBOX"].
	Folders []string
	// IncludeSubfolders polls every folder below each of Folders too, as
	// LIST shows them with the server's hierarchy delimiter; the error,
	// move and trash folders (and what lies below them) are never walked.
	IncludeSubfolders bool
	// OnlySubscribed restricts that walk to subscribed folders (LIST
	// (SUBSCRIBED), RFC 5258). Folders themselves are always polled.
	OnlySubscribed bool
	// AfterImport is delete (default), move, trash or keep.
	AfterImport mailsource.AfterImport
	// TrashFolder receives imported mails when AfterImport is trash and
	// the server marks no folder \Trash (RFC 6154); it is created when
	// missing. A marked folder always wins.
	TrashFolder string
	// MoveFolder receives imported mails when AfterImport is move; it is
	// created when missing.
	MoveFolder string
	// ErrorFolder receives failed and oversize mails; it is created when
	// missing. Default "HD Error Messages".
	ErrorFolder string
	// MaxMailSize in octets as reported by RFC822.SIZE; 0 means unlimited.
	// Larger mails are staged with Sink.Oversize and never downloaded.
	MaxMailSize int64
	// Timeout bounds dialing and every stretch without progress on the
	// connection (so a big mail on a slow line still works).
	Timeout time.Duration
	// BatchSize is how many mails one UID FETCH and one Sink.Commit cover.
	BatchSize int
}

// Validate reports every problem of c at once, naming the field. A config
// used only for Append may leave the folder settings at their zero values.
func (c Config) Validate() error {
	errs := c.connectionProblems()
	for i, f := range c.Folders {
		if strings.TrimSpace(f) == "" {
			errs = append(errs, fmt.Errorf("imapsource: Folders[%d] is empty", i))
		}
	}
	switch c.AfterImport {
	case "", mailsource.AfterImportDelete, mailsource.AfterImportKeep, mailsource.AfterImportTrash:
	case mailsource.AfterImportMove:
		if strings.TrimSpace(c.MoveFolder) == "" {
			errs = append(errs, errors.New("imapsource: MoveFolder is required when AfterImport is move"))
		}
	default:
		errs = append(errs, fmt.Errorf("imapsource: AfterImport %q must be delete, move, trash or keep", c.AfterImport))
	}
	if c.OnlySubscribed && !c.IncludeSubfolders {
		errs = append(errs, errors.New("imapsource: OnlySubscribed restricts the walk of IncludeSubfolders; set both"))
	}
	if c.AfterImport == mailsource.AfterImportTrash && c.TrashFolder != "" {
		for _, f := range c.folders() {
			if strings.EqualFold(f, c.TrashFolder) {
				errs = append(errs, fmt.Errorf("imapsource: TrashFolder %q is also one of Folders: mails would be imported again", c.TrashFolder))
			}
		}
	}
	if c.AfterImport == mailsource.AfterImportMove && c.MoveFolder != "" {
		for _, f := range c.folders() {
			if strings.EqualFold(f, c.MoveFolder) {
				errs = append(errs, fmt.Errorf("imapsource: MoveFolder %q is also one of Folders: mails would be imported again", c.MoveFolder))
			}
		}
	}
	errorFolder := c.ErrorFolder
	if errorFolder == "" {
		errorFolder = DefaultErrorFolder
	}
	for _, f := range c.folders() {
		if strings.EqualFold(f, errorFolder) {
			errs = append(errs, fmt.Errorf("imapsource: ErrorFolder %q is also one of Folders: failed mails would be fetched again", errorFolder))
		}
	}
	if c.MaxMailSize < 0 {
		errs = append(errs, fmt.Errorf("imapsource: MaxMailSize %d must not be negative", c.MaxMailSize))
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("imapsource: BatchSize %d must not be negative", c.BatchSize))
	}
	return errors.Join(errs...)
}

// connectionProblems are the problems of the fields that dialing and
// logging in read; Append checks only these.
func (c Config) connectionProblems() []error {
	var errs []error
	if c.Host == "" {
		errs = append(errs, errors.New("imapsource: Host is required"))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("imapsource: Port %d is out of range 0..65535", c.Port))
	}
	switch c.Security {
	case mailsource.SecurityTLS, mailsource.SecurityStartTLS, mailsource.SecurityNone:
	default:
		errs = append(errs, fmt.Errorf("imapsource: Security %q must be tls, starttls or none", c.Security))
	}
	if len(c.CACertPEM) > 0 && !x509.NewCertPool().AppendCertsFromPEM(c.CACertPEM) {
		errs = append(errs, errors.New("imapsource: CACertPEM holds no PEM certificate"))
	}
	if c.Username == "" {
		errs = append(errs, errors.New("imapsource: Username is required"))
	}
	if c.Password == "" && c.TokenSource == nil {
		errs = append(errs, errors.New("imapsource: Password or TokenSource is required"))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("imapsource: Timeout %s must not be negative", c.Timeout))
	}
	return errs
}

func (c Config) folders() []string {
	if len(c.Folders) == 0 {
		return []string{"INBOX"}
	}
	return c.Folders
}

// withDefaults fills the zero fields that have defaults.
func (c Config) withDefaults() Config {
	if c.Port == 0 {
		c.Port = DefaultPortPlain
		if c.Security == mailsource.SecurityTLS {
			c.Port = DefaultPortTLS
		}
	}
	c.Folders = append([]string(nil), c.folders()...)
	if c.AfterImport == "" {
		c.AfterImport = mailsource.AfterImportDelete
	}
	if c.ErrorFolder == "" {
		c.ErrorFolder = DefaultErrorFolder
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	return c
}

// tlsConfig builds the client TLS settings: system roots (or RootCAs) plus
// CACertPEM, verified against TLSServerName or Host unless TLSSkipVerify.
func (c Config) tlsConfig() (*tls.Config, error) {
	o := mailsource.TLSOptions{Host: c.Host, ServerName: c.TLSServerName,
		SkipVerify: c.TLSSkipVerify, CACertPEM: c.CACertPEM, NextProtos: []string{"imap"}}
	if c.RootCAs != nil {
		o.CACertPEM = nil // added to a copy of RootCAs below
	}
	cfg, err := mailsource.TLSConfig(o)
	if err != nil {
		return nil, fmt.Errorf("imapsource: %w", err)
	}
	if c.RootCAs != nil {
		cfg.RootCAs = c.RootCAs.Clone()
		if len(c.CACertPEM) > 0 && !cfg.RootCAs.AppendCertsFromPEM(c.CACertPEM) {
			return nil, errors.New("imapsource: CACertPEM holds no PEM certificate")
		}
	}
	return cfg, nil
}
