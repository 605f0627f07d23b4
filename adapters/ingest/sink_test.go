package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

var fixedNow = func() time.Time { return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) }

func forEachStore(t *testing.T, fn func(t *testing.T, store eventstore.Store)) {
	t.Helper()
	for _, kind := range []string{"embedded", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fn(t, openBenchStore(t, kind))
		})
	}
}

func newTestSink(t *testing.T, store eventstore.Store, account string) (*Sink, *blobstore.FS) {
	t.Helper()
	blobs, err := blobstore.NewFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSink(SinkConfig{Store: store, Blobs: blobs, Limits: mimeparse.DefaultLimits(), AccountID: account, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	return s, blobs
}

func testMail(n int) string {
	return fmt.Sprintf("From: Erika <erika@example.com>\r\nTo: support@example.org\r\nSubject: mail %d\r\n"+
		"Message-ID: <t%d@example.com>\r\n\r\nbody %d\r\n", n, n, n)
}

func mailEvents(t *testing.T, store eventstore.Store) map[string][]eventstore.RecordedEvent {
	t.Helper()
	out := map[string][]eventstore.RecordedEvent{}
	evs, err := store.ReadAll(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		out[e.Type] = append(out[e.Type], e)
	}
	return out
}

func TestSink_CommitsEachMailOnceWithItsIndexRow(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		ctx := context.Background()
		sink, blobs := newTestSink(t, store, "acc1")
		for i := range 3 {
			out, err := sink.Receive(ctx, fmt.Sprintf("imap/INBOX/7/%d", i), -1, strings.NewReader(testMail(i)))
			if err != nil || out.Status != mailsource.StatusReceived {
				t.Fatalf("Receive %d = %+v, %v", i, out, err)
			}
		}
		if err := sink.Oversize(ctx, "imap/INBOX/7/99", 1<<30); err != nil {
			t.Fatal(err)
		}
		if out, err := sink.Receive(ctx, "imap/INBOX/7/50", -1, strings.NewReader("")); err != nil || out.Status != mailsource.StatusFailed || out.Reason == "" {
			t.Fatalf("Receive of an empty mail = %+v, %v; want failed with a reason", out, err)
		}
		known, err := sink.Known(ctx, []string{"imap/INBOX/7/0"})
		if err != nil || len(known) != 0 {
			t.Fatalf("Known before Commit = %v, %v; want nothing", known, err)
		}
		if err := sink.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		known, err = sink.Known(ctx, []string{"imap/INBOX/7/0", "imap/INBOX/7/1", "imap/INBOX/7/2", "imap/INBOX/7/99", "imap/INBOX/7/50", "imap/INBOX/7/3"})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]mailsource.Status{"imap/INBOX/7/0": mailsource.StatusReceived, "imap/INBOX/7/1": mailsource.StatusReceived,
			"imap/INBOX/7/2": mailsource.StatusReceived, "imap/INBOX/7/99": mailsource.StatusFailed, "imap/INBOX/7/50": mailsource.StatusFailed}
		if fmt.Sprint(known) != fmt.Sprint(want) {
			t.Errorf("Known = %v, want %v", known, want)
		}
		evs := mailEvents(t, store)
		if len(evs[domain.MailReceivedName]) != 3 || len(evs[domain.MailFailedName]) != 2 {
			t.Fatalf("events = %d MailReceived, %d MailFailed; want 3 and 2", len(evs[domain.MailReceivedName]), len(evs[domain.MailFailedName]))
		}
		var m domain.MailReceived
		if err := json.Unmarshal(evs[domain.MailReceivedName][0].Payload, &m); err != nil {
			t.Fatal(err)
		}
		if m.MailID != domain.MailIDFor("acc1", m.SourceKey) || m.From.Email != "erika@example.com" || m.MessageID == "" {
			t.Errorf("MailReceived = %+v", m)
		}
		rc, err := OpenBlob(ctx, store, blobs, blobstore.Ref(m.BlobRef))
		if err != nil {
			t.Fatalf("the event's blob is not stored: %v", err)
		}
		raw, _ := io.ReadAll(rc)
		_ = rc.Close()
		if string(raw) != testMail(0) && string(raw) != testMail(1) && string(raw) != testMail(2) {
			t.Errorf("stored blob = %q, want one of the mails as sent", raw)
		}
		for _, e := range evs[domain.MailFailedName] {
			var f domain.MailFailed
			_ = json.Unmarshal(e.Payload, &f)
			if f.Oversize && f.BlobRef != "" {
				t.Errorf("oversize mail has a blob: %+v", f)
			}
		}

		// The same source key committed again by a later poll is refused
		// whole: no second MailReceived.
		again, _ := newTestSink(t, store, "acc1")
		if _, err := again.Receive(ctx, "imap/INBOX/7/1", -1, strings.NewReader(testMail(1))); err != nil {
			t.Fatal(err)
		}
		if err := again.Commit(ctx); err == nil {
			t.Error("committing a source key twice succeeded")
		}
		if n := len(mailEvents(t, store)[domain.MailReceivedName]); n != 3 {
			t.Errorf("%d MailReceived after a duplicate commit, want 3", n)
		}
	})
}

