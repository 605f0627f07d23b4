package pop3source

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	valid := Config{Host: "pop.example.com", Security: mailsource.SecurityTLS, Username: "u", Password: "p"}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // substrings of the joined error; nil means valid
	}{
		{name: "a minimal config is valid", change: func(*Config) {}},
		{name: "keep is allowed", change: func(c *Config) { c.AfterImport = mailsource.AfterImportKeep }},
		{name: "a token source replaces the password", change: func(c *Config) {
			c.Password = ""
			c.TokenSource = func(context.Context) (string, error) { return "t", nil }
		}},
		{name: "line breaks cannot smuggle commands into USER or PASS", change: func(c *Config) {
			c.Username, c.Password = "u\r\nDELE 1", "p\nx"
		}, want: []string{"Username must not contain", "Password must not contain"}},
		{name: "move is impossible on POP3", change: func(c *Config) { c.AfterImport = mailsource.AfterImportMove },
			want: []string{"AfterImport move is not possible"}},
		{name: "every problem is named at once", change: func(c *Config) {
			*c = Config{Port: 70000, Security: "ssl", MaxMailSize: -1, Timeout: -time.Second, BatchSize: -1,
				CACertPEM: []byte("junk"), AfterImport: "archive"}
		}, want: []string{"Host is required", "Port 70000", `Security "ssl"`, "CACertPEM", "Username is required",
			"Password or TokenSource", "MaxMailSize", `AfterImport "archive"`, "Timeout", "BatchSize"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tc.change(&cfg)
			err := cfg.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestPoll_MailBytes(t *testing.T) {
	t.Parallel()
	longLine := strings.Repeat("x", 100<<10)
	tests := []struct {
		name string
		raw  string
		want string // what the sink must get
	}{
		{name: "dot-stuffed lines are unstuffed",
			raw: "Subject: dots\r\n\r\n..hidden\r\n.\r\n...\r\nend\r\n", want: "Subject: dots\r\n\r\n..hidden\r\n.\r\n...\r\nend\r\n"},
		{name: "a 100 KB line arrives whole, without injected line breaks",
			raw: "Subject: long\r\n\r\n" + longLine + "\r\n", want: "Subject: long\r\n\r\n" + longLine + "\r\n"},
		{name: "CRLF line endings are kept",
			raw: "Subject: crlf\r\n\r\na\r\nb\r\n\r\n", want: "Subject: crlf\r\n\r\na\r\nb\r\n\r\n"},
		{name: "a bare LF comes out as CRLF",
			raw: "Subject: lf\r\n\r\na\nb\r\n", want: "Subject: lf\r\n\r\na\r\nb\r\n"},
		{name: "a lone CR inside a line is kept",
			raw: "Subject: cr\r\n\r\na\rb\r\n", want: "Subject: cr\r\n\r\na\rb\r\n"},
		{name: "a last line without CRLF gets one",
			raw: "Subject: end\r\n\r\nno newline", want: "Subject: end\r\n\r\nno newline\r\n"},
	}
	for _, pipelining := range []bool{true, false} {
		for _, tc := range tests {
			name := tc.name
			if !pipelining {
				name += " (no PIPELINING)"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				j := &journal{}
				srv := newFakeServer(t, j)
				if !pipelining {
					srv.caps = []string{"USER", "UIDL"}
				}
				// Note the fake stores the mail as given; the wire form is
				// produced by textproto's DotWriter (dot-stuffing).
				srv.add(fakeMail{uidl: "u1", raw: []byte(tc.raw)}, fakeMail{uidl: "u2", raw: mail("2", "second\r\n")})
				srv.start()
				sink := newFakeSink(j)

				res, err := fetcherFor(t, srv, nil).Poll(t.Context(), sink)
				if err != nil {
					t.Fatalf("Poll() error = %v", err)
				}
				if diff := cmp.Diff(mailsource.PollResult{Fetched: 2, Deleted: 2}, res); diff != "" {
					t.Errorf("Poll() result (-want +got):\n%s", diff)
				}
				if got := string(sink.bodies["pop3/u1"]); got != tc.want {
					t.Errorf("mail bytes = %q…, want %q…", clip(got), clip(tc.want))
					if len(got) != len(tc.want) {
						t.Errorf("mail length = %d, want %d", len(got), len(tc.want))
					}
				}
				if got := srv.uidls(); len(got) != 0 {
					t.Errorf("server still holds %v after delete", got)
				}
			})
		}
	}
}

func TestPoll_WireDotStuffing(t *testing.T) {
	t.Parallel()
	// Independent of DotWriter: the exact wire bytes of a stuffed message.
	j := &journal{}
	srv := newFakeServer(t, j)
	srv.add(fakeMail{uidl: "u1", raw: []byte("Subject: x\r\n\r\n.hidden\r\n")})
	srv.start()
	var wire bytes.Buffer
	c, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("USER alice\r\nPASS secret\r\nRETR 1\r\nQUIT\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = wire.ReadFrom(c)
	if !strings.Contains(wire.String(), "\r\n..hidden\r\n.\r\n") {
		t.Fatalf("fake server wire = %q, want a dot-stuffed line", wire.String())
	}
}

func TestPoll_Security(t *testing.T) {
	t.Parallel()
	cert, certPEM := selfSigned(t)
	tests := []struct {
		name     string
		security mailsource.Security
		change   func(*Config)
		wantErr  bool
	}{
		{name: "STLS with an unknown self-signed certificate fails", security: mailsource.SecurityStartTLS, wantErr: true},
		{name: "STLS passes with skip-verify", security: mailsource.SecurityStartTLS,
			change: func(c *Config) { c.TLSSkipVerify = true }},
		{name: "STLS passes with the CA given", security: mailsource.SecurityStartTLS,
			change: func(c *Config) { c.CACertPEM = certPEM }},
		{name: "STLS with the CA but a wrong server name fails", security: mailsource.SecurityStartTLS,
			change: func(c *Config) { c.CACertPEM = certPEM; c.TLSServerName = "other.example.test" }, wantErr: true},
		{name: "STLS verifies the alternative server name", security: mailsource.SecurityStartTLS,
			change: func(c *Config) { c.CACertPEM = certPEM; c.TLSServerName = "pop.example.test" }},
		{name: "implicit TLS with an unknown certificate fails", security: mailsource.SecurityTLS, wantErr: true},
		{name: "implicit TLS passes with skip-verify", security: mailsource.SecurityTLS,
			change: func(c *Config) { c.TLSSkipVerify = true }},
		{name: "implicit TLS passes with the CA given", security: mailsource.SecurityTLS,
			change: func(c *Config) { c.CACertPEM = certPEM }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := &journal{}
			srv := newFakeServer(t, j)
			serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
			if tc.security == mailsource.SecurityTLS {
				srv.implicit = serverTLS
			} else {
				srv.starttls = serverTLS
			}
			srv.add(fakeMail{uidl: "u1", raw: mail("1", "hello\r\n")})
			srv.start()
			f := fetcherFor(t, srv, func(c *Config) {
				c.Security = tc.security
				if tc.change != nil {
					tc.change(c)
				}
			})
			sink := newFakeSink(j)
			res, err := f.Poll(t.Context(), sink)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Poll() = %+v, nil; want a certificate error", res)
				}
				if slices.ContainsFunc(j.all(), func(e string) bool { return strings.HasPrefix(e, "server USER") }) {
					t.Errorf("credentials were sent over an unverified connection: %q", j.all())
				}
				return
			}
			if err != nil {
				t.Fatalf("Poll() error = %v", err)
			}
			if res.Fetched != 1 {
				t.Errorf("Poll() fetched %d, want 1", res.Fetched)
			}
		})
	}
}

