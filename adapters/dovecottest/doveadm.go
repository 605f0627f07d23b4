package dovecottest

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Session is one logged-in connection as doveadm who lists it.
type Session struct {
	User     string
	Protocol string // imap, pop3
	PID      string
	IP       string
}

// Who lists the logged-in connections (doveadm who -1): one Session per
// connection, login processes excluded.
func (s *Server) Who(tb testing.TB) []Session {
	tb.Helper()
	out := s.doveadm(tb, "who", "-1")
	var sessions []Session
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 && len(f) > 0 && f[0] == "username" || len(f) < 4 {
			continue // the header, or nothing at all
		}
		sessions = append(sessions, Session{User: f[0], Protocol: f[1], PID: strings.Trim(f[2], "()"), IP: strings.Trim(f[3], "()")})
	}
	return sessions
}

// Connections counts user's logged-in connections of protocol.
func (s *Server) Connections(tb testing.TB, user, protocol string) int {
	tb.Helper()
	n := 0
	for _, c := range s.Who(tb) {
		if c.User == user && c.Protocol == protocol {
			n++
		}
	}
	return n
}

// Kick disconnects every connection of user (doveadm kick), as an
// administrator or a server restart would.
func (s *Server) Kick(tb testing.TB, user string) {
	tb.Helper()
	s.checkUser(tb, "Kick", user)
	s.doveadm(tb, "kick", user)
}

// doveadm runs doveadm against this server's config and returns its
// standard output; a failure fails the test.
func (s *Server) doveadm(tb testing.TB, args ...string) string {
	tb.Helper()
	bin := filepath.Join(filepath.Dir(s.bin), "doveadm")
	if p, err := exec.LookPath("doveadm"); err == nil {
		bin = p
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, append([]string{"-c", s.confPath}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("dovecottest: doveadm %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String()
}

// String renders a session as doveadm who -1 does.
func (c Session) String() string { return fmt.Sprintf("%s %s %s %s", c.User, c.Protocol, c.PID, c.IP) }