// failingStore makes every Update fail, as a lost database connection would.
type failingStore struct{ eventstore.Store }

func (failingStore) Update(context.Context, func(context.Context, eventstore.Tx) error) error {
	return errors.New("connection reset")
}

func TestSink_LargeMailIsALooseBlobAndSmallOnesArePacked(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	ctx := context.Background()
	sink, blobs := newTestSink(t, store, "acc1")
	big := testMail(1) + strings.Repeat("x", smallMail*3) + "\r\n"
	for i, raw := range []string{testMail(7), big} {
		if out, err := sink.Receive(ctx, fmt.Sprintf("pop3/U%d", i), int64(len(raw)), strings.NewReader(raw)); err != nil || out.Status != mailsource.StatusReceived {
			t.Fatalf("Receive %d = %+v, %v", i, out, err)
		}
	}
	if err := sink.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, e := range mailEvents(t, store)[domain.MailReceivedName] {
		var m domain.MailReceived
		_ = json.Unmarshal(e.Payload, &m)
		rc, err := OpenBlob(ctx, store, blobs, blobstore.Ref(m.BlobRef))
		if err != nil {
			t.Fatalf("OpenBlob(%s): %v", m.SourceKey, err)
		}
		raw, _ := io.ReadAll(rc)
		_ = rc.Close()
		if int64(len(raw)) != m.Size {
			t.Errorf("blob of %s has %d bytes, event says %d", m.SourceKey, len(raw), m.Size)
		}
		_, looseErr := blobs.Open(blobstore.Ref(m.BlobRef))
		if isLoose := looseErr == nil; isLoose != (m.Size > smallMail) {
			t.Errorf("mail of %d bytes stored loose = %v, want loose only above %d", m.Size, isLoose, smallMail)
		}
	}
}

func TestSink_FailedCommitLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	sink, _ := newTestSink(t, failingStore{store}, "acc1")
	if _, err := sink.Receive(context.Background(), "pop3/UID1", -1, strings.NewReader(testMail(1))); err != nil {
		t.Fatal(err)
	}
	if err := sink.Commit(context.Background()); err == nil {
		t.Fatal("Commit through a failing store succeeded")
	}
	if n := len(mailEvents(t, store)); n != 0 {
		t.Errorf("%d event types stored after a failed commit, want none", n)
	}
}

// scriptedFetcher is a Fetcher whose polls return what the test says.
type scriptedFetcher struct {
	mu    sync.Mutex
	polls int
	err   error
}

func (f *scriptedFetcher) Poll(ctx context.Context, sink mailsource.Sink) (mailsource.PollResult, error) {
	f.mu.Lock()
	f.polls++
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return mailsource.PollResult{}, err
	}
	return mailsource.PollResult{Fetched: 1}, nil
}

func (f *scriptedFetcher) Check(context.Context) error { return nil }

func (f *scriptedFetcher) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.polls
}

