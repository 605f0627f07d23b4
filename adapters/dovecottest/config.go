package dovecottest

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// config returns dovecot.conf for the ports imap, imaps, pop3, pop3s.
// Everything not set here stays at Dovecot 2.3's defaults, which include
// UIDPLUS and MOVE.
func (s *Server) config(ports []int) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Written by dovecottest for one test; removed with it.")
	p("instance_name = ldt-%s", randomName())
	p("base_dir = %s", s.baseDir)
	p("state_dir = %s", filepath.Join(s.dir, "state"))
	p("log_path = %s", s.logPath)
	p("protocols = imap pop3")
	p("listen = 127.0.0.1")
	p("ssl = yes")
	p("ssl_cert = <%s", filepath.Join(s.dir, "cert.pem"))
	p("ssl_key = <%s", filepath.Join(s.dir, "key.pem"))
	p("disable_plaintext_auth = no")
	if s.oauth2URL != "" {
		p("auth_mechanisms = %s %s", passwordMechanisms, oauth2Mechanisms)
	} else {
		p("auth_mechanisms = %s", passwordMechanisms)
	}
	p("auth_verbose = yes")
	p("mail_location = maildir:~/Maildir")
	if s.trashFolder != "" {
		// The inbox namespace Dovecot would assume anyway (Maildir++: "."
		// separates levels), with one folder marked \Trash.
		p("namespace inbox {\n  inbox = yes\n  separator = .\n  mailbox \"%s\" {\n    special_use = \\Trash\n  }\n}",
			strings.ReplaceAll(s.trashFolder, "/", "."))
	}
	// Throwaway mail: durability costs time and buys nothing here.
	p("mail_fsync = never")
	// Tests try wrong passwords; the stock 2 s delay only slows them.
	p("auth_failure_delay = 0")
	// Nor the penalty: after failed logins from an IP (all tests come from
	// 127.0.0.1) Dovecot delays every later login from it by 2, 4, 8 and
	// up to 15 s. Without this listener the auth process skips penalties.
	p("service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}")
	// One file per user, see AddUser.
	if s.oauth2URL != "" {
		// Each passdb serves only its own mechanisms: passwd-file has no
		// tokens, and the oauth2 passdb cannot give CRAM-MD5 credentials.
		p("passdb {\n  driver = passwd-file\n  mechanisms = %s\n  args = scheme=PLAIN %s/%%u\n}", passwordMechanisms, s.passwdDir)
		p("passdb {\n  driver = oauth2\n  mechanisms = %s\n  args = %s\n}", oauth2Mechanisms, s.oauth2ConfPath())
	} else {
		p("passdb {\n  driver = passwd-file\n  args = scheme=PLAIN %s/%%u\n}", s.passwdDir)
	}
	p("userdb {\n  driver = passwd-file\n  args = %s/%%u\n}", s.passwdDir)
	chroot := ""
	if os.Geteuid() != 0 {
		// Unprivileged: every process runs as the test's user, and login
		// processes cannot chroot.
		if u, err := user.Current(); err == nil {
			p("default_login_user = %s", u.Username)
			p("default_internal_user = %s", u.Username)
			if g, err := user.LookupGroupId(strconv.Itoa(os.Getegid())); err == nil {
				p("default_internal_group = %s", g.Name)
			}
		}
		chroot = "  chroot =\n"
	}
	// service_count = 0: one login process serves all connections, which
	// keeps many parallel test connections cheap.
	loginLimit := ""
	if s.maxConns > 0 {
		lim := s.limits()
		p("default_process_limit = %d", lim.processes)
		p("default_client_limit = %d", lim.clients)
		// Mail processes serve many connections each, and live on
		// (service_count 0; all users share one uid, which this needs):
		// 1,000 processes of one connection each
		// would cost a GB, and each IDLE process would take one of the
		// kernel's 128 inotify instances per user.
		for _, svc := range []string{"imap", "pop3"} {
			p("service %s {\n  service_count = 0\n  client_limit = %d\n  process_limit = %d\n}", svc, lim.perMailProcess, lim.mailProcesses)
		}
		// Should inotify run out all the same (other servers of parallel
		// tests use it too), IDLE still sees new mail within a second.
		p("mailbox_idle_check_interval = 1 secs")
		loginLimit = fmt.Sprintf("  client_limit = %d\n", lim.clients)
	}
	p("service imap-login {\n%s  service_count = 0\n%s"+
		"  inet_listener imap {\n    address = 127.0.0.1\n    port = %d\n  }\n"+
		"  inet_listener imaps {\n    address = 127.0.0.1\n    port = %d\n    ssl = yes\n  }\n}", chroot, loginLimit, ports[0], ports[1])
	p("service pop3-login {\n%s  service_count = 0\n%s"+
		"  inet_listener pop3 {\n    address = 127.0.0.1\n    port = %d\n  }\n"+
		"  inet_listener pop3s {\n    address = 127.0.0.1\n    port = %d\n    ssl = yes\n  }\n}", chroot, loginLimit, ports[2], ports[3])
	p("protocol imap {\n  mail_max_userip_connections = %d\n}", maxUserIPConnections)
	p("protocol pop3 {\n  mail_max_userip_connections = %d\n}", maxUserIPConnections)
	return b.String()
}

// maxConnectionsLimit bounds Options.MaxConnections: each connection costs
// the master and the login process file descriptors, and the test
// process's own limit is typically 20,000 or less.
const maxConnectionsLimit = 5000

// connsPerMailProcess is how many connections one imap or pop3 process
// serves when Options.MaxConnections is set.
const connsPerMailProcess = 50

// serviceLimits are Dovecot's process and client limits for
// Options.MaxConnections.
type serviceLimits struct {
	processes, clients            int // default_process_limit, default_client_limit
	perMailProcess, mailProcesses int // client_limit, process_limit of imap and pop3
}

func (s *Server) limits() serviceLimits {
	n := s.maxConns
	return serviceLimits{
		// The stock 100, or enough for every connection to have a process
		// of its own should a service be left at client_limit 1.
		processes: max(100, n+100),
		// Login processes hold every connection until it has logged in
		// (and all of them with TLS, which they proxy); auth and anvil take
		// a connection from each process of the three login services.
		clients:        max(1000, 2*n+100, 3*(n+100)+100),
		perMailProcess: connsPerMailProcess,
		mailProcesses:  n/connsPerMailProcess + 10,
	}
}

// SASL mechanisms, as Dovecot's auth_mechanisms and passdb mechanisms
// spell them.
const (
	passwordMechanisms = "plain login cram-md5"
	oauth2Mechanisms   = "xoauth2 oauthbearer"
)

func (s *Server) oauth2ConfPath() string { return filepath.Join(s.dir, "dovecot-oauth2.conf.ext") }

// oauth2Config returns the oauth2 passdb's settings: every token is
// checked by an RFC 7662 introspection POST (token=…) on each login, and
// the login's user must equal the answer's "username". Dovecot 2.3 has no
// cache for it unless auth_cache_size is set, which this package leaves at 0,
// so an expired or revoked token fails at once.
func (s *Server) oauth2Config() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Written by dovecottest for one test; removed with it.")
	p("introspection_mode = post")
	p("introspection_url = %s", s.oauth2URL)
	p("force_introspection = yes")
	p("username_attribute = username")
	p("active_attribute = active")
	p("active_value = true")
	return b.String()
}
