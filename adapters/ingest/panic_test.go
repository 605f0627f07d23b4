package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
)

// noSummary has no entries: reading through one of its nil pointers is
// the bug the tests below inject.
var noSummary = map[string]*mimeparse.Summary{}

// lockedBuffer is a log destination that tests can read while loggers write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestSink_AParserPanicFailsThatMailOnly(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	ctx := context.Background()
	blobs, err := blobstore.NewFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	sink, err := NewSink(SinkConfig{Store: store, Blobs: blobs, Limits: mimeparse.DefaultLimits(), AccountID: "acc1",
		Now: fixedNow, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// A parser bug that one hostile mail meets: a nil pointer.
	sink.parseMail = func(r io.Reader, lim mimeparse.Limits) (mimeparse.Summary, error) {
		raw, err := io.ReadAll(r)
		if err != nil {
			return mimeparse.Summary{}, err
		}
		if bytes.Contains(raw, []byte("Subject: boom")) {
			return *noSummary["boom"], nil
		}
		return mimeparse.ParseBytes(raw, lim)
	}
	boom := "From: a@example.com\r\nSubject: boom\r\nMessage-ID: <boom@x>\r\n\r\nx\r\n"
	bigBoom := boom + strings.Repeat("y", smallMail*2) + "\r\n" // parsed from its loose blob
	for _, m := range []struct {
		key, raw string
		want     mailsource.Status
	}{
		{"pop3/boom", boom, mailsource.StatusFailed},
		{"pop3/big-boom", bigBoom, mailsource.StatusFailed},
		{"pop3/next", testMail(1), mailsource.StatusReceived},
	} {
		out, err := sink.Receive(ctx, m.key, int64(len(m.raw)), strings.NewReader(m.raw))
		if err != nil {
			t.Fatalf("Receive(%s) error = %v, want the mail recorded", m.key, err)
		}
		if out.Status != m.want {
			t.Fatalf("Receive(%s) = %+v, want status %v", m.key, out, m.want)
		}
	}
	if err := sink.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	evs := mailEvents(t, store)
	if len(evs[domain.MailFailedName]) != 2 || len(evs[domain.MailReceivedName]) != 1 {
		t.Fatalf("events = %d MailFailed, %d MailReceived; want 2 and 1",
			len(evs[domain.MailFailedName]), len(evs[domain.MailReceivedName]))
	}
	for _, e := range evs[domain.MailFailedName] {
		var f domain.MailFailed
		if err := json.Unmarshal(e.Payload, &f); err != nil {
			t.Fatal(err)
		}
		if want := "parser panic: runtime error: invalid memory address or nil pointer dereference"; f.Reason != want || f.BlobRef == "" {
			t.Errorf("MailFailed = %+v, want reason %q and the mail's blob kept", f, want)
		}
	}
	log := logs.String()
	for _, want := range []string{"mail parser panicked", `"source_key":"pop3/boom"`, "goroutine ", "panic_test.go"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// panickingFetcher panics in its first poll, as a fetcher bug met by one
// mailbox's odd reply would, and polls normally after that.
type panickingFetcher struct{ scriptedFetcher }

func (f *panickingFetcher) Poll(ctx context.Context, sink mailsource.Sink) (mailsource.PollResult, error) {
	if f.count() == 0 {
		f.mu.Lock()
		f.polls++
		f.mu.Unlock()
		_ = noSummary["uid"].Subject
	}
	return f.scriptedFetcher.Poll(ctx, sink)
}

func TestScheduler_APanickingPollIsAFailedPoll(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	f := &panickingFetcher{}
	s, err := NewScheduler(SchedulerConfig{Store: store, Blobs: blobs, Now: fixedNow, Refresh: 10 * time.Millisecond,
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
		Accounts: addedAfterStart(Account{ID: "odd", PollInterval: time.Hour, Fetcher: f})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	outcomes := func() int {
		n, err := store.StreamVersion(context.Background(), MailboxStream("odd"))
		if err != nil {
			return 0
		}
		return int(n)
	}
	waitFor(t, func() bool { return outcomes() == 1 })
	if err := s.PollNow("odd"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return outcomes() == 2 })
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run stopped with %v, want the cancellation", err)
	}

	evs, err := store.ReadStream(context.Background(), MailboxStream("odd"), 1, 0)
	if err != nil || len(evs) != 2 {
		t.Fatalf("poll outcomes = %d, %v; want 2", len(evs), err)
	}
	var first, second domain.MailboxPolled
	_ = json.Unmarshal(evs[0].Payload, &first)
	_ = json.Unmarshal(evs[1].Payload, &second)
	if !strings.Contains(first.Error, "poll panic: runtime error: invalid memory address") || first.Failures != 1 {
		t.Errorf("first outcome = %+v, want a failed poll naming the panic", first)
	}
	if second.Error != "" || second.Fetched != 1 {
		t.Errorf("second outcome = %+v, want a good poll", second)
	}
	if log := logs.String(); !strings.Contains(log, "poll panicked") || !strings.Contains(log, "goroutine ") {
		t.Errorf("log lacks the panic and its stack:\n%s", log)
	}
}