func TestScheduler_PollsAtOnceOnDemandAndRecordsOutcomes(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	blobs, _ := blobstore.NewFS(t.TempDir())
	good := &scriptedFetcher{}
	bad := &scriptedFetcher{err: &mailsource.ServerError{Op: "login", Reply: "NO [AUTHENTICATIONFAILED] Authentication failed.", Err: errors.New("login refused")}}
	s, err := NewScheduler(SchedulerConfig{Store: store, Blobs: blobs, Now: fixedNow, Refresh: 20 * time.Millisecond,
		Logger:   slog.New(slog.DiscardHandler),
		Accounts: addedAfterStart(Account{ID: "good", PollInterval: time.Hour, Fetcher: good}, Account{ID: "bad", PollInterval: time.Hour, Fetcher: bad})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, func() bool { return good.count() == 1 && bad.count() == 1 })
	if err := s.PollNow("good"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return good.count() == 2 })
	// The outcome is recorded after Poll returns: wait for it before stopping.
	waitFor(t, func() bool {
		n, err := store.StreamVersion(context.Background(), MailboxStream("good"))
		return err == nil && n == 2
	})
	if err := s.PollNow("nope"); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("PollNow(unknown) = %v, want ErrUnknownAccount", err)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run stopped with %v, want the cancellation", err)
	}

	evs, err := store.ReadStream(context.Background(), MailboxStream("bad"), 1, 0)
	if err != nil || len(evs) == 0 {
		t.Fatalf("bad account's poll outcomes: %d, %v", len(evs), err)
	}
	var polled domain.MailboxPolled
	_ = json.Unmarshal(evs[0].Payload, &polled)
	if polled.ServerReply != "NO [AUTHENTICATIONFAILED] Authentication failed." || polled.Failures != 1 || polled.Error == "" {
		t.Errorf("recorded failure = %+v, want the server's words and failures=1", polled)
	}
	if n, _ := store.StreamVersion(context.Background(), MailboxStream("good")); n != 2 {
		t.Errorf("good account has %d poll outcomes, want 2", n)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		interval time.Duration
		failures int
		want     time.Duration
	}{
		{time.Minute, 1, time.Minute},
		{time.Minute, 2, 2 * time.Minute},
		{time.Minute, 4, 8 * time.Minute},
		{time.Minute, 10, 30 * time.Minute},
		{time.Hour, 3, time.Hour},
	} {
		if got := backoff(tc.interval, tc.failures, 30*time.Minute); got != tc.want {
			t.Errorf("backoff(%v, %d) = %v, want %v", tc.interval, tc.failures, got, tc.want)
		}
	}
}

func TestFailureStreak(t *testing.T) {
	t.Parallel()
	cut := errors.New("connection reset by peer")
	for _, tc := range []struct {
		name   string
		before int
		res    mailsource.PollResult
		err    error
		want   int
	}{
		{"a poll that succeeds ends the streak", 5, mailsource.PollResult{}, nil, 0},
		{"a poll that fails without progress lengthens it", 3, mailsource.PollResult{}, cut, 4},
		{"a poll that committed mail before failing starts a new one", 5, mailsource.PollResult{Fetched: 500}, cut, 1},
		{"so does one that committed unparseable mail", 5, mailsource.PollResult{Failed: 1}, cut, 1},
		{"or finished the deletes of an earlier poll", 5, mailsource.PollResult{Skipped: 500, Deleted: 500}, cut, 1},
		{"mails it only found committed, without deleting any, are no progress", 2, mailsource.PollResult{Skipped: 500}, cut, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := failureStreak(tc.before, tc.res, tc.err); got != tc.want {
				t.Errorf("failureStreak(%d, %+v, %v) = %d, want %d", tc.before, tc.res, tc.err, got, tc.want)
			}
		})
	}
}

