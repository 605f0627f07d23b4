package imapsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/faultproxy"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
)

// dovecotConfig returns a STARTTLS configuration for user on srv, trusting
// the server's own certificate.
func dovecotConfig(tb testing.TB, srv *dovecottest.Server, addr, user, password string) Config {
	tb.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		tb.Fatal(err)
	}
	return Config{
		Host: host, Port: p, Security: mailsource.SecurityStartTLS, CACertPEM: srv.CACertPEM,
		Username: user, Password: password, Timeout: 30 * time.Second,
	}
}

func TestDovecot_importsEachMailOnceAndEmptiesTheInbox(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	srv.AddUser(t, "bob", "pw-bob")
	srv.DeliverMany(t, "bob", testMails(45, "dovecot"))
	cfg := dovecotConfig(t, srv, srv.IMAPAddr, "bob", "pw-bob")
	cfg.BatchSize = 10
	f := mustNew(t, cfg)
	sink := newFakeSink()

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 45, Deleted: 45}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	if got := len(sink.received); got != 45 {
		t.Errorf("sink received %d mails, want 45", got)
	}
	bodies := map[string]bool{}
	for _, b := range sink.bodies {
		bodies[string(b)] = true
	}
	for _, raw := range testMails(45, "dovecot") {
		if !bodies[string(raw)] {
			t.Errorf("mail %q not received byte for byte", raw[:60])
		}
	}
	if got := srv.Count(t, "bob"); got != 0 {
		t.Errorf("INBOX holds %d after import, want 0", got)
	}
	if diff := cmp.Diff(mailsource.PollResult{}, mustPoll(t, f, sink)); diff != "" {
		t.Errorf("second Poll() (-want +got):\n%s", diff)
	}
}

func TestDovecot_moveAndErrorFolder(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	srv.AddUser(t, "carol", "pw-carol")
	srv.DeliverMany(t, "carol", [][]byte{
		testMail("fine 1"), testMail("GARBAGE 2"), testMail("fine 3"),
		testMail("huge " + strings.Repeat("y", 5000)), testMail("fine 5"),
	})
	cfg := dovecotConfig(t, srv, srv.IMAPSAddr, "carol", "pw-carol")
	cfg.Security = mailsource.SecurityTLS
	cfg.AfterImport = mailsource.AfterImportMove
	cfg.MoveFolder = "Processed"
	cfg.MaxMailSize = 2000
	f := mustNew(t, cfg)
	sink := newFakeSink()

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 3, Failed: 1, Oversize: 1, Deleted: 5}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	for folder, want := range map[string]int{"INBOX": 0, "Processed": 3, DefaultErrorFolder: 2} {
		if got := srv.FolderCount(t, "carol", folder); got != want {
			t.Errorf("%s holds %d, want %d", folder, got, want)
		}
	}
	if len(sink.oversize) != 1 || slices.Contains(sink.received, sink.oversize[0]) {
		t.Errorf("oversize %q, received %q: the big mail must be staged without download", sink.oversize, sink.received)
	}
}

func TestDovecot_preventPlainLoginWithUTF8Password(t *testing.T) {
	t.Parallel()
	const password = "Grüße-✓-密码"
	srv := dovecottest.Start(t)
	srv.AddUser(t, "dave", password)
	srv.Deliver(t, "dave", testMail("utf8 login"))
	cfg := dovecotConfig(t, srv, srv.IMAPAddr, "dave", password)
	cfg.PreventPlainLogin = true

	res := mustPoll(t, mustNew(t, cfg), newFakeSink())

	if res.Fetched != 1 {
		t.Errorf("Fetched = %d, want 1", res.Fetched)
	}

	cfg.Password = "wrong"
	err := mustNew(t, cfg).Check(context.Background())
	if mailsource.ServerReply(err) == "" {
		t.Errorf("Check() with a wrong password = %v, want Dovecot's reply", err)
	}
}

