package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
