package mailsource

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// TLSOptions are the certificate settings every mailbox account has
// (RULES.md section 1): skip verification, an alternative name to verify,
// an extra CA.
type TLSOptions struct {
	Host       string
	ServerName string // verified instead of Host when set
	SkipVerify bool
	CACertPEM  []byte // added to the system roots when set
	NextProtos []string
}

// TLSConfig builds the client configuration the fetchers dial with.
func TLSConfig(o TLSOptions) (*tls.Config, error) {
	name := o.ServerName
	if name == "" {
		name = o.Host
	}
	cfg := &tls.Config{
		ServerName:         name,
		InsecureSkipVerify: o.SkipVerify, //nolint:gosec // an admin's explicit choice for self-signed servers
		MinVersion:         tls.VersionTLS12,
		NextProtos:         o.NextProtos,
	}
	if len(o.CACertPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(o.CACertPEM) {
			return nil, errors.New("CACertPEM holds no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