func TestDovecot_connectionCutMidMailLosesNothing(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	srv.AddUser(t, "erin", "pw-erin")
	mails := testMails(30, strings.Repeat("payload ", 2500))
	srv.DeliverMany(t, "erin", mails)
	proxy := faultproxy.Start(t, srv.IMAPAddr)
	cfg := dovecotConfig(t, srv, proxy.Addr(), "erin", "pw-erin")
	cfg.Security, cfg.AllowPlaintextAuth = mailsource.SecurityNone, true // loopback Dovecot
	cfg.BatchSize = 8
	f := mustNew(t, cfg)
	sink := newFakeSink()

	proxy.CutAfterBytes(300_000) // inside the second batch's literals
	first, err := f.Poll(context.Background(), sink)
	if err == nil {
		t.Fatalf("Poll() through a cut connection = %+v, nil; want an error", first)
	}
	if proxy.Cuts() == 0 {
		t.Fatalf("the proxy never cut the connection")
	}
	proxy.Reset()
	sink.endPoll()
	second := mustPoll(t, f, sink)

	if got := first.Fetched + second.Fetched; got != 30 {
		t.Errorf("fetched %d + %d, want 30 in total", first.Fetched, second.Fetched)
	}
	if got := len(sink.keys(mailsource.StatusReceived)); got != 30 {
		t.Errorf("committed %d, want 30 exactly once", got)
	}
	whole := map[string]bool{}
	for _, raw := range mails {
		whole[string(raw)] = true
	}
	for _, key := range sink.keys(mailsource.StatusReceived) {
		if !whole[string(sink.bodies[key])] {
			t.Errorf("%s committed with %d bytes that are no whole delivered mail", key, len(sink.bodies[key]))
		}
	}
	if got := srv.Count(t, "erin"); got != 0 {
		t.Errorf("INBOX holds %d, want 0", got)
	}
}

// benchMails is the benchmark's mailbox: 10,000 mails of about 4 KB.
func benchMails() [][]byte {
	body := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n", 68)
	out := make([][]byte, 10_000)
	for i := range out {
		out[i] = testMail(fmt.Sprintf("bench %d\r\n\r\n%s", i, body))
	}
	return out
}

// warmUp selects INBOX once so that Dovecot indexes newly delivered mail
// outside the measured time (an artefact of delivering into Maildir/new).
func warmUp(b testing.TB, cfg Config) {
	b.Helper()
	if err := mustNew(b, cfg).Check(context.Background()); err != nil {
		b.Fatalf("warm-up select: %v", err)
	}
}

// discardSink streams each mail to io.Discard and commits nothing but a
// counter: it measures the fetcher, not a database.
type discardSink struct{ staged, committed int }

func (s *discardSink) Known(context.Context, []string) (map[string]mailsource.Status, error) {
	return nil, nil
}

func (s *discardSink) Receive(_ context.Context, _ string, _ int64, r io.Reader) (mailsource.Outcome, error) {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return mailsource.Outcome{}, err
	}
	s.staged++
	return mailsource.Outcome{Status: mailsource.StatusReceived}, nil
}

func (s *discardSink) Oversize(context.Context, string, int64) error { return nil }

func (s *discardSink) Commit(context.Context) error {
	s.committed += s.staged
	s.staged = 0
	return nil
}

// BenchmarkPoll imports 10,000 mails of ~4 KB from Dovecot, committing
// every batch of 500 and deleting each committed batch by UID set.
// Compare its mails/s with BenchmarkBareUIDFetch.
func BenchmarkPoll(b *testing.B) {
	srv := dovecottest.Start(b)
	srv.AddUser(b, "bench", "pw-bench")
	cfg := dovecotConfig(b, srv, srv.IMAPAddr, "bench", "pw-bench")
	cfg.Security, cfg.AllowPlaintextAuth = mailsource.SecurityNone, true // loopback Dovecot
	mails := benchMails()
	f := mustNew(b, cfg)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		srv.DeliverMany(b, "bench", mails)
		warmUp(b, cfg)
		sink := &discardSink{}
		b.StartTimer()
		start := time.Now()
		res, err := f.Poll(context.Background(), sink)
		total += time.Since(start)
		b.StopTimer()
		if err != nil {
			b.Fatalf("Poll() error = %v", err)
		}
		if res.Fetched != len(mails) || res.Deleted != len(mails) || sink.committed != len(mails) {
			b.Fatalf("Poll() = %+v, committed %d; want all %d fetched and deleted", res, sink.committed, len(mails))
		}
		if n := srv.Count(b, "bench"); n != 0 {
			b.Fatalf("INBOX holds %d after Poll, want 0", n)
		}
	}
	b.ReportMetric(float64(b.N*len(mails))/total.Seconds(), "mails/s")
}

// BenchmarkBareUIDFetch is the baseline: go-imap alone lists the UIDs and
// downloads the same mails with UID FETCH BODY.PEEK[] in sets of 500 over
// one connection, to io.Discard, deleting nothing.
//
// Like BenchmarkPoll, every round reads freshly delivered mail (a new user
// each time, warmed up by one SELECT), so both see the same Dovecot state.
func BenchmarkBareUIDFetch(b *testing.B) {
	srv := dovecottest.Start(b)
	mails := benchMails()
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		user := fmt.Sprintf("bare%d", i)
		srv.AddUser(b, user, "pw-bench")
		srv.DeliverMany(b, user, mails)
		warmUp(b, dovecotConfig(b, srv, srv.IMAPAddr, user, "pw-bench"))
		b.StartTimer()
		start := time.Now()
		n := bareFetch(b, srv.IMAPAddr, user)
		total += time.Since(start)
		if n != len(mails) {
			b.Fatalf("fetched %d mails, want %d", n, len(mails))
		}
	}
	b.ReportMetric(float64(b.N*len(mails))/total.Seconds(), "mails/s")
}

