package graphsource_test

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph"
	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/graphsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	ok := graphsource.Config{BaseURL: "https://graph.microsoft.com", Mailbox: box,
		TokenSource: func(context.Context) (string, error) { return "t", nil }}
	tests := []struct {
		name   string
		change func(*graphsource.Config)
		want   []string // parts of the error; none: valid
	}{
		{name: "the defaults are valid", change: func(*graphsource.Config) {}},
		{name: "a base URL resolved per poll needs no BaseURL", change: func(c *graphsource.Config) {
			c.BaseURL, c.ResolveBaseURL = "", func(context.Context) (string, error) { return "", nil }
		}},
		{name: "everything missing is named at once", change: func(c *graphsource.Config) { *c = graphsource.Config{} },
			want: []string{"BaseURL", "Mailbox is required", "TokenSource is required"}},
		{name: "a mailbox with a slash would change the path", change: func(c *graphsource.Config) { c.Mailbox = "a/b" },
			want: []string{`Mailbox "a/b"`}},
		{name: "move needs a folder", change: func(c *graphsource.Config) { c.AfterImport = mailsource.AfterImportMove },
			want: []string{"MoveFolder is required"}},
		{name: "moving into a polled folder would import again", change: func(c *graphsource.Config) {
			c.AfterImport, c.MoveFolder, c.Folders = mailsource.AfterImportMove, "inbox/ done", []string{"Inbox", "Inbox/Done"}
		}, want: []string{"also one of Folders: mails would be imported again"}},
		{name: "the error folder must not be polled", change: func(c *graphsource.Config) { c.Folders = []string{"HD Error Messages"} },
			want: []string{"failed mails would be fetched again"}},
		{name: "more than Exchange's concurrency is refused", change: func(c *graphsource.Config) { c.Concurrency = 5 },
			want: []string{"Concurrency 5"}},
		{name: "an empty folder path", change: func(c *graphsource.Config) { c.Folders = []string{" / "} },
			want: []string{"names no folder"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tc.change(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to say %q", err, w)
				}
			}
		})
	}
}

// TestPoll_pagesImportsAndDeletesAfterCommit: 25 mails over pages of 10
// are imported under graph/<immutable id>, committed, and only then moved
// to Deleted Items; the next poll finds nothing; every request asked for
// immutable ids.
func TestPoll_pagesImportsAndDeletesAfterCommit(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", testMails(25, "paged"))
	cfg.PageSize = 10
	var deletesBeforeCommit atomic.Int32
	sink := newFakeSink(t)
	srv.OnRequest(func(r graphtest.Request) {
		sink.mu.Lock()
		commits := sink.commits
		sink.mu.Unlock()
		if r.Method == http.MethodDelete && commits == 0 {
			deletesBeforeCommit.Add(1)
		}
	})
	f := mustNew(t, cfg)

	res := mustPoll(t, f, sink)
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 25, Deleted: 25}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(keysOf(ids), sink.keys(mailsource.StatusReceived)); diff != "" {
		t.Errorf("committed keys (-want +got):\n%s", diff)
	}
	if n := deletesBeforeCommit.Load(); n != 0 {
		t.Errorf("%d mails deleted before the commit", n)
	}
	if n, d := srv.Count(box, "Inbox"), srv.Count(box, "deleteditems"); n != 0 || d != 25 {
		t.Errorf("Inbox holds %d and Deleted Items %d, want 0 and 25", n, d)
	}
	lists := 0
	for _, r := range srv.Requests() {
		if strings.HasSuffix(r.Path, "/messages") && r.Method == http.MethodGet {
			lists++
		}
	}
	if lists != 3 {
		t.Errorf("%d list requests, want 3 pages of 10", lists)
	}
	// The mails came in the order they were received.
	want := keysOf(ids)
	got := slices.Clone(sink.received)
	slices.Sort(got)
	if !slices.Equal(got, want) || sink.received[0] != graphsource.SourceKey(ids[0]) {
		t.Errorf("received %v, want the oldest first", sink.received[:3])
	}

	if res := mustPoll(t, f, sink); res != (mailsource.PollResult{}) {
		t.Errorf("second Poll() = %+v, want nothing to do", res)
	}
	noRequestWithoutImmutableID(t, srv)
}

