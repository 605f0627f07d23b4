package main

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Environment variable names are a contract with users and other tools.
const (
	envDatabaseURL = "LEDGERDESK_DATABASE_URL"
	envDataDir     = "LEDGERDESK_DATA_DIR"
	envHTTPAddr    = "LEDGERDESK_HTTP_ADDR"
	envAdminToken  = "LEDGERDESK_ADMIN_TOKEN"
	envPublicURL   = "LEDGERDESK_PUBLIC_URL"
	envSecretKey   = "LEDGERDESK_SECRET_KEY"
	envLogFormat   = "LEDGERDESK_LOG_FORMAT"
)

// config is what every subcommand that touches the store needs.
type config struct {
	DatabaseURL string // empty: the embedded SQLite store under DataDir
	DataDir     string
	HTTPAddr    string
	AdminToken  string
	PublicURL   string
	SecretKey   string // as given; decoded by secretKeyBytes
	LogFormat   string // json | text | auto
}

// configError is an invalid setting: the program stops with exit code 2.
type configError struct{ problems []error }

func (e *configError) Error() string {
	msgs := make([]string, len(e.problems))
	for i, p := range e.problems {
		msgs[i] = p.Error()
	}
	return "invalid configuration:\n  " + strings.Join(msgs, "\n  ")
}

// bindConfig registers the flags that mirror the environment variables; a
// flag given on the command line wins over the variable.
func bindConfig(fs *flag.FlagSet, getenv func(string) string, withHTTP bool) *config {
	c := &config{}
	def := func(name, fallback string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return fallback
	}
	fs.StringVar(&c.DatabaseURL, "database-url", def(envDatabaseURL, ""),
		"PostgreSQL URL (postgres://...); empty uses the embedded store ["+envDatabaseURL+"]")
	fs.StringVar(&c.DataDir, "data-dir", def(envDataDir, "./data"),
		"directory for the embedded database, mail blobs and the generated secret key ["+envDataDir+"]")
	fs.StringVar(&c.SecretKey, "secret-key", def(envSecretKey, ""),
		"32-byte key (base64 or hex) that encrypts secrets at rest; required with PostgreSQL ["+envSecretKey+"]")
	fs.StringVar(&c.LogFormat, "log-format", def(envLogFormat, "auto"),
		"log format: json, text, or auto (json unless on a terminal) ["+envLogFormat+"]")
	if withHTTP {
		fs.StringVar(&c.HTTPAddr, "http-addr", def(envHTTPAddr, "127.0.0.1:8080"),
			"address the HTTP API listens on ["+envHTTPAddr+"]")
		fs.StringVar(&c.AdminToken, "admin-token", def(envAdminToken, ""),
			"bootstrap API token of the first admin ["+envAdminToken+"]")
		fs.StringVar(&c.PublicURL, "public-url", def(envPublicURL, ""),
			"URL where browsers reach this service; OAuth consents return to it + /oauth/callback [http://<http-addr>] ["+envPublicURL+"]")
	}
	return c
}

// validate checks every setting and names the variable of each problem.
func (c *config) validate(withHTTP bool) error {
	var problems []error
	bad := func(env, format string, args ...any) {
		problems = append(problems, fmt.Errorf("%s: %s", env, fmt.Sprintf(format, args...)))
	}
	if c.DatabaseURL != "" {
		u, err := url.Parse(c.DatabaseURL)
		switch {
		case err != nil:
			bad(envDatabaseURL, "not a URL: %v", redactURLError(err))
		case u.Scheme != "postgres" && u.Scheme != "postgresql":
			bad(envDatabaseURL, "scheme %q is not supported, want postgres://", u.Scheme)
		case u.Host == "" && u.Query().Get("host") == "":
			bad(envDatabaseURL, "no host in the URL")
		}
		if c.SecretKey == "" {
			bad(envSecretKey, "required with PostgreSQL (32 random bytes, base64 or hex; e.g. `openssl rand -base64 32`)")
		}
	}
	if strings.TrimSpace(c.DataDir) == "" {
		bad(envDataDir, "must not be empty")
	}
	if c.SecretKey != "" {
		if _, err := decodeSecretKey(c.SecretKey); err != nil {
			bad(envSecretKey, "%v", err)
		}
	}
	switch c.LogFormat {
	case "json", "text", "auto":
	default:
		bad(envLogFormat, "%q is not one of json, text, auto", c.LogFormat)
	}
	if withHTTP {
		if err := validateListenAddr(c.HTTPAddr); err != nil {
			bad(envHTTPAddr, "%v", err)
		}
		if c.AdminToken != "" && len(c.AdminToken) < 16 {
			bad(envAdminToken, "too short (%d characters), use at least 16", len(c.AdminToken))
		}
		if c.PublicURL != "" {
			u, err := url.Parse(c.PublicURL)
			switch {
			case err != nil:
				bad(envPublicURL, "not a URL: %v", err)
			case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
				bad(envPublicURL, "%q is not an http(s) URL with a host", c.PublicURL)
			case u.RawQuery != "" || u.Fragment != "":
				bad(envPublicURL, "%q must not have a query or fragment", c.PublicURL)
			}
		}
	}
	if len(problems) > 0 {
		return &configError{problems: problems}
	}
	return nil
}

// redactURLError drops the URL text from a parse error: it may hold a password.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return errors.New("malformed")
}

func validateListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("host %q is not a host name or IP address", host)
	}
	return nil
}

// decodeSecretKey accepts 32 bytes as hex, standard or URL-safe base64.
func decodeSecretKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("decodes to %d bytes, want 32", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("not 32 bytes in hex or base64")
}