// A poll that imports mail and then fails (a restarted database, a cut
// connection) records one failure, whatever failed before it.
func TestScheduler_PollThatImportedBeforeFailingRecordsOneFailure(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	blobs, _ := blobstore.NewFS(t.TempDir())
	s, err := NewScheduler(SchedulerConfig{Store: store, Blobs: blobs, Now: fixedNow, Accounts: func(context.Context) ([]Account, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	a := Account{ID: "big", PollInterval: time.Second, Fetcher: progressThenFail{}}
	if _, err := s.PollOnce(context.Background(), a, 6); err == nil {
		t.Fatal("PollOnce() = nil error, want the fetcher's")
	}
	evs, err := store.ReadStream(context.Background(), MailboxStream("big"), 1, 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("poll outcomes: %d, %v", len(evs), err)
	}
	var polled domain.MailboxPolled
	_ = json.Unmarshal(evs[0].Payload, &polled)
	if polled.Failures != 1 || polled.Fetched != 500 {
		t.Errorf("recorded outcome = %+v, want 500 fetched and failures=1", polled)
	}
}

// progressThenFail commits 500 mails (as far as its result says) and fails.
type progressThenFail struct{}

func (progressThenFail) Poll(context.Context, mailsource.Sink) (mailsource.PollResult, error) {
	return mailsource.PollResult{Fetched: 500, Deleted: 500}, errors.New("imapsource: UID FETCH: connection reset by peer")
}

func (progressThenFail) Check(context.Context) error { return nil }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// appendRecorder records how many events and payload bytes each committed
// transaction appended.
type appendRecorder struct {
	eventstore.Store
	mu      sync.Mutex
	batches []recordedBatch
}

type recordedBatch struct{ events, bytes int }

func (s *appendRecorder) Update(ctx context.Context, fn func(context.Context, eventstore.Tx) error) error {
	var b recordedBatch
	err := s.Store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		b = recordedBatch{}
		return fn(ctx, &recordingTx{Tx: tx, b: &b})
	})
	if err == nil && b.events > 0 {
		s.mu.Lock()
		s.batches = append(s.batches, b)
		s.mu.Unlock()
	}
	return err
}

type recordingTx struct {
	eventstore.Tx
	b *recordedBatch
}

func (t *recordingTx) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	for _, r := range reqs {
		for _, e := range r.Events {
			t.b.events++
			t.b.bytes += len(e.Payload)
		}
	}
	return t.Tx.Append(ctx, reqs...)
}

// bigTextMail is a small mail (packed, held until its batch commits) with
// a text body of about n bytes.
func bigTextMail(i, n int) string {
	return testMail(i) + strings.Repeat("all work and no play makes a long mail\r\n", n/40)
}

func TestSink_BatchClosesByBytesBeforeItsCount(t *testing.T) {
	t.Parallel()
	store := &appendRecorder{Store: openBenchStore(t, "embedded")}
	ctx := context.Background()
	sink, _ := newTestSink(t, store, "acc1")
	// given 300 mails of 60 KB: held raw until their batch commits, and
	// each one's event carries body text besides, so the 300 together hold
	// more than 32 MiB although they are fewer than a fetcher's 500
	const mails = 300
	for i := range mails {
		raw := bigTextMail(i, 60<<10)
		if out, err := sink.Receive(ctx, fmt.Sprintf("pop3/U%d", i), int64(len(raw)), strings.NewReader(raw)); err != nil ||
			out.Status != mailsource.StatusReceived {
			t.Fatalf("Receive %d = %+v, %v", i, out, err)
		}
	}
	// when the fetcher commits what it staged
	if err := sink.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// then the sink committed batches that closed by their bytes on the way
	store.mu.Lock()
	batches := slices.Clone(store.batches)
	store.mu.Unlock()
	total := 0
	for _, b := range batches {
		total += b.events
	}
	t.Logf("300 mails of 60 KB committed in %d transactions: %+v", len(batches), batches)
	if total != mails {
		t.Fatalf("%d events committed, want %d", total, mails)
	}
	if len(batches) < 2 {
		t.Fatalf("all %d mails committed in %d transaction(s); want the batch closed by bytes (%d)", mails, len(batches), DefaultMaxStagedBytes)
	}
	for _, b := range batches {
		// the events alone stay under the bound; the held raw mails as much again
		if b.bytes > DefaultMaxStagedBytes {
			t.Errorf("a batch of %d events holds %d payload bytes, more than %d", b.events, b.bytes, DefaultMaxStagedBytes)
		}
	}
	if n := len(mailEvents(t, store.Store)[domain.MailReceivedName]); n != mails {
		t.Errorf("%d MailReceived stored, want %d", n, mails)
	}
}