// TestPoll_moveWouldChangeAnIDThatIsNotImmutable: a rule moves a kept mail
// into another polled folder between two polls. Graph changes a default id
// on every move, so a fetcher keyed by it would import the mail twice; the
// immutable id stays and the mail is known. The fake shows the trap: the
// same move without the header gives a new id.
func TestPoll_moveWouldChangeAnIDThatIsNotImmutable(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", testMails(3, "moved"))
	srv.CreateFolder(box, "Inbox/Support")
	cfg.Folders, cfg.AfterImport = []string{"Inbox", "Inbox/Support"}, mailsource.AfterImportKeep
	f := mustNew(t, cfg)
	sink := newFakeSink(t)
	if res := mustPoll(t, f, sink); res.Fetched != 3 {
		t.Fatalf("Poll() = %+v, want 3 fetched", res)
	}

	before := srv.Messages(box, "Inbox")[0]
	srv.MoveOutside(box, ids[0], "Inbox/Support")
	after := srv.Messages(box, "Inbox/Support")[0]
	if before.RESTID == after.RESTID || before.ImmutableID != after.ImmutableID {
		t.Fatalf("the fake kept the default id on a move (%s → %s) or changed the immutable one", before.RESTID, after.RESTID)
	}

	if res := mustPoll(t, f, sink); res.Fetched != 0 {
		t.Errorf("Poll() after the move = %+v, want nothing new: the moved mail is known by its immutable id", res)
	}
	if got := len(sink.keys(mailsource.StatusReceived)); got != 3 {
		t.Errorf("%d mails committed, want 3", got)
	}
	noRequestWithoutImmutableID(t, srv)
}

// TestPoll_afterImportMoveKeepsTheID: after_import move puts the mails in a
// folder created when missing, and Graph answers the move with the same
// (immutable) id.
func TestPoll_afterImportMoveKeepsTheID(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", testMails(4, "tomove"))
	cfg.AfterImport, cfg.MoveFolder = mailsource.AfterImportMove, "Inbox/Imported"
	res := mustPoll(t, mustNew(t, cfg), newFakeSink(t))
	if res.Fetched != 4 || res.Deleted != 4 {
		t.Errorf("Poll() = %+v, want 4 fetched and moved", res)
	}
	var moved []string
	for _, m := range srv.Messages(box, "Inbox/Imported") {
		moved = append(moved, m.ImmutableID)
	}
	slices.Sort(moved)
	want := slices.Clone(ids)
	slices.Sort(want)
	if diff := cmp.Diff(want, moved); diff != "" {
		t.Errorf("mails in Inbox/Imported (-want +got):\n%s", diff)
	}
	for _, r := range srv.Requests() {
		if strings.HasSuffix(r.Path, "/move") && r.Status != http.StatusCreated {
			t.Errorf("move answered %d", r.Status)
		}
	}
	noRequestWithoutImmutableID(t, srv)
}

// TestPoll_permanentDelete purges instead of filling Deleted Items.
func TestPoll_permanentDelete(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	srv.AddMessages(box, "Inbox", testMails(3, "purge"))
	cfg.PermanentDelete = true
	if res := mustPoll(t, mustNew(t, cfg), newFakeSink(t)); res.Fetched != 3 || res.Deleted != 3 {
		t.Errorf("Poll() = %+v, want 3 fetched and deleted", res)
	}
	if n, d, p := srv.Count(box, "Inbox"), srv.Count(box, "deleteditems"), srv.Purged(box); n != 0 || d != 0 || p != 3 {
		t.Errorf("Inbox %d, Deleted Items %d, purged %d; want 0, 0, 3", n, d, p)
	}
}