func TestPoll_StartTLSRefusedNeverFallsBack(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j) // offers no STLS
	srv.start()
	err := fetcherFor(t, srv, func(c *Config) { c.Security = mailsource.SecurityStartTLS }).Check(t.Context())
	if got := mailsource.ServerReply(err); got != "no STLS here" {
		t.Fatalf("Check() = %v, want the server's STLS refusal", err)
	}
	for _, e := range j.all() {
		if strings.HasPrefix(e, "server USER") || strings.HasPrefix(e, "server AUTH") {
			t.Errorf("logged in over plain text after STLS failed: %q", j.all())
		}
	}
}

func TestCheck_Login(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		server    func(*fakeServer)
		change    func(*Config)
		wantReply string // "" means success
		wantSent  string // a journal entry prefix that must appear
		neverSent string // a journal entry prefix that must not appear
	}{
		{name: "AUTH PLAIN carries a UTF-8 password",
			server:   func(s *fakeServer) { s.pass = "pässwörd✓" },
			change:   func(c *Config) { c.Password = "pässwörd✓"; c.PreventPlainLogin = true },
			wantSent: "server AUTH PLAIN ", neverSent: "server USER"},
		{name: "AUTH PLAIN is used when offered",
			wantSent: "server AUTH PLAIN ", neverSent: "server USER"},
		{name: "a long AUTH PLAIN response goes after the continuation",
			server:   func(s *fakeServer) { s.pass = strings.Repeat("p", 300) },
			change:   func(c *Config) { c.Password = strings.Repeat("p", 300) },
			wantSent: "server AUTH PLAIN", neverSent: "server USER"},
		{name: "prevent plain login uses CRAM-MD5 without TLS when offered",
			server:   func(s *fakeServer) { s.caps = []string{"USER", "SASL PLAIN CRAM-MD5"} },
			change:   func(c *Config) { c.PreventPlainLogin = true },
			wantSent: "server AUTH CRAM-MD5", neverSent: "server AUTH PLAIN"},
		{name: "a wrong password under CRAM-MD5 shows the server's words",
			server:    func(s *fakeServer) { s.caps = []string{"SASL CRAM-MD5"} },
			change:    func(c *Config) { c.PreventPlainLogin = true; c.Password = "wrong" },
			wantReply: "[AUTH] Authentication failed.", neverSent: "server USER"},
		{name: "without prevent plain login CRAM-MD5 is not needed",
			server:   func(s *fakeServer) { s.caps = []string{"USER", "SASL PLAIN CRAM-MD5"} },
			wantSent: "server AUTH PLAIN", neverSent: "server AUTH CRAM-MD5"},
		{name: "USER/PASS when the server offers no SASL",
			server:   func(s *fakeServer) { s.caps = []string{"USER", "UIDL"} },
			wantSent: "server USER alice"},
		{name: "USER/PASS when the server has no CAPA",
			server:   func(s *fakeServer) { s.noCapa = true },
			wantSent: "server USER alice"},
		{name: "prevent plain login never sends USER/PASS, even when AUTH is missing",
			server:    func(s *fakeServer) { s.caps = []string{"USER", "UIDL"}; s.noAuth = true },
			change:    func(c *Config) { c.PreventPlainLogin = true },
			wantReply: "AUTH not supported", neverSent: "server USER"},
		{name: "a wrong password shows the server's exact words",
			server:    func(s *fakeServer) { s.caps = []string{"USER"} },
			change:    func(c *Config) { c.Password = "wrong" },
			wantReply: "[AUTH] Invalid login, try again"},
		{name: "XOAUTH2 sends the token after the continuation",
			server: func(s *fakeServer) { s.token = "tok-123" },
			change: func(c *Config) {
				c.Password = ""
				c.TokenSource = func(context.Context) (string, error) { return "tok-123", nil }
			},
			wantSent: "server AUTH XOAUTH2", neverSent: "server USER"},
		{name: "a refused XOAUTH2 token shows the final -ERR",
			server: func(s *fakeServer) { s.token = "tok-123" },
			change: func(c *Config) {
				c.TokenSource = func(context.Context) (string, error) { return "expired", nil }
			},
			wantReply: "Authentication failure: unknown user name or bad password."},
		{name: "an -ERR on STAT is reported",
			server:    func(s *fakeServer) { s.errOn = errOnPrefix("STAT", "[IN-USE] Mailbox is locked") },
			wantReply: "[IN-USE] Mailbox is locked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := &journal{}
			srv := newFakeServer(t, j)
			if tc.server != nil {
				tc.server(srv)
			}
			srv.start()
			err := fetcherFor(t, srv, tc.change).Check(t.Context())
			switch {
			case tc.wantReply == "" && err != nil:
				t.Fatalf("Check() = %v, want nil", err)
			case tc.wantReply != "":
				var se *mailsource.ServerError
				if !errors.As(err, &se) || se.Reply != tc.wantReply {
					t.Fatalf("Check() = %v, want a ServerError with reply %q", err, tc.wantReply)
				}
				if !errors.Is(err, ErrRefused) {
					t.Errorf("Check() = %v, want errors.Is ErrRefused", err)
				}
			}
			entries := j.all()
			if tc.wantSent != "" && !slices.ContainsFunc(entries, prefixed(tc.wantSent)) {
				t.Errorf("sent %q, want a line starting %q", entries, tc.wantSent)
			}
			if tc.neverSent != "" && slices.ContainsFunc(entries, prefixed(tc.neverSent)) {
				t.Errorf("sent %q, want no line starting %q", entries, tc.neverSent)
			}
			if slices.ContainsFunc(entries, prefixed("server RETR")) {
				t.Errorf("Check downloaded mail: %q", entries)
			}
		})
	}
}