func TestSink_EarlyCommitFailureStopsThePoll(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// given a sink that commits after every mail, through a failing store
	sink, err := NewSink(SinkConfig{Store: failingStore{store}, Blobs: blobs, AccountID: "acc1", Now: fixedNow, MaxStagedBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var recvErr error
	for i := range 3 {
		if _, recvErr = sink.Receive(ctx, fmt.Sprintf("pop3/U%d", i), -1, strings.NewReader(testMail(i))); recvErr != nil {
			break
		}
	}
	// then a later Receive reports the early commit's failure, and so does Commit
	if recvErr == nil {
		t.Error("Receive after a failed early commit succeeded; want the poll stopped")
	}
	if err := sink.Commit(ctx); err == nil {
		t.Error("Commit after a failed early commit succeeded")
	}
	if n := len(mailEvents(t, store)); n != 0 {
		t.Errorf("%d event types stored, want none", n)
	}
}

func TestSink_EventKeepsABoundedBodyPrefix(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	ctx := context.Background()
	sink, _ := newTestSink(t, store, "acc1")
	// given a mail with 1.5 MB of text full of control bytes (six bytes
	// each in JSON) and 1.5 MB of HTML, and a small one
	text := strings.Repeat("\x01\x02ab\r\n", 250_000)
	html := strings.Repeat("<p>x & y</p>\r\n", 110_000)
	big := "From: a@example.org\r\nTo: support@example.org\r\nSubject: big\r\nMessage-ID: <big@example.org>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
		html + "\r\n--b--\r\n"
	for i, raw := range []string{big, testMail(2)} {
		if out, err := sink.Receive(ctx, fmt.Sprintf("pop3/U%d", i), int64(len(raw)), strings.NewReader(raw)); err != nil ||
			out.Status != mailsource.StatusReceived {
			t.Fatalf("Receive %d = %+v, %v", i, out, err)
		}
	}
	if err := sink.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, e := range mailEvents(t, store)[domain.MailReceivedName] {
		var m domain.MailReceived
		if err := json.Unmarshal(e.Payload, &m); err != nil {
			t.Fatal(err)
		}
		t.Logf("mail %s of %d bytes: event payload %d bytes", m.SourceKey, m.Size, len(e.Payload))
		if m.SourceKey == "pop3/U1" {
			// then a small mail keeps its bodies whole
			if strings.TrimSpace(m.TextBody) != "body 2" || m.TextBodyTruncated || m.HTMLBodyTruncated {
				t.Errorf("small mail: text %q, truncated %v/%v", m.TextBody, m.TextBodyTruncated, m.HTMLBodyTruncated)
			}
			continue
		}
		// then the big one's event holds a prefix of each body, bounded in
		// its JSON bytes, and says how big the whole is
		if len(e.Payload) > 2*domain.MailBodyPrefixBytes+4<<10 {
			t.Errorf("event payload is %d bytes, want at most two body prefixes of %d and the header fields", len(e.Payload), domain.MailBodyPrefixBytes)
		}
		if !m.TextBodyTruncated || !m.HTMLBodyTruncated {
			t.Errorf("truncated text %v, HTML %v; want both", m.TextBodyTruncated, m.HTMLBodyTruncated)
		}
		lf := func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
		if !strings.HasPrefix(lf(text), m.TextBody) || len(m.TextBody) < 10_000 || !strings.HasPrefix(lf(html), m.HTMLBody) ||
			len(m.HTMLBody) < 10_000 {
			t.Errorf("prefixes of %d and %d bytes are not the bodies' starts", len(m.TextBody), len(m.HTMLBody))
		}
		if m.TextBodySize < int64(len(m.TextBody))*10 || m.HTMLBodySize < int64(len(m.HTMLBody))*10 {
			t.Errorf("whole sizes %d and %d, want those of the bodies parsed", m.TextBodySize, m.HTMLBodySize)
		}
	}
}

func TestSink_DigestsNameTheCommittedBytes(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		ctx := context.Background()
		sink, _ := newTestSink(t, store, "acc1")
		small := testMail(1)
		large := testMail(2) + strings.Repeat("x", 2*smallMail)
		for key, raw := range map[string]string{"pop3/a": small, "pop3/b": large, "pop3/c": ""} {
			if _, err := sink.Receive(ctx, key, -1, strings.NewReader(raw)); err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.Oversize(ctx, "pop3/d", 1<<30); err != nil {
			t.Fatal(err)
		}
		if err := sink.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := sink.Digests(ctx, []string{"pop3/a", "pop3/b", "pop3/c", "pop3/d", "pop3/never"})
		if err != nil {
			t.Fatal(err)
		}
		hexOf := func(s string) string { return blobstore.RefFromDigest(sha256.Sum256([]byte(s))).Hex() }
		want := map[string]string{"pop3/a": hexOf(small), "pop3/b": hexOf(large), "pop3/c": hexOf("")}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Digests() = %v, want %v", got, want)
		}
	})
}