// TestPoll_throttlingHonoursRetryAfter: 429 and 503 with Retry-After are
// waited for and retried; a Retry-After beyond the bound ends the poll
// with Graph's words instead of waiting.
func TestPoll_throttlingHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			srv, cfg, _ := setup(t, graphtest.Options{})
			srv.AddMessages(box, "Inbox", testMails(5, "throttled"))
			srv.Throttle(2, status, "1")
			start := time.Now()
			res := mustPoll(t, mustNew(t, cfg), newFakeSink(t))
			elapsed := time.Since(start)
			if res.Fetched != 5 {
				t.Errorf("Poll() = %+v, want 5 fetched", res)
			}
			throttled := 0
			for _, r := range srv.Requests() {
				if r.Status == status {
					throttled++
				}
			}
			if throttled != 2 {
				t.Errorf("%d requests answered %d, want 2", throttled, status)
			}
			if elapsed < 2*time.Second {
				t.Errorf("Poll() took %v, want at least the 2 s that Retry-After asked for", elapsed)
			}
		})
	}
	t.Run("a wait beyond the bound", func(t *testing.T) {
		t.Parallel()
		srv, cfg, _ := setup(t, graphtest.Options{})
		srv.AddMessages(box, "Inbox", testMails(1, "long wait"))
		srv.Throttle(1, http.StatusTooManyRequests, "3600")
		start := time.Now()
		_, err := mustNew(t, cfg).Poll(context.Background(), newFakeSink(t))
		if reply := mailsource.ServerReply(err); reply != "ApplicationThrottled: Application is over its MailboxConcurrency limit." {
			t.Errorf("Poll() = %v (reply %q), want Graph's throttling words", err, reply)
		}
		if !strings.Contains(err.Error(), "1h0m0s") || time.Since(start) > 10*time.Second {
			t.Errorf("Poll() = %v after %v, want it to give up at once and say how long Graph asked for", err, time.Since(start))
		}
	})
}

// TestPoll_401FetchesOneFreshToken: Graph refuses the token in the middle
// of the downloads; the fetcher tells the token source, gets one fresh
// token and goes on.
func TestPoll_401FetchesOneFreshToken(t *testing.T) {
	t.Parallel()
	srv, cfg, tokens := setup(t, graphtest.Options{})
	srv.AddMessages(box, "Inbox", testMails(12, "expiring"))
	var once sync.Once
	srv.OnRequest(func(r graphtest.Request) {
		if r.Download() {
			once.Do(srv.RejectTokensSeen)
		}
	})
	cfg.Concurrency = 1 // one 401, not one per worker
	res := mustPoll(t, mustNew(t, cfg), newFakeSink(t))
	if res.Fetched != 12 || res.Deleted != 12 {
		t.Errorf("Poll() = %+v, want all 12 fetched and deleted", res)
	}
	var unauthorized []string
	for _, r := range srv.Requests() {
		if r.Status == http.StatusUnauthorized {
			unauthorized = append(unauthorized, r.Token)
		}
	}
	if diff := cmp.Diff([]string{"tok-1"}, unauthorized); diff != "" {
		t.Errorf("tokens answered 401 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"tok-1"}, tokens.rejected); diff != "" {
		t.Errorf("tokens rejected to the source (-want +got):\n%s", diff)
	}
	if tokens.asked != 2 {
		t.Errorf("the token source was asked %d times, want 2 (one fresh token)", tokens.asked)
	}
}

// TestPoll_401AgainIsAnError: a fresh token refused as well ends the poll
// with Graph's words; it is not retried for ever.
func TestPoll_401AgainIsAnError(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{CheckToken: graphtest.StaticToken("never")})
	srv.AddMessages(box, "Inbox", testMails(1, "refused"))
	_, err := mustNew(t, cfg).Poll(context.Background(), newFakeSink(t))
	if reply := mailsource.ServerReply(err); reply != "InvalidAuthenticationToken: Access token has expired or is not yet valid." {
		t.Errorf("Poll() = %v (reply %q), want Graph's 401 words", err, reply)
	}
	if n := srv.RequestCount(); n != 2 {
		t.Errorf("%d requests, want 2 (the first and one with a fresh token)", n)
	}
}