func bareFetch(b *testing.B, addr, user string) int {
	b.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Login(user, "pw-bench").Wait(); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	sd, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for chunk := range slices.Chunk(sd.AllUIDs(), 500) {
		fc := c.Fetch(imap.UIDSetNum(chunk...), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
		var copyErr error
		for msg := fc.Next(); msg != nil; msg = fc.Next() {
			for item := msg.Next(); item != nil; item = msg.Next() {
				if body, ok := item.(imapclient.FetchItemDataBodySection); ok && body.Literal != nil {
					if _, err := io.Copy(io.Discard, body.Literal); err != nil && copyErr == nil {
						copyErr = err // keep draining: Close hangs on an unread literal
					}
					n++
				}
			}
		}
		if err := errors.Join(fc.Close(), copyErr); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		b.Fatal(err)
	}
	return n
}

// TestDovecot_bigMailIsStreamed downloads a 50 MB mail and checks that the
// fetcher allocated a small fraction of that: the bytes flow from the
// socket to the sink without being buffered whole. Not parallel, so that
// the allocation count is this test's alone.
func TestDovecot_bigMailIsStreamed(t *testing.T) {
	srv := dovecottest.Start(t)
	srv.AddUser(t, "frank", "pw-frank")
	const size = 50 << 20
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n" // 66 bytes
	raw := append(testMail("big"), strings.Repeat(line, size/len(line))...)
	srv.Deliver(t, "frank", raw)
	cfg := dovecotConfig(t, srv, srv.IMAPAddr, "frank", "pw-frank")
	cfg.MaxMailSize = 100 << 20
	f := mustNew(t, cfg)
	sink := &discardSink{}
	warmUp(t, cfg)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res := mustPoll(t, f, sink)
	runtime.ReadMemStats(&after)

	if res.Fetched != 1 || sink.committed != 1 {
		t.Fatalf("Poll() = %+v, committed %d; want the big mail", res, sink.committed)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d MB mail cost %.1f MB of allocations", len(raw)>>20, float64(allocated)/(1<<20))
	if allocated > uint64(len(raw))/5 {
		t.Errorf("Poll allocated %d bytes for a %d-byte mail, want under a fifth of it (streaming)", allocated, len(raw))
	}
}

// TestDovecot_XOAUTH2 logs in with tokens that Dovecot itself checks at a
// fake identity provider's introspection endpoint: a live token imports, a
// refused one fails with Dovecot's own NO (not the BAD that an empty
// response encoded as "=" would draw).
func TestDovecot_XOAUTH2(t *testing.T) {
	t.Parallel()
	idp := oauthtest.Start(t, oauthtest.Options{})
	srv := dovecottest.StartWith(t, dovecottest.Options{OAuth2IntrospectionURL: idp.URL + "/introspect"})
	srv.AddUser(t, "support", "unused-password")
	srv.DeliverMany(t, "support", testMails(3, "xoauth2"))

	cfg := dovecotConfig(t, srv, srv.IMAPAddr, "support", "")
	asked := 0
	cfg.TokenSource = func(context.Context) (string, error) {
		asked++
		return idp.AccessTokenFor("support"), nil
	}
	sink := newFakeSink()
	if res := mustPoll(t, mustNew(t, cfg), sink); res.Fetched != 3 || asked != 1 {
		t.Errorf("Poll() = %+v with %d token requests, want 3 fetched with 1", res, asked)
	}
	if !strings.Contains(srv.Log(), "method=XOAUTH2") {
		t.Errorf("Dovecot's log has no XOAUTH2 login:\n%s", srv.Log())
	}

	cfg.TokenSource = func(context.Context) (string, error) { return "not-a-live-token", nil }
	err := mustNew(t, cfg).Check(context.Background())
	if reply := mailsource.ServerReply(err); !strings.HasPrefix(reply, "NO") || !strings.Contains(reply, "AUTHENTICATIONFAILED") {
		t.Errorf("Check() with a dead token = %v (server reply %q), want Dovecot's NO [AUTHENTICATIONFAILED]", err, reply)
	}
}
