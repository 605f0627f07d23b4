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
		Logger: slog.New(slog.DiscardHandler),
		Accounts: func(context.Context) ([]Account, error) {
			return []Account{{ID: "good", PollInterval: time.Hour, Fetcher: good}, {ID: "bad", PollInterval: time.Hour, Fetcher: bad}}, nil
		}})
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