// TestPoll_mailDeletedBetweenListAndDownload is skipped, not an error, and
// the others are imported.
func TestPoll_mailDeletedBetweenListAndDownload(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", testMails(5, "vanishing"))
	srv.VanishOnDownload(box, ids[2])
	sink := newFakeSink(t)
	res := mustPoll(t, mustNew(t, cfg), sink)
	if res.Fetched != 4 {
		t.Errorf("Poll() = %+v, want 4 fetched", res)
	}
	want := keysOf(slices.Delete(slices.Clone(ids), 2, 3))
	if diff := cmp.Diff(want, sink.keys(mailsource.StatusReceived)); diff != "" {
		t.Errorf("committed (-want +got):\n%s", diff)
	}
}

// TestPoll_HTMLErrorPage: a proxy's HTML page instead of Graph's JSON
// gives an error that says so, with the status and the page's title.
func TestPoll_HTMLErrorPage(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	srv.AddMessages(box, "Inbox", testMails(2, "html"))
	srv.HTMLErrorPage(1, http.StatusBadGateway)
	sink := newFakeSink(t)
	_, err := mustNew(t, cfg).Poll(context.Background(), sink)
	if !errors.Is(err, graphsource.ErrNotGraph) {
		t.Fatalf("Poll() = %v, want ErrNotGraph", err)
	}
	if reply := mailsource.ServerReply(err); reply != "HTTP 502 Bad Gateway: Bad Gateway" {
		t.Errorf("server reply %q, want the status and the page's title", reply)
	}
	if strings.Contains(err.Error(), "<") {
		t.Errorf("error %q quotes the page's markup", err)
	}
	if len(sink.committed) != 0 || srv.Count(box, "Inbox") != 2 {
		t.Error("something was imported or deleted")
	}
}

// TestPoll_maxMailSizeWithoutDownloading: a mail above max_mail_size is
// staged as oversize from the listed size, never downloaded, and moved to
// the error folder, created when missing.
func TestPoll_maxMailSizeWithoutDownloading(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	big := append(testMail("big"), strings.Repeat("x", 10_000)...)
	ids := srv.AddMessages(box, "Inbox", [][]byte{testMail("small 1"), big, testMail("small 2")})
	cfg.MaxMailSize = 5000
	sink := newFakeSink(t)
	res := mustPoll(t, mustNew(t, cfg), sink)
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 2, Oversize: 1, Deleted: 3}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{graphsource.SourceKey(ids[1])}, sink.oversize); diff != "" {
		t.Errorf("oversize (-want +got):\n%s", diff)
	}
	for _, r := range srv.Requests() {
		if r.Download() && strings.Contains(r.Path, ids[1]) {
			t.Errorf("the oversize mail was downloaded: %s", r.Path)
		}
	}
	inError := srv.Messages(box, "HD Error Messages")
	if len(inError) != 1 || inError[0].ImmutableID != ids[1] {
		t.Errorf("error folder holds %v, want the big mail", inError)
	}
}

// TestPoll_failedMailGoesToTheErrorFolder: an unparseable mail is moved to
// the error folder (a path, created when missing) after the commit, and a
// refused move is retried by the next poll.
func TestPoll_failedMailGoesToTheErrorFolder(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", [][]byte{testMail("fine"), []byte("GARBAGE")})
	cfg.ErrorFolder = "Helpdesk/Errors"
	srv.FailNext(1, func(r graphtest.Request) bool { return strings.HasSuffix(r.Path, "/move") },
		graphtest.Fault{Status: http.StatusForbidden, Code: "ErrorQuotaExceeded", Message: "The process failed to get the correct properties."})
	f := mustNew(t, cfg)
	sink := newFakeSink(t)
	res, err := f.Poll(context.Background(), sink)
	if reply := mailsource.ServerReply(err); reply != "ErrorQuotaExceeded: The process failed to get the correct properties." {
		t.Errorf("Poll() = %+v, %v; want the refusal's words", res, err)
	}
	if res.Fetched != 1 || res.Failed != 1 {
		t.Errorf("Poll() = %+v, want 1 fetched and 1 failed", res)
	}
	if srv.Count(box, "Inbox") != 1 {
		t.Fatalf("Inbox holds %d, want the failed mail still there", srv.Count(box, "Inbox"))
	}
	res = mustPoll(t, f, sink)
	if res.Skipped != 1 || res.Deleted != 1 {
		t.Errorf("second Poll() = %+v, want the failed mail moved now", res)
	}
	inError := srv.Messages(box, "Helpdesk/Errors")
	if len(inError) != 1 || inError[0].ImmutableID != ids[1] {
		t.Errorf("Helpdesk/Errors holds %v, want the failed mail", inError)
	}
}

