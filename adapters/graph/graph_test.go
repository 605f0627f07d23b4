package graph_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		value  string
		want   time.Duration
		wantOK bool
	}{
		{name: "seconds are a wait", value: "7", want: 7 * time.Second, wantOK: true},
		{name: "space around the seconds is ignored", value: " 30 ", want: 30 * time.Second, wantOK: true},
		{name: "zero seconds means at once", value: "0", want: 0, wantOK: true},
		{name: "an HTTP date is the wait until then", value: "Mon, 02 Mar 2026 10:00:20 GMT", want: 20 * time.Second, wantOK: true},
		{name: "a date in the past means at once", value: "Mon, 02 Mar 2026 09:00:00 GMT", want: 0, wantOK: true},
		{name: "a wait beyond a day is cut to a day", value: "999999999999999", want: graph.MaxRetryAfter, wantOK: true},
		{name: "a date beyond a day is cut to a day", value: "Mon, 09 Mar 2026 10:00:00 GMT", want: graph.MaxRetryAfter, wantOK: true},
		{name: "absent is no Retry-After", value: "", want: 0, wantOK: false},
		{name: "negative seconds are no Retry-After", value: "-5", want: 0, wantOK: false},
		{name: "anything else is no Retry-After", value: "soon", want: 0, wantOK: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := graph.ParseRetryAfter(tc.value, now)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %v, %v, want %v, %v", tc.value, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestDecodeError(t *testing.T) {
	t.Parallel()
	const body = `{"error":{"code":"ErrorItemNotFound","message":"The specified object was not found in the store."}}`
	tests := []struct {
		name        string
		contentType string
		body        string
		want        graph.ErrorAnswer
		wantOK      bool
	}{
		{name: "Graph's error JSON gives code and message", contentType: "application/json; charset=utf-8", body: body,
			want: graph.ErrorAnswer{Code: "ErrorItemNotFound", Message: "The specified object was not found in the store."}, wantOK: true},
		{name: "an answer without a content type is read as JSON", body: body,
			want: graph.ErrorAnswer{Code: "ErrorItemNotFound", Message: "The specified object was not found in the store."}, wantOK: true},
		{name: "a structured +json type is JSON", contentType: "application/problem+json", body: `{"error":{"code":"X"}}`,
			want: graph.ErrorAnswer{Code: "X"}, wantOK: true},
		{name: "an HTML page is not Graph's", contentType: "text/html", body: body},
		{name: "JSON without an error code is not Graph's error", contentType: "application/json", body: `{"error":{"message":"no"}}`},
		{name: "undecodable JSON is not Graph's error", contentType: "application/json", body: `<html>`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := graph.DecodeError(tc.contentType, []byte(tc.body))
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("DecodeError(%q, %q) = %+v, %v, want %+v, %v", tc.contentType, tc.body, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestMailboxLimiter_Acquire(t *testing.T) {
	t.Parallel()
	l := graph.NewMailboxLimiter(0)
	var inFlight, peak atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		// the same mailbox, spelled as each adapter may spell it
		base, box := "https://graph.example", "support@contoso.example"
		if i%2 == 1 {
			base, box = "HTTPS://GRAPH.EXAMPLE/", "Support@Contoso.example"
		}
		wg.Go(func() {
			release, err := l.Acquire(context.Background(), base, box)
			if err != nil {
				t.Errorf("Acquire() error = %v", err)
				return
			}
			defer release()
			n := inFlight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(2 * time.Millisecond)
			inFlight.Add(-1)
		})
	}
	wg.Wait()
	if p := peak.Load(); p != graph.MailboxConcurrency {
		t.Errorf("peak requests to one mailbox = %d, want %d", p, graph.MailboxConcurrency)
	}
}

func TestMailboxLimiter_Acquire_mailboxesAreApart(t *testing.T) {
	t.Parallel()
	l := graph.NewMailboxLimiter(1)
	ctx := context.Background()
	release, err := l.Acquire(ctx, "https://graph.example", "a@contoso.example")
	if err != nil {
		t.Fatalf("Acquire(a) error = %v", err)
	}
	other, err := l.Acquire(ctx, "https://graph.example", "b@contoso.example")
	if err != nil {
		t.Fatalf("Acquire(b) while a is busy error = %v", err)
	}
	other()
	release()
	release() // a second call frees nothing more
	done, cancel := context.WithCancel(ctx)
	cancel()
	first, err := l.Acquire(ctx, "https://graph.example", "a@contoso.example")
	if err != nil {
		t.Fatalf("Acquire(a) after release error = %v", err)
	}
	defer first()
	if _, err := l.Acquire(done, "https://graph.example", "a@contoso.example"); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire() of a full mailbox with an ended context = %v, want context.Canceled", err)
	}
}