func prefixed(p string) func(string) bool {
	return func(s string) bool { return strings.HasPrefix(s, p) }
}

// errOnPrefix refuses every command line starting with prefix.
func errOnPrefix(prefix, text string) func(string) (string, bool) {
	return func(line string) (string, bool) { return text, strings.HasPrefix(line, prefix) }
}

// deletedAfterCommit checks that each "dele X" follows a commit of pop3/X.
func deletedAfterCommit(tb testing.TB, entries []string) {
	tb.Helper()
	committed := map[string]bool{}
	for _, e := range entries {
		if keys, ok := strings.CutPrefix(e, "commit "); ok {
			for _, k := range strings.Fields(keys) {
				committed[k] = true
			}
		}
		if uidl, ok := strings.CutPrefix(e, "dele "); ok && !committed["pop3/"+uidl] {
			tb.Errorf("DELE of %s before its commit; journal %q", uidl, entries)
		}
	}
}

func countPrefix(entries []string, p string) int {
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e, p) {
			n++
		}
	}
	return n
}

func fiveMails(srv *fakeServer) {
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		srv.add(fakeMail{uidl: id, raw: mail(id, "body of "+id+"\r\n")})
	}
}

func TestPoll_DeleteOnlyAfterCommit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		failCommit  int
		wantRes     mailsource.PollResult
		wantErr     bool
		wantOnSrv   []string
		wantSecond  mailsource.PollResult
		wantCommits int // commits of the first poll that reached the sink
	}{
		{name: "batches of two are committed, then all five deleted",
			wantRes: mailsource.PollResult{Fetched: 5, Deleted: 5}, wantCommits: 3},
		{name: "a failed first commit deletes nothing and the next poll gets all once",
			failCommit: 1, wantErr: true, wantOnSrv: []string{"a", "b", "c", "d", "e"},
			wantSecond: mailsource.PollResult{Fetched: 5, Deleted: 5}, wantCommits: 1},
		{name: "a failed second commit deletes only the first batch",
			failCommit: 2, wantErr: true, wantRes: mailsource.PollResult{Fetched: 2, Deleted: 2},
			wantOnSrv: []string{"c", "d", "e"}, wantSecond: mailsource.PollResult{Fetched: 3, Deleted: 3}, wantCommits: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := &journal{}
			srv := newFakeServer(t, j)
			fiveMails(srv)
			srv.start()
			sink := newFakeSink(j)
			sink.failCommit = tc.failCommit
			f := fetcherFor(t, srv, func(c *Config) { c.BatchSize = 2 })

			res, err := f.Poll(t.Context(), sink)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Poll() error = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantRes, res); diff != "" {
				t.Errorf("Poll() result (-want +got):\n%s", diff)
			}
			if sink.commits != tc.wantCommits {
				t.Errorf("commits = %d, want %d", sink.commits, tc.wantCommits)
			}
			if diff := cmp.Diff(tc.wantOnSrv, srv.uidls()); diff != "" {
				t.Errorf("left on server (-want +got):\n%s", diff)
			}
			deletedAfterCommit(t, j.all())

			res, err = f.Poll(t.Context(), sink)
			if err != nil {
				t.Fatalf("second Poll() error = %v", err)
			}
			if diff := cmp.Diff(tc.wantSecond, res); diff != "" {
				t.Errorf("second Poll() result (-want +got):\n%s", diff)
			}
			if got := srv.uidls(); len(got) != 0 {
				t.Errorf("server still holds %v", got)
			}
			// The fake sink refuses a second commit of a key, so "committed
			// once" is checked by the nil errors above; mails of a failed
			// batch are downloaded again, the others once.
			if got := len(sink.committed); got != 5 {
				t.Errorf("committed %d mails, want 5", got)
			}
			if tc.failCommit == 0 {
				for k, n := range sink.receives {
					if n != 1 {
						t.Errorf("%s received %d times, want once", k, n)
					}
				}
			}
			deletedAfterCommit(t, j.all())
		})
	}
}