// TestPoll_refusedDeleteStaysCommitted: Graph refuses the delete; the mails
// are committed and stay, the poll says why, and the next poll deletes
// them without importing them again.
func TestPoll_refusedDeleteStaysCommitted(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	srv.AddMessages(box, "Inbox", testMails(6, "undeletable"))
	srv.FailNext(1, func(r graphtest.Request) bool { return r.Method == http.MethodDelete },
		graphtest.Fault{Status: http.StatusForbidden, Code: "ErrorAccessDenied", Message: "Access is denied. Check credentials and try again."})
	f := mustNew(t, cfg)
	sink := newFakeSink(t)
	res, err := f.Poll(context.Background(), sink)
	if reply := mailsource.ServerReply(err); reply != "ErrorAccessDenied: Access is denied. Check credentials and try again." {
		t.Errorf("Poll() error = %v, want Graph's words", err)
	}
	if res.Fetched != 6 || res.Deleted == 6 {
		t.Errorf("Poll() = %+v, want 6 fetched and not all deleted", res)
	}
	res = mustPoll(t, f, sink)
	if res.Fetched != 0 || res.Skipped+res.Deleted == 0 || srv.Count(box, "Inbox") != 0 {
		t.Errorf("second Poll() = %+v with %d left, want the rest deleted and nothing imported again", res, srv.Count(box, "Inbox"))
	}
}

// TestPoll_commitFailureDeletesNothing: a failed commit leaves every mail
// on the server.
func TestPoll_commitFailureDeletesNothing(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	srv.AddMessages(box, "Inbox", testMails(3, "uncommitted"))
	sink := newFakeSink(t)
	sink.failCommit = 1
	if _, err := mustNew(t, cfg).Poll(context.Background(), sink); err == nil {
		t.Fatal("Poll() = nil, want the commit's error")
	}
	if n := srv.Count(box, "Inbox"); n != 3 {
		t.Errorf("Inbox holds %d, want all 3", n)
	}
}

// TestPoll_atMostFourConcurrentRequests: with 80 mails and some latency
// the fetcher works in parallel, but never above Exchange's 4 per
// mailbox, also when two fetchers read two folders of one mailbox through
// one MailboxLimiter; the fake answers 429 beyond 4, and none came.
func TestPoll_atMostFourConcurrentRequests(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{Latency: 3 * time.Millisecond})
	srv.AddMessages(box, "Inbox", testMails(80, "parallel"))
	srv.AddMessages(box, "Inbox/Other", testMails(80, "other"))
	cfg.BatchSize = 30
	cfg.Limiter = graph.NewMailboxLimiter(graph.MailboxConcurrency)
	other := cfg
	other.Folders = []string{"Inbox/Other"}
	var wg sync.WaitGroup
	results := make([]mailsource.PollResult, 2)
	for i, c := range []graphsource.Config{cfg, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = mustPoll(t, mustNew(t, c), newFakeSink(t))
		}()
	}
	wg.Wait()
	if results[0].Fetched != 80 || results[1].Fetched != 80 {
		t.Errorf("Poll() = %+v, want 80 fetched each", results)
	}
	peak := srv.PeakConcurrency(box)
	t.Logf("peak of concurrent requests to the mailbox: %d", peak)
	if peak > 4 {
		t.Errorf("peak concurrency %d, want at most 4", peak)
	}
	if peak < 3 {
		t.Errorf("peak concurrency %d, want the downloads to run in parallel", peak)
	}
	for _, r := range srv.Requests() {
		if r.Status == http.StatusTooManyRequests {
			t.Errorf("%s %s was throttled", r.Method, r.Path)
		}
	}
}