// switchFetcher returns an empty result, or err when set.
type switchFetcher struct{ err error }

func (f *switchFetcher) Poll(context.Context, mailsource.Sink) (mailsource.PollResult, error) {
	return mailsource.PollResult{}, f.err
}

func (f *switchFetcher) Check(context.Context) error { return nil }

func TestScheduler_RecordsOnlyPollsThatTellSomethingNew(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	blobs, _ := blobstore.NewFS(t.TempDir())
	clock := fixedNow()
	now := func() time.Time { clock = clock.Add(time.Second); return clock }
	s, err := NewScheduler(SchedulerConfig{Store: store, Blobs: blobs, Now: now,
		Accounts: func(context.Context) ([]Account, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	fetcher := &switchFetcher{}
	acc := Account{ID: "idle", Fetcher: fetcher}
	ctx := context.Background()
	events := func() int64 {
		t.Helper()
		n, err := store.StreamVersion(ctx, MailboxStream("idle"))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	failures := 0
	poll := func(times int) {
		t.Helper()
		for range times {
			if _, err := s.PollOnce(ctx, acc, failures); err != nil {
				failures++
			} else {
				failures = 0
			}
		}
	}

	poll(50)
	if n := events(); n != 1 {
		t.Errorf("50 idle polls appended %d events, want 1", n)
	}
	live, ok := s.Liveness("idle")
	if !ok || !live.CheckedAt.Equal(clock) || live.Failures != 0 {
		t.Errorf("Liveness() = %+v, %v; want the last poll's time %v and no failures", live, ok, clock)
	}

	fetcher.err = &mailsource.ServerError{Op: "login", Reply: "NO [UNAVAILABLE] Maintenance", Err: errors.New("refused")}
	poll(1)
	if n := events(); n != 2 {
		t.Errorf("a failing poll after them: %d events, want 2", n)
	}
	poll(10)
	if n := events(); n != 2 {
		t.Errorf("the same failure repeated: %d events, want still 2", n)
	}
	if live, _ := s.Liveness("idle"); live.Failures != 11 || !live.CheckedAt.Equal(clock) {
		t.Errorf("Liveness() = %+v, want 11 failures in a row at %v", live, clock)
	}

	fetcher.err = &mailsource.ServerError{Op: "login", Reply: "NO [AUTHENTICATIONFAILED] Authentication failed.", Err: errors.New("refused")}
	poll(1)
	if n := events(); n != 3 {
		t.Errorf("another failure: %d events, want 3", n)
	}
	fetcher.err = nil
	poll(3)
	if n := events(); n != 4 {
		t.Errorf("recovery and idle polls: %d events, want 4", n)
	}
	evs, err := store.ReadStream(ctx, MailboxStream("idle"), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var last domain.MailboxPolled
	if err := json.Unmarshal(evs[len(evs)-1].Payload, &last); err != nil {
		t.Fatal(err)
	}
	if last.Error != "" || last.Failures != 0 {
		t.Errorf("last recorded outcome = %+v, want the recovery", last)
	}
}
