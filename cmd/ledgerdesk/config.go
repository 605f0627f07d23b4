package main

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/imapsource"
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

	envStreamHeartbeat = "LEDGERDESK_STREAM_HEARTBEAT"

	// The secrets may also come from a file (a mounted container or
	// systemd secret): the variable names the file.
	envSecretKeyFile  = envSecretKey + "_FILE"
	envAdminTokenFile = envAdminToken + "_FILE"

	envIdleRenewal = "LEDGERDESK_IMAP_IDLE_RENEWAL"
)

// config is what every subcommand that touches the store needs.
type config struct {
	DatabaseURL    string // empty: the embedded SQLite store under DataDir
	DataDir        string
	HTTPAddr       string
	AdminToken     string // from the environment, or read from AdminTokenFile by validate
	AdminTokenFile string
	PublicURL      string
	SecretKey      string // as given (decoded by decodeSecretKey), or read from SecretKeyFile by validate
	SecretKeyFile  string
	LogFormat      string // json | text | auto
	// StreamHeartbeat is how often an idle GET /api/v1/stream sends a
	// comment line.
	StreamHeartbeat time.Duration
	streamHeartbeat string // as given; parsed by validate
	// IdleRenewal is how often a push connection renews its IMAP IDLE;
	// parsed by validate from idleRenewal.
	IdleRenewal time.Duration
	idleRenewal string
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
// flag given on the command line wins over the variable. Secrets have no
// flag (the command line is visible to every user of the machine); they
// come from the environment or from a file whose path a flag may give.
func bindConfig(fs *flag.FlagSet, getenv func(string) string, withHTTP bool) *config {
	c := &config{SecretKey: getenv(envSecretKey)}
	def := func(name, fallback string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return fallback
	}
	fs.StringVar(&c.DatabaseURL, "database-url", def(envDatabaseURL, ""),
		"PostgreSQL URL (postgres://...) without a password (use the variable, PGPASSWORD or ~/.pgpass); empty uses the embedded store ["+envDatabaseURL+"]")
	fs.StringVar(&c.DataDir, "data-dir", def(envDataDir, "./data"),
		"directory for the embedded database, mail blobs and the generated secret key ["+envDataDir+"]")
	fs.StringVar(&c.SecretKeyFile, "secret-key-file", def(envSecretKeyFile, ""),
		"file holding the 32-byte key (base64 or hex) that encrypts secrets at rest, instead of "+envSecretKey+" ["+envSecretKeyFile+"]")
	fs.StringVar(&c.LogFormat, "log-format", def(envLogFormat, "auto"),
		"log format: json, text, or auto (json unless on a terminal) ["+envLogFormat+"]")
	if withHTTP {
		c.AdminToken = getenv(envAdminToken)
		fs.StringVar(&c.HTTPAddr, "http-addr", def(envHTTPAddr, "127.0.0.1:8080"),
			"address the HTTP API listens on ["+envHTTPAddr+"]")
		fs.StringVar(&c.AdminTokenFile, "admin-token-file", def(envAdminTokenFile, ""),
			"file holding the bootstrap API token of the first admin, instead of "+envAdminToken+" ["+envAdminTokenFile+"]")
		fs.StringVar(&c.streamHeartbeat, "stream-heartbeat", def(envStreamHeartbeat, "15s"),
			"how often an idle event stream (GET /api/v1/stream) sends a heartbeat comment, 1s to 5m ["+envStreamHeartbeat+"]")
		fs.StringVar(&c.PublicURL, "public-url", def(envPublicURL, ""),
			"URL where browsers reach this service; OAuth consents return to it + /oauth/callback [http://<http-addr>] ["+envPublicURL+"]")
		fs.StringVar(&c.idleRenewal, "imap-idle-renewal", def(envIdleRenewal, imapsource.DefaultIdleRenewal.String()),
			"how often a pushed IMAP account's IDLE is renewed, at most "+imapsource.MaxIdleRenewal.String()+" (RFC 2177) ["+envIdleRenewal+"]")
	}
	return c
}

// validate checks every setting and names the variable of each problem.
func (c *config) validate(withHTTP bool) error {
	var problems []error
	bad := func(env, format string, args ...any) {
		problems = append(problems, fmt.Errorf("%s: %s", env, fmt.Sprintf(format, args...)))
	}
	for _, s := range []struct {
		env, fileEnv string
		value        *string
		file         string
	}{
		{envSecretKey, envSecretKeyFile, &c.SecretKey, c.SecretKeyFile},
		{envAdminToken, envAdminTokenFile, &c.AdminToken, c.AdminTokenFile},
	} {
		if s.file == "" {
			continue
		}
		if *s.value != "" {
			bad(s.fileEnv, "set, and so is %s: give the secret one way", s.env)
			continue
		}
		v, err := readSecretFile(s.file)
		if err != nil {
			bad(s.fileEnv, "%v", err)
			continue
		}
		*s.value = v
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
		d, err := time.ParseDuration(c.streamHeartbeat)
		switch {
		case err != nil:
			bad(envStreamHeartbeat, "%q is not a duration such as 15s", c.streamHeartbeat)
		case d < time.Second || d > 5*time.Minute:
			bad(envStreamHeartbeat, "%s is outside 1s to 5m", d)
		}
		c.StreamHeartbeat = d
		if c.AdminToken != "" && len(c.AdminToken) < 16 {
			bad(envAdminToken, "too short (%d characters), use at least 16", len(c.AdminToken))
		}
		if d, err := time.ParseDuration(c.idleRenewal); err != nil || d <= 0 || d > imapsource.MaxIdleRenewal {
			bad(envIdleRenewal, "%q is not a duration above 0 and at most %s (e.g. 25m)", c.idleRenewal, imapsource.MaxIdleRenewal)
		} else {
			c.IdleRenewal = d
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

// readSecretFile reads a secret from a file ("-": standard input), without
// the line end an editor or echo adds.
func readSecretFile(path string) (string, error) {
	var raw []byte
	var err error
	if path == "-" {
		raw, err = io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("read the secret: %w", err)
	}
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// secretFlags are flags that would carry a secret, refused by parseFlags
// with where the secret goes instead.
var secretFlags = map[string]string{
	"secret-key":    envSecretKey + " or " + envSecretKeyFile + " (--secret-key-file)",
	"admin-token":   envAdminToken + " or " + envAdminTokenFile + " (--admin-token-file)",
	"new-key":       "--new-key-file (a file, or - for standard input)",
	"s3-secret-key": envS3SecretKey + " or " + envS3SecretFile + " (--s3-secret-key-file)",
}

// refuseSecretFlags refuses a secret on the command line, which every user
// of the machine sees (ps, /proc/<pid>/cmdline); the secret is not echoed.
func refuseSecretFlags(args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if instead, ok := secretFlags[name]; ok {
			return &configError{problems: []error{fmt.Errorf("--%s: refused: a secret on the command line is visible to every user "+
				"of the machine (ps); use %s", name, instead)}}
		}
	}
	return nil
}

// refuseDatabasePassword refuses a --database-url that holds a password,
// for the same reason; the environment variable may hold one.
func refuseDatabasePassword(fs *flag.FlagSet) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "database-url" && urlHasPassword(f.Value.String()) {
			err = &configError{problems: []error{fmt.Errorf("--database-url: refused: it holds a password, which every user of the "+
				"machine sees on the command line (ps); give the URL in %s, or the password in PGPASSWORD or ~/.pgpass", envDatabaseURL)}}
		}
	})
	return err
}

func urlHasPassword(s string) bool {
	if strings.Contains(strings.ToLower(s), "password=") {
		return true
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return false
	}
	_, set := u.User.Password()
	return set
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
