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
	p("auth_mechanisms = plain login cram-md5")
	p("auth_verbose = yes")
	p("mail_location = maildir:~/Maildir")
	// Throwaway mail: durability costs time and buys nothing here.
	p("mail_fsync = never")
	// Tests try wrong passwords; the stock 2 s delay only slows them.
	p("auth_failure_delay = 0")
	// One file per user, see AddUser.
	p("passdb {\n  driver = passwd-file\n  args = scheme=PLAIN %s/%%u\n}", s.passwdDir)
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
	p("service imap-login {\n%s  service_count = 0\n"+
		"  inet_listener imap {\n    address = 127.0.0.1\n    port = %d\n  }\n"+
		"  inet_listener imaps {\n    address = 127.0.0.1\n    port = %d\n    ssl = yes\n  }\n}", chroot, ports[0], ports[1])
	p("service pop3-login {\n%s  service_count = 0\n"+
		"  inet_listener pop3 {\n    address = 127.0.0.1\n    port = %d\n  }\n"+
		"  inet_listener pop3s {\n    address = 127.0.0.1\n    port = %d\n    ssl = yes\n  }\n}", chroot, ports[2], ports[3])
	p("protocol imap {\n  mail_max_userip_connections = %d\n}", maxUserIPConnections)
	p("protocol pop3 {\n  mail_max_userip_connections = %d\n}", maxUserIPConnections)
	return b.String()
}