func TestPoll_FailedMailStaysAndIsNotFetchedAgain(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	srv.add(fakeMail{uidl: "bad", raw: []byte("X-Unparseable: yes\r\n\r\n")}, fakeMail{uidl: "ok", raw: mail("ok", "fine\r\n")})
	srv.start()
	sink := newFakeSink(j)
	f := fetcherFor(t, srv, nil)

	res, err := f.Poll(t.Context(), sink)
	if err != nil {
		t.Fatalf("Poll() error = %v", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 1, Failed: 1, Deleted: 1}, res); diff != "" {
		t.Errorf("Poll() result (-want +got):\n%s", diff)
	}
	res, err = f.Poll(t.Context(), sink)
	if err != nil {
		t.Fatalf("second Poll() error = %v", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{}, res); diff != "" {
		t.Errorf("second Poll() result (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"bad"}, srv.uidls()); diff != "" {
		t.Errorf("left on server (-want +got):\n%s", diff)
	}
	if got := srv.retrCount("bad"); got != 1 {
		t.Errorf("failed mail downloaded %d times, want 1", got)
	}
}

func TestPoll_OversizeIsNotDownloaded(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	srv.add(fakeMail{uidl: "big", raw: mail("big", strings.Repeat("y", 5000)+"\r\n")},
		fakeMail{uidl: "small", raw: mail("small", "s\r\n")})
	srv.start()
	sink := newFakeSink(j)
	f := fetcherFor(t, srv, func(c *Config) { c.MaxMailSize = 1000 })

	res, err := f.Poll(t.Context(), sink)
	if err != nil {
		t.Fatalf("Poll() error = %v", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 1, Oversize: 1, Deleted: 1}, res); diff != "" {
		t.Errorf("Poll() result (-want +got):\n%s", diff)
	}
	if got := srv.retrCount("big"); got != 0 {
		t.Errorf("oversize mail downloaded %d times, want 0", got)
	}
	if got := sink.committed["pop3/big"]; got != mailsource.StatusFailed {
		t.Errorf("oversize mail status = %v, want failed", got)
	}
	res, err = f.Poll(t.Context(), sink)
	if err != nil || res != (mailsource.PollResult{}) {
		t.Errorf("second Poll() = %+v, %v; want nothing done", res, err)
	}
	if diff := cmp.Diff([]string{"big"}, srv.uidls()); diff != "" {
		t.Errorf("left on server (-want +got):\n%s", diff)
	}
}

func TestPoll_ConnectionDropMidDownload(t *testing.T) {
	t.Parallel()
	for _, pipelining := range []bool{true, false} {
		t.Run(map[bool]string{true: "pipelined", false: "one at a time"}[pipelining], func(t *testing.T) {
			t.Parallel()
			j := &journal{}
			srv := newFakeServer(t, j)
			if !pipelining {
				srv.caps = []string{"USER", "UIDL"}
			}
			fiveMails(srv)
			srv.dropRETR["c"] = 40 // mid-header of mail c
			srv.start()
			sink := newFakeSink(j)
			f := fetcherFor(t, srv, nil)

			res, err := f.Poll(t.Context(), sink)
			if err == nil {
				t.Fatalf("Poll() = %+v, nil; want the broken download reported", res)
			}
			if diff := cmp.Diff(mailsource.PollResult{Fetched: 2}, res); diff != "" {
				t.Errorf("Poll() result (-want +got):\n%s", diff)
			}
			if _, ok := sink.committed["pop3/c"]; ok {
				t.Errorf("the broken mail was committed")
			}
			if got := len(srv.uidls()); got != 5 {
				t.Errorf("server holds %d mails, want all 5 (no QUIT, no delete)", got)
			}

			res, err = f.Poll(t.Context(), sink)
			if err != nil {
				t.Fatalf("second Poll() error = %v", err)
			}
			if diff := cmp.Diff(mailsource.PollResult{Fetched: 3, Skipped: 2, Deleted: 5}, res); diff != "" {
				t.Errorf("second Poll() result (-want +got):\n%s", diff)
			}
			if got := sink.bodies["pop3/c"]; !bytes.Equal(got, mail("c", "body of c\r\n")) {
				t.Errorf("mail c = %q, want it whole", got)
			}
			// Mail a is downloaded once more to prove it is the committed
			// one before its DELE, but handed to the sink only once.
			if got := sink.receives["pop3/a"]; got != 1 {
				t.Errorf("committed mail a received %d times, want 1", got)
			}
			if got := srv.retrCount("a"); got != 2 {
				t.Errorf("committed mail a downloaded %d times, want 2 (import, then proof)", got)
			}
			deletedAfterCommit(t, j.all())
		})
	}
}

func TestPoll_ServerRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		errOn     func(string) (string, bool)
		wantReply string
		wantRes   mailsource.PollResult
		wantOnSrv []string
	}{
		{name: "a refused RETR leaves that mail for later and fetches the rest",
			errOn: errOnPrefix("RETR 2", "message is being delivered"), wantReply: "message is being delivered",
			wantRes: mailsource.PollResult{Fetched: 4, Deleted: 4}, wantOnSrv: []string{"b"}},
		{name: "a refused DELE leaves that mail; the rest is deleted",
			errOn: errOnPrefix("DELE 3", "cannot delete"), wantReply: "cannot delete",
			wantRes: mailsource.PollResult{Fetched: 5, Deleted: 4}, wantOnSrv: []string{"c"}},
		{name: "a failed QUIT deletes nothing",
			errOn: errOnPrefix("QUIT", "[SYS/TEMP] could not expunge"), wantReply: "[SYS/TEMP] could not expunge",
			wantRes: mailsource.PollResult{Fetched: 5}, wantOnSrv: []string{"a", "b", "c", "d", "e"}},
		{name: "a refused UIDL stops the poll before anything is fetched",
			errOn: errOnPrefix("UIDL", "UIDL not supported"), wantReply: "UIDL not supported",
			wantOnSrv: []string{"a", "b", "c", "d", "e"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := &journal{}
			srv := newFakeServer(t, j)
			fiveMails(srv)
			srv.errOn = tc.errOn
			srv.start()
			sink := newFakeSink(j)
			res, err := fetcherFor(t, srv, nil).Poll(t.Context(), sink)
			if got := mailsource.ServerReply(err); got != tc.wantReply {
				t.Errorf("Poll() error = %v, want the server's reply %q", err, tc.wantReply)
			}
			if diff := cmp.Diff(tc.wantRes, res); diff != "" {
				t.Errorf("Poll() result (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantOnSrv, srv.uidls()); diff != "" {
				t.Errorf("left on server (-want +got):\n%s", diff)
			}
			if got := countPrefix(j.all(), "server QUIT"); got != 1 {
				t.Errorf("sent QUIT %d times, want once (the session was healthy)", got)
			}
		})
	}
}

func TestPoll_SinkFailureStopsButKeepsEarlierMails(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	fiveMails(srv)
	srv.start()
	sink := newFakeSink(j)
	sink.failKey = "pop3/c"
	f := fetcherFor(t, srv, nil)
	res, err := f.Poll(t.Context(), sink)
	if err == nil || !strings.Contains(err.Error(), "blob store down") {
		t.Fatalf("Poll() error = %v, want the sink's error", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 2, Deleted: 2}, res); diff != "" {
		t.Errorf("Poll() result (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"c", "d", "e"}, srv.uidls()); diff != "" {
		t.Errorf("left on server (-want +got):\n%s", diff)
	}
	deletedAfterCommit(t, j.all())
	if got := countPrefix(j.all(), "server RETR"); got < 3 {
		t.Errorf("RETRs sent = %d, want at least 3", got)
	}
}

func TestPoll_KeepLeavesMailsAndFetchesThemOnce(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	fiveMails(srv)
	srv.start()
	sink := newFakeSink(j)
	f := fetcherFor(t, srv, func(c *Config) { c.AfterImport = mailsource.AfterImportKeep })
	for i, want := range []mailsource.PollResult{{Fetched: 5}, {}} {
		res, err := f.Poll(t.Context(), sink)
		if err != nil {
			t.Fatalf("Poll() #%d error = %v", i+1, err)
		}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("Poll() #%d result (-want +got):\n%s", i+1, diff)
		}
	}
	if got := countPrefix(j.all(), "server DELE"); got != 0 {
		t.Errorf("sent %d DELEs with keep, want 0", got)
	}
	if got := len(srv.uidls()); got != 5 {
		t.Errorf("server holds %d mails, want 5", got)
	}
}

func TestPoll_SlowServerTimesOut(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	srv.delay = 300 * time.Millisecond
	srv.start()
	err := fetcherFor(t, srv, func(c *Config) { c.Timeout = 30 * time.Millisecond }).Check(t.Context())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Check() = %v, want a timeout", err)
	}
}

