package pop3source

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

const benchMails = 10000

// benchMail is a mail of about 4 KB.
func benchMail(i int) []byte {
	line := strings.Repeat("lorem ipsum dolor sit amet ", 3) + "\r\n"
	return []byte(fmt.Sprintf("From: a@example.com\r\nTo: help@example.com\r\nSubject: bench %d\r\n"+
		"Message-ID: <bench%d@example.com>\r\n\r\n%s", i, i, strings.Repeat(line, 50)))
}

// benchServer is where the benchmarks fetch from: a private Dovecot when
// it is installed (and not -short), the fake otherwise. deliver refills the
// maildrop with benchMails mails.
type benchServer struct {
	addr    string
	kind    string
	deliver func(tb testing.TB)
}

func dovecotInstalled() bool {
	if testing.Short() {
		return false
	}
	if _, err := exec.LookPath("dovecot"); err == nil {
		return true
	}
	_, err := os.Stat("/usr/sbin/dovecot")
	return err == nil
}

func newBenchServer(b *testing.B) benchServer {
	b.Helper()
	raws := make([][]byte, benchMails)
	for i := range raws {
		raws[i] = benchMail(i)
	}
	if dovecotInstalled() {
		dv := dovecottest.Start(b)
		dv.AddUser(b, "bench", "pw")
		return benchServer{addr: dv.POP3Addr, kind: "dovecot", deliver: func(tb testing.TB) {
			if n := dv.Count(tb, "bench"); n != 0 {
				tb.Fatalf("maildrop holds %d mails before delivery, want 0", n)
			}
			dv.DeliverMany(tb, "bench", raws)
		}}
	}
	srv := newFakeServer(b, &journal{})
	srv.user, srv.pass = "bench", "pw"
	srv.start()
	return benchServer{addr: srv.addr, kind: "fake", deliver: func(testing.TB) {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		srv.mails = srv.mails[:0]
		for i, raw := range raws {
			srv.mails = append(srv.mails, fakeMail{uidl: fmt.Sprintf("b%d", i), raw: raw})
		}
	}}
}

// countingSink does no work beyond reading each mail once.
type countingSink struct {
	known  map[string]mailsource.Status
	staged []string
	octets int64
}

func (s *countingSink) Known(_ context.Context, keys []string) (map[string]mailsource.Status, error) {
	out := map[string]mailsource.Status{}
	for _, k := range keys {
		if st, ok := s.known[k]; ok {
			out[k] = st
		}
	}
	return out, nil
}

func (s *countingSink) Receive(_ context.Context, key string, _ int64, r io.Reader) (mailsource.Outcome, error) {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return mailsource.Outcome{}, err
	}
	s.octets += n
	s.staged = append(s.staged, key)
	return mailsource.Outcome{Status: mailsource.StatusReceived}, nil
}

func (s *countingSink) Oversize(context.Context, string, int64) error { return nil }

func (s *countingSink) Commit(context.Context) error {
	for _, k := range s.staged {
		s.known[k] = mailsource.StatusReceived
	}
	s.staged = s.staged[:0]
	return nil
}

// BenchmarkPoll imports 10,000 mails of about 4 KB per iteration (UIDL,
// LIST, pipelined RETR into a sink that only reads, commits every 500,
// pipelined DELE, QUIT) and reports mails/s. Compare with BenchmarkBareRETR:
//
//	go test -run '^$' -bench 'Poll|BareRETR' -benchtime 3x ./adapters/pop3source
func BenchmarkPoll(b *testing.B) {
	srv := newBenchServer(b)
	h, p, _ := net.SplitHostPort(srv.addr)
	var port int
	_, _ = fmt.Sscan(p, &port)
	f, err := New(Config{Host: h, Port: port, Security: mailsource.SecurityNone, AllowPlaintextAuth: true, Username: "bench", Password: "pw",
		Timeout: time.Minute}, slog.New(slog.NewTextHandler(benchLog{b}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	var mails int
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		srv.deliver(b)
		sink := &countingSink{known: map[string]mailsource.Status{}}
		b.StartTimer()
		start := time.Now()
		res, err := f.Poll(b.Context(), sink)
		total += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if res.Fetched != benchMails || res.Deleted != benchMails {
			b.Fatalf("Poll() = %+v, want %d fetched and deleted", res, benchMails)
		}
		mails += res.Fetched
	}
	b.ReportMetric(float64(mails)/total.Seconds(), "mails/s")
	b.ReportMetric(0, "ns/op")
	b.Logf("server: %s", srv.kind)
}

// BenchmarkBareRETR is the ceiling for BenchmarkPoll: a plain textproto
// loop over a freshly delivered maildrop that logs in, asks STAT and RETRs
// every mail with 32 commands in flight, discarding the bodies; no UIDL,
// no sink. Only that is timed; the DELEs that empty the maildrop for the
// next round are not.
func BenchmarkBareRETR(b *testing.B) {
	srv := newBenchServer(b)
	var total time.Duration
	var mails int
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		srv.deliver(b)
		b.StartTimer()
		n, took := bareRETR(b, srv.addr)
		mails += n
		total += took
	}
	b.ReportMetric(float64(mails)/total.Seconds(), "mails/s")
	b.ReportMetric(0, "ns/op")
	b.Logf("server: %s", srv.kind)
}

// bareRETR fetches every mail and returns how many and how long that took
// from connect to the last body; then it DELEs them all and QUITs.
func bareRETR(tb testing.TB, addr string) (int, time.Duration) {
	tb.Helper()
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Minute))
	r := textproto.NewReader(bufio.NewReaderSize(conn, 64<<10))
	w := bufio.NewWriter(conn)
	status := func() string {
		line, err := r.ReadLine()
		if err != nil || !strings.HasPrefix(line, "+OK") {
			tb.Fatalf("reply %q, %v", line, err)
		}
		return line
	}
	send := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\r\n", args...)
	}
	flush := func() {
		if err := w.Flush(); err != nil {
			tb.Fatal(err)
		}
	}
	status()
	send("USER bench")
	send("PASS pw")
	send("STAT")
	flush()
	status()
	status()
	var n int
	if _, err := fmt.Sscanf(status(), "+OK %d", &n); err != nil {
		tb.Fatal(err)
	}
	const window = 32
	sent := 0
	for i := 1; i <= n; i++ {
		if sent < n && sent-i+1 <= window/2 {
			for sent < n && sent-i+1 < window {
				sent++
				send("RETR %d", sent)
			}
			flush()
		}
		status()
		if _, err := io.Copy(io.Discard, r.DotReader()); err != nil {
			tb.Fatal(err)
		}
	}
	took := time.Since(start)
	for i := 1; i <= n; i++ {
		send("DELE %d", i)
	}
	send("QUIT")
	flush()
	for range n + 1 {
		status()
	}
	return n, took
}

// benchLog sends the fetcher's debug log (phase durations) to b.Log.
type benchLog struct{ b *testing.B }

func (l benchLog) Write(p []byte) (int, error) {
	l.b.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
