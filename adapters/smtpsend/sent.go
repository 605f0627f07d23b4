package smtpsend

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/ledgerdesk/ledgerdesk/adapters/imapsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// SentFolder is the IMAP mailbox that receives a copy of each sent mail,
// reached with the settings of an inbound IMAP account; the fields mean
// what imapsource.Config's fields of the same names mean.
type SentFolder struct {
	Host          string
	Port          int    // 0: 993 for tls, 143 otherwise
	Security      string // tls | starttls | none; "" is none, as for Account
	TLSSkipVerify bool
	TLSServerName string
	// RootCAs verifies the server's certificate; nil means the system pool.
	RootCAs *x509.CertPool
	// CACertPEM is the account's extra CA, added to RootCAs (or to the
	// system pool).
	CACertPEM []byte
	Username  string
	Password  string
	// TokenSource, when set, logs in with AUTHENTICATE XOAUTH2 using the
	// access token it returns; Password is then not used.
	TokenSource func(ctx context.Context) (string, error)
	// PreventPlainLogin forbids IMAP LOGIN: the password only goes out in
	// AUTHENTICATE PLAIN or as a CRAM-MD5 digest.
	PreventPlainLogin bool
	// AllowPlaintextAuth lets the password or token cross a connection
	// without TLS (the account's allow_plaintext_auth).
	AllowPlaintextAuth bool
	// AllowAddr, when set, is asked about every address before it is
	// dialled (allowed_mail_hosts).
	AllowAddr func(netip.Addr) error
	Folder    string        // e.g. "Sent"
	Timeout   time.Duration // bounds dialing and every stretch without progress [30s]
}

// AppendSent stores raw in the folder with the \Seen flag and date as its
// internal date, through imapsource.Append: it dials and logs in exactly as
// the account's fetcher does. It opens one connection per call: copies to
// Sent are rare next to sending and not worth a pool. A refusal carries
// the server's words (mailsource.ServerReply).
func AppendSent(ctx context.Context, f SentFolder, raw []byte, date time.Time) error {
	if err := imapsource.Append(ctx, f.imapConfig(), f.Folder, raw, []imap.Flag{imap.FlagSeen}, date); err != nil {
		return fmt.Errorf("smtpsend: sent folder %s: %w", net.JoinHostPort(f.Host, strconv.Itoa(f.Port)), err)
	}
	return nil
}

// imapConfig is the imapsource configuration f stands for.
func (f SentFolder) imapConfig() imapsource.Config {
	security := mailsource.Security(f.Security)
	if security == "" {
		security = mailsource.SecurityNone
	}
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return imapsource.Config{
		Host: f.Host, Port: f.Port, Security: security,
		TLSSkipVerify: f.TLSSkipVerify, TLSServerName: f.TLSServerName, RootCAs: f.RootCAs, CACertPEM: f.CACertPEM,
		Username: f.Username, Password: f.Password, TokenSource: f.TokenSource, PreventPlainLogin: f.PreventPlainLogin,
		AllowPlaintextAuth: f.AllowPlaintextAuth, AllowAddr: f.AllowAddr, Timeout: timeout,
	}
}