// TestPoll_subfolders polls a folder path and a subfolder by display name.
func TestPoll_subfolders(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	a := srv.AddMessages(box, "Inbox", testMails(2, "top"))
	b := srv.AddMessages(box, "Inbox/Support/Tier 2", testMails(2, "deep"))
	c := srv.AddMessages(box, "Shared Projects", testMails(1, "top level"))
	cfg.Folders = []string{"Inbox", "inbox/support/TIER 2", "Shared Projects"}
	sink := newFakeSink(t)
	if res := mustPoll(t, mustNew(t, cfg), sink); res.Fetched != 5 {
		t.Errorf("Poll() = %+v, want 5 fetched", res)
	}
	if diff := cmp.Diff(keysOf(slices.Concat(a, b, c)), sink.keys(mailsource.StatusReceived)); diff != "" {
		t.Errorf("committed (-want +got):\n%s", diff)
	}
}

// TestPoll_missingFolderDoesNotStopTheOthers.
func TestPoll_missingFolderDoesNotStopTheOthers(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	srv.AddMessages(box, "Inbox", testMails(2, "still"))
	cfg.Folders = []string{"Nowhere/Deep", "Inbox"}
	res, err := mustNew(t, cfg).Poll(context.Background(), newFakeSink(t))
	if !errors.Is(err, graphsource.ErrNoFolder) || !strings.Contains(err.Error(), `"Nowhere"`) {
		t.Errorf("Poll() error = %v, want ErrNoFolder naming the folder", err)
	}
	if res.Fetched != 2 {
		t.Errorf("Poll() = %+v, want the Inbox imported all the same", res)
	}
}

// TestCheck answers Graph's exact words.
func TestCheck(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	if err := mustNew(t, cfg).Check(context.Background()); err != nil {
		t.Errorf("Check() = %v, want nil", err)
	}
	nobody := cfg
	nobody.Mailbox = "nobody@example.org"
	if reply := mailsource.ServerReply(mustNew(t, nobody).Check(context.Background())); reply != "ErrorInvalidUser: The requested user 'nobody@example.org' is invalid." {
		t.Errorf("Check() of an unknown mailbox: reply %q", reply)
	}
	missing := cfg
	missing.Folders = []string{"Inbox/Gone"}
	if err := mustNew(t, missing).Check(context.Background()); !errors.Is(err, graphsource.ErrNoFolder) {
		t.Errorf("Check() of a missing folder = %v, want ErrNoFolder", err)
	}
	srv.Deny(box)
	err := mustNew(t, cfg).Check(context.Background())
	if reply := mailsource.ServerReply(err); reply != "ErrorAccessDenied: Access is denied. Check credentials and try again." {
		t.Errorf("Check() denied = %v (reply %q), want Graph's words", err, reply)
	}
	noRequestWithoutImmutableID(t, srv)
}

// TestPoll_bigMailIsStreamed imports a 50 MB mail: the fetcher streams it
// from the answer into the sink, so the heap grows by a small fraction of
// the mail (sampled during the poll) and so do its allocations. Not
// parallel, so that the heap is this test's alone.
func TestPoll_bigMailIsStreamed(t *testing.T) {
	srv, cfg, _ := setup(t, graphtest.Options{})
	const size = 50 << 20
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n"
	raw := append(testMail("big"), strings.Repeat(line, size/len(line))...)
	srv.AddMessages(box, "Inbox", [][]byte{raw})
	sink := newFakeSink(t)
	sink.discard = true
	f := mustNew(t, cfg)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	res := mustPoll(t, f, sink)
	close(stop)
	<-sampled
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if res.Fetched != 1 {
		t.Fatalf("Poll() = %+v, want the big mail", res)
	}
	above := int64(peak.Load()) - int64(before.HeapInuse)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d MB mail: heap peaked %.1f MB above idle, %.1f MB allocated (fake Graph included)",
		len(raw)>>20, float64(above)/(1<<20), float64(allocated)/(1<<20))
	if above > int64(len(raw))/5 {
		t.Errorf("heap grew by %d bytes for a %d-byte mail, want under a fifth of it (streaming)", above, len(raw))
	}
	if allocated > uint64(len(raw))/5 {
		t.Errorf("Poll allocated %d bytes for a %d-byte mail, want under a fifth of it", allocated, len(raw))
	}
}