func TestPoll_CancelledContext(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	srv.delay = 200 * time.Millisecond
	fiveMails(srv)
	srv.start()
	ctx, cancel := context.WithCancel(t.Context())
	sink := newFakeSink(j)
	done := make(chan error, 1)
	go func() {
		_, err := fetcherFor(t, srv, nil).Poll(ctx, sink)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Poll() = %v, want context.Canceled", err)
	}
}

func TestPoll_StartTLSInjectedReplyIsRefused(t *testing.T) {
	t.Parallel()
	cert, _ := selfSigned(t)
	j := &journal{}
	srv := newFakeServer(t, j)
	srv.starttls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.stlsInject = "\r\n+OK injected"
	srv.start()
	err := fetcherFor(t, srv, func(c *Config) {
		c.Security, c.TLSSkipVerify = mailsource.SecurityStartTLS, true
	}).Check(t.Context())
	// One write carries both lines, so the client sees the injected one
	// buffered (ErrProtocol); were it split, the handshake would fail on it.
	if err == nil {
		t.Fatal("Check() = nil, want the injected reply refused")
	}
	if slices.ContainsFunc(j.all(), prefixed("server USER")) || slices.ContainsFunc(j.all(), prefixed("server AUTH")) {
		t.Errorf("logged in after an injected STLS reply: %q", j.all())
	}
}

