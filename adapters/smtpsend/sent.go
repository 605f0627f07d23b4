package smtpsend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// SentFolder is the IMAP mailbox that receives a copy of each sent mail.
type SentFolder struct {
	Host          string
	Port          int
	Security      string // tls | starttls | none
	TLSSkipVerify bool
	TLSServerName string
	RootCAs       *x509.CertPool
	Username      string
	Password      string
	Folder        string // e.g. "Sent"
	Timeout       time.Duration
}

// AppendSent stores raw in the folder with the \Seen flag and date as its
// internal date. It opens one connection per call: copies to Sent are rare
// next to sending and not worth a pool.
func AppendSent(ctx context.Context, f SentFolder, raw []byte, date time.Time) error {
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name := f.TLSServerName
	if name == "" {
		name = f.Host
	}
	opts := &imapclient.Options{
		TLSConfig: &tls.Config{ServerName: name, InsecureSkipVerify: f.TLSSkipVerify, RootCAs: f.RootCAs, MinVersion: tls.VersionTLS12}, //nolint:gosec // the admin's choice
		Dialer:    &net.Dialer{Timeout: timeout},
	}
	addr := net.JoinHostPort(f.Host, strconv.Itoa(f.Port))
	var (
		c   *imapclient.Client
		err error
	)
	switch f.Security {
	case SecurityTLS:
		c, err = imapclient.DialTLS(addr, opts)
	case SecurityStartTLS:
		c, err = imapclient.DialStartTLS(addr, opts)
	default:
		c, err = imapclient.DialInsecure(addr, opts)
	}
	if err != nil {
		return fmt.Errorf("smtpsend: sent folder %s: dial: %w", addr, err)
	}
	defer func() { _ = c.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if err := c.Login(f.Username, f.Password).Wait(); err != nil {
		return fmt.Errorf("smtpsend: sent folder %s: login: %w", addr, err)
	}
	cmd := c.Append(f.Folder, int64(len(raw)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}, Time: date})
	if _, err := cmd.Write(raw); err != nil {
		return fmt.Errorf("smtpsend: sent folder %s: append to %q: %w", addr, f.Folder, err)
	}
	if err := cmd.Close(); err != nil {
		return fmt.Errorf("smtpsend: sent folder %s: append to %q: %w", addr, f.Folder, err)
	}
	if _, err := cmd.Wait(); err != nil {
		return fmt.Errorf("smtpsend: sent folder %s: append to %q: %w", addr, f.Folder, err)
	}
	_ = c.Logout().Wait()
	return nil
}