// TestPoll_deletesGoInBatches: the deletes travel 20 to a JSON batch, each
// with the ImmutableId header; a request of a batch that Graph throttles
// is sent again after its Retry-After, with those the throttling kept
// from running (424), and every mail is deleted exactly once.
func TestPoll_deletesGoInBatches(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	srv.AddMessages(box, "Inbox", testMails(45, "batched"))
	srv.FailNext(1, func(r graphtest.Request) bool { return r.Batch != "" && r.Method == http.MethodDelete },
		graphtest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "1", Code: "ApplicationThrottled",
			Message: "Application is over its MailboxConcurrency limit."})
	start := time.Now()
	res := mustPoll(t, mustNew(t, cfg), newFakeSink(t))
	if res.Fetched != 45 || res.Deleted != 45 {
		t.Errorf("Poll() = %+v, want 45 fetched and deleted", res)
	}
	if d, p := srv.Count(box, "deleteditems"), srv.Purged(box); d != 45 || p != 0 {
		t.Errorf("Deleted Items %d, purged %d; want 45 and 0 (each mail deleted once)", d, p)
	}
	batches, deletes := 0, 0
	for _, r := range srv.Requests() {
		switch {
		case r.Path == "/v1.0/$batch":
			batches++
		case r.Method == http.MethodDelete && r.Batch == "":
			t.Errorf("a delete outside a batch: %s", r.Path)
		case r.Method == http.MethodDelete && r.Status == http.StatusNoContent:
			deletes++
		}
	}
	if deletes != 45 || batches < 3 || batches > 5 {
		t.Errorf("%d deletes in %d batches, want 45 in 3 (and one or two sent again)", deletes, batches)
	}
	if time.Since(start) < time.Second {
		t.Error("the throttled request was sent again before its Retry-After")
	}
	noRequestWithoutImmutableID(t, srv)
}

// TestPoll_aMailGraphRefusesToSendDoesNotHoldUpTheOthers: the refused one
// stays on the server with Graph's words in the poll's error, the others
// are imported; a 5xx instead stops the poll and imports nothing of the
// batch.
func TestPoll_aMailGraphRefusesToSendDoesNotHoldUpTheOthers(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", testMails(5, "corrupt"))
	srv.FailNext(1, func(r graphtest.Request) bool { return r.Download() && strings.Contains(r.Path, ids[2]) },
		graphtest.Fault{Status: http.StatusBadRequest, Code: "ErrorCorruptData", Message: "Data is corrupt., Invalid MIME content."})
	f := mustNew(t, cfg)
	sink := newFakeSink(t)
	res, err := f.Poll(context.Background(), sink)
	if reply := mailsource.ServerReply(err); reply != "ErrorCorruptData: Data is corrupt., Invalid MIME content." {
		t.Errorf("Poll() error = %v, want Graph's words about the refused mail", err)
	}
	if res.Fetched != 4 || srv.Count(box, "Inbox") != 1 {
		t.Errorf("Poll() = %+v with %d left, want the other 4 imported and the refused one left", res, srv.Count(box, "Inbox"))
	}
	if res := mustPoll(t, f, sink); res.Fetched != 1 {
		t.Errorf("next Poll() = %+v, want the mail imported once Graph sends it", res)
	}

	srv.AddMessages(box, "Inbox", testMails(3, "outage"))
	srv.FailNext(1, func(r graphtest.Request) bool { return r.Download() },
		graphtest.Fault{Status: http.StatusInternalServerError, Code: "UnknownError", Message: ""})
	if _, err := f.Poll(context.Background(), sink); mailsource.ServerReply(err) != "UnknownError: " {
		t.Errorf("Poll() during an outage = %v, want Graph's 500", err)
	}
	if n := srv.Count(box, "Inbox"); n != 3 {
		t.Errorf("%d mails left after the failed poll, want all 3", n)
	}
}