// lyingSink stages a mail even when reading it failed, breaking the Sink
// contract; the fetcher must then not commit the open batch.
type lyingSink struct{ *fakeSink }

func (s lyingSink) Receive(_ context.Context, key string, _ int64, r io.Reader) (mailsource.Outcome, error) {
	s.receives[key]++
	raw, _ := io.ReadAll(r)
	s.staged = append(s.staged, stagedMail{key: key, status: mailsource.StatusFailed, raw: raw})
	return mailsource.Outcome{Status: mailsource.StatusFailed}, nil
}

func TestPoll_SinkThatIgnoresABrokenDownloadCommitsNothingOfThatBatch(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	fiveMails(srv)
	srv.dropRETR["d"] = 10
	srv.start()
	sink := newFakeSink(j)
	f := fetcherFor(t, srv, func(c *Config) { c.BatchSize = 2 })

	res, err := f.Poll(t.Context(), lyingSink{sink})
	if err == nil {
		t.Fatal("Poll() error = nil, want the broken download")
	}
	// a and b were committed as batch one; c and the broken d are dropped.
	if diff := cmp.Diff(mailsource.PollResult{Failed: 2}, res); diff != "" {
		t.Errorf("Poll() result (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"pop3/a", "pop3/b"}, slices.Sorted(maps.Keys(sink.committed))); diff != "" {
		t.Errorf("committed (-want +got):\n%s", diff)
	}
}

// A server that gives a new mail the UIDL of one imported and deleted
// before (a counter that restarted) must not get the new mail deleted
// unread: it is imported under a key of its own, then deleted.
func TestPoll_ReusedUIDLIsImportedNotDeletedUnread(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	srv.add(fakeMail{uidl: "1", raw: mail("first", "the first mail\r\n")})
	srv.start()
	sink := newFakeSink(j)
	f := fetcherFor(t, srv, nil)
	if res, err := f.Poll(t.Context(), sink); err != nil || res.Fetched != 1 || res.Deleted != 1 {
		t.Fatalf("first Poll() = %+v, %v; want the first mail fetched and deleted", res, err)
	}

	// when: the server hands out UIDL 1 again, to another mail
	second := mail("second", "the second mail\r\n")
	srv.add(fakeMail{uidl: "1", raw: second})
	res, err := f.Poll(t.Context(), sink)

	if err != nil {
		t.Fatalf("second Poll() error = %v", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 1, Deleted: 1}, res); diff != "" {
		t.Errorf("second Poll() (-want +got):\n%s", diff)
	}
	var got []string
	for _, body := range sink.bodies {
		got = append(got, string(body))
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{string(mail("first", "the first mail\r\n")), string(second)}, got); diff != "" {
		t.Errorf("committed mails (-want +got):\n%s", diff)
	}
	if left := srv.uidls(); len(left) != 0 {
		t.Errorf("server still holds %v", left)
	}
	// A third poll finds nothing to do.
	if res, err := f.Poll(t.Context(), sink); err != nil || res != (mailsource.PollResult{}) {
		t.Errorf("third Poll() = %+v, %v; want nothing done", res, err)
	}
}

// A mail committed by an earlier poll but not deleted (the DELE or QUIT
// failed, the process died) is deleted by the next poll only once its
// content is proven to be the committed one; it is not imported again.
func TestPoll_KnownMailIsDeletedOnlyWhenProvenCommitted(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	fiveMails(srv)
	failQuit := true
	srv.errOn = func(line string) (string, bool) {
		if line == "QUIT" && failQuit {
			failQuit = false
			return "[SYS/TEMP] could not expunge", true
		}
		return "", false
	}
	srv.start()
	sink := newFakeSink(j)
	f := fetcherFor(t, srv, nil)
	if res, _ := f.Poll(t.Context(), sink); res.Fetched != 5 || res.Deleted != 0 {
		t.Fatalf("first Poll() = %+v, want 5 fetched and none deleted", res)
	}

	res, err := f.Poll(t.Context(), sink)

	if err != nil {
		t.Fatalf("second Poll() error = %v", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{Skipped: 5, Deleted: 5}, res); diff != "" {
		t.Errorf("second Poll() (-want +got):\n%s", diff)
	}
	for k, n := range sink.receives {
		if n != 1 {
			t.Errorf("%s handed to the sink %d times, want once", k, n)
		}
	}
	if left := srv.uidls(); len(left) != 0 {
		t.Errorf("server still holds %v", left)
	}
}

// Without a way to prove what was committed under a key (a sink that
// cannot say), a mail found committed is left on the server.
func TestPoll_KnownMailWithoutProofIsNotDeleted(t *testing.T) {
	t.Parallel()
	j := &journal{}
	srv := newFakeServer(t, j)
	srv.add(fakeMail{uidl: "x", raw: mail("x", "a mail\r\n")})
	srv.start()
	sink := newFakeSink(j)
	sink.committed["pop3/x"] = mailsource.StatusReceived // no bytes recorded
	res, err := fetcherFor(t, srv, nil).Poll(t.Context(), sink)
	if err != nil {
		t.Fatalf("Poll() error = %v", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	if got := countPrefix(j.all(), "server DELE"); got != 0 {
		t.Errorf("sent %d DELEs, want none", got)
	}
}

// Without TLS no password and no token crosses the wire unless the account
// allows it; CRAM-MD5, which sends only a digest, is used when offered.
func TestCheck_LoginWithoutTLS(t *testing.T) {
	t.Parallel()
	token := func(context.Context) (string, error) { return "tok-123", nil }
	tests := []struct {
		name     string
		server   func(*fakeServer)
		change   func(*Config)
		wantSent string // "" when the login must be refused before AUTH, USER or PASS
	}{
		{name: "USER/PASS is refused", server: func(s *fakeServer) { s.caps = []string{"USER", "UIDL"} }},
		{name: "AUTH PLAIN is refused"},
		{name: "prevent_plain_login's AUTH PLAIN is refused", change: func(c *Config) { c.PreventPlainLogin = true }},
		{name: "XOAUTH2 is refused", server: func(s *fakeServer) { s.token = "tok-123" },
			change: func(c *Config) { c.Password, c.TokenSource = "", token }},
		{name: "CRAM-MD5 is used when offered", server: func(s *fakeServer) { s.caps = []string{"USER", "SASL PLAIN CRAM-MD5"} },
			wantSent: "server AUTH CRAM-MD5"},
		{name: "allow_plaintext_auth allows AUTH PLAIN", change: func(c *Config) { c.AllowPlaintextAuth = true },
			wantSent: "server AUTH PLAIN"},
		{name: "allow_plaintext_auth allows XOAUTH2", server: func(s *fakeServer) { s.token = "tok-123" },
			change: func(c *Config) { c.AllowPlaintextAuth, c.Password, c.TokenSource = true, "", token }, wantSent: "server AUTH XOAUTH2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := &journal{}
			srv := newFakeServer(t, j)
			if tc.server != nil {
				tc.server(srv)
			}
			srv.start()
			err := fetcherFor(t, srv, func(c *Config) {
				c.AllowPlaintextAuth = false
				if tc.change != nil {
					tc.change(c)
				}
			}).Check(t.Context())
			entries := j.all()
			if tc.wantSent == "" {
				if !errors.Is(err, mailsource.ErrPlaintextAuth) {
					t.Fatalf("Check() = %v, want ErrPlaintextAuth", err)
				}
				for _, p := range []string{"server AUTH", "server USER", "server PASS"} {
					if slices.ContainsFunc(entries, prefixed(p)) {
						t.Errorf("sent %q without TLS: %q", p, entries)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Check() = %v, want nil", err)
			}
			if !slices.ContainsFunc(entries, prefixed(tc.wantSent)) {
				t.Errorf("sent %q, want a line starting %q", entries, tc.wantSent)
			}
		})
	}
}
