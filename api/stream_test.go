package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/broadcast"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// sseBlock is one block of a text/event-stream: an event, or a comment.
type sseBlock struct {
	ID, Event, Data string
	Comments        []string
}

// sseStream reads a GET /stream answer block by block.
type sseStream struct {
	blocks chan sseBlock
	cancel context.CancelFunc
}

// openStream connects to /stream with token; lastEventID and query may be empty.
func (e *testEnv) openStream(tb testing.TB, token, lastEventID, query string) *sseStream {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/api/v1/stream"+query, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		tb.Fatalf("GET /stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		_ = resp.Body.Close()
		cancel()
		tb.Fatalf("GET /stream = %d %s, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{blocks: make(chan sseBlock, 1000), cancel: cancel}
	go s.read(resp)
	tb.Cleanup(s.close)
	return s
}

// close ends the request; the reader goroutine then closes the body.
func (s *sseStream) close() { s.cancel() }

// events collects n event blocks (blocks with data), failing after the deadline.
func (s *sseStream) events(tb testing.TB, n int) []sseBlock {
	tb.Helper()
	var out []sseBlock
	deadline := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case b, ok := <-s.blocks:
			if !ok {
				tb.Fatalf("stream ended after %d events, want %d", len(out), n)
			}
			if b.Data != "" {
				out = append(out, b)
			}
		case <-deadline:
			tb.Fatalf("got %d events before the deadline, want %d: %+v", len(out), n, out)
		}
	}
	return out
}

// withLive starts a broadcaster over the env's store.
func withLive(tb testing.TB, store eventstore.Store, heartbeat time.Duration) envOption {
	b := broadcast.New(store.(broadcast.Store), broadcast.Options{PollInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Run(ctx)
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return func(o *Options, _ projections.Reader) { o.Live = Live{Log: b, Heartbeat: heartbeat} }
}

// withEndedStreams wires a live log whose streams end right after their
// first lines, as in a shutdown: a request to /stream then ends.
func withEndedStreams(tb testing.TB) envOption {
	return func(o *Options, _ projections.Reader) {
		withLive(tb, o.Store, time.Hour)(o, nil)
		closed := make(chan struct{})
		close(closed)
		o.Live.Closing = closed
	}
}

// newStreamEnv is newEnv with the live stream wired.
func newStreamEnv(tb testing.TB, b backend, heartbeat time.Duration) *testEnv {
	tb.Helper()
	store, reader := b.open(tb)
	opened := backend{name: b.name, open: func(testing.TB) (eventstore.Store, projections.Reader) { return store, reader }}
	return newEnv(tb, opened, withLive(tb, store, heartbeat))
}

func appendEvent(tb testing.TB, store eventstore.Store, stream string, ev domain.Event) int64 {
	tb.Helper()
	payload, err := json.Marshal(ev)
	if err != nil {
		tb.Fatal(err)
	}
	res, err := store.Append(context.Background(), eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{{Type: ev.EventName(), SchemaVersion: 1, Payload: payload}}})
	if err != nil {
		tb.Fatal(err)
	}
	return res.LastPosition
}

func decodeItem(tb testing.TB, b sseBlock) eventItem {
	tb.Helper()
	var it eventItem
	if err := json.Unmarshal([]byte(b.Data), &it); err != nil {
		tb.Fatalf("data of %s: %v", b.Event, err)
	}
	if fmt.Sprint(it.Position) != b.ID || it.Type != b.Event {
		tb.Errorf("block id %s event %s, data says position %d type %s", b.ID, b.Event, it.Position, it.Type)
	}
	return it
}

func TestStream_EachRoleGetsWhatItMaySee(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			env := newStreamEnv(t, b, time.Hour)
			streams := map[domain.Role]*sseStream{}
			for _, role := range rolesAll {
				streams[role] = env.openStream(t, env.tokens[role], "", "")
			}
			env.problem(t, http.MethodGet, "/api/v1/stream", env.tokens[domain.RoleMetrics], nil, http.StatusForbidden)
			// Not streamed: an account with its password, for any role.
			env.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", env.tokens[domain.RoleAdmin], account("live"), http.StatusCreated, nil)
			appendEvent(t, env.store, "mail-m1", domain.MailReceived{MailID: "m1", AccountID: "acc1", Subject: "Printer",
				TextBody: "plain words", HTMLBody: "<script>alert(1)</script>"})
			appendEvent(t, env.store, domain.TicketStream("t1"), domain.TicketCreated{TicketID: "t1", Number: 1001, Subject: "Printer", AccountID: "acc1"})
			appendEvent(t, env.store, domain.TicketStream("t1"), domain.NoteAdded{TicketID: "t1", NoteID: "n1", Text: "internal note"})
			last := appendEvent(t, env.store, "mailbox-acc1", domain.MailboxPolled{AccountID: "acc1", Fetched: 1})

			want := map[domain.Role][]string{
				domain.RoleAdmin:   {"MailReceived", "TicketCreated", "NoteAdded", "MailboxPolled"},
				domain.RoleAuditor: {"MailReceived", "TicketCreated", "NoteAdded", "MailboxPolled"},
				domain.RoleAgent:   {"TicketCreated", "NoteAdded", "MailboxPolled"},
				domain.RoleAnalyst: {"TicketCreated", "NoteAdded", "MailboxPolled"},
			}
			for role, s := range streams {
				blocks := s.events(t, len(want[role]))
				var types []string
				for _, bl := range blocks {
					it := decodeItem(t, bl)
					types = append(types, it.Type)
					raw := bl.Data
					if strings.Contains(raw, "s3cret-live") || strings.Contains(raw, "<script>") {
						t.Errorf("%s got %s with a secret or raw HTML: %s", role, it.Type, raw)
					}
					switch {
					case it.Type == domain.MailReceivedName && !slices.Equal(it.Omitted, []string{"html_body"}):
						t.Errorf("%s: MailReceived omitted = %v, want [html_body]", role, it.Omitted)
					case role == domain.RoleAnalyst && it.Type != domain.MailboxPolledName && (string(it.Payload) != "null" || strings.Contains(raw, "internal note")):
						t.Errorf("analyst got the payload of %s: %s", it.Type, raw)
					case role != domain.RoleAnalyst && it.Type == domain.NoteAddedName && !strings.Contains(raw, "internal note"):
						t.Errorf("%s: NoteAdded without its body: %s", role, raw)
					}
				}
				if diff := cmp.Diff(want[role], types); diff != "" {
					t.Errorf("%s stream types (-want +got):\n%s", role, diff)
				}
				if got := blocks[len(blocks)-1].ID; got != fmt.Sprint(last) {
					t.Errorf("%s: last id %s, want the MailboxPolled position %d", role, got, last)
				}
			}
		})
	}
}

func TestStream_ResumesWithLastEventIDAndAfter(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			env := newStreamEnv(t, b, time.Hour)
			token := env.tokens[domain.RoleAgent]
			first := env.openStream(t, token, "", "")
			polled := func(i int) int64 {
				return appendEvent(t, env.store, "mailbox-acc1", domain.MailboxPolled{AccountID: "acc1", Fetched: i})
			}
			for i := range 3 {
				polled(i)
			}
			got := first.events(t, 3)
			first.close()
			var missed []string
			for i := 3; i < 8; i++ {
				missed = append(missed, fmt.Sprint(polled(i)))
			}
			for name, s := range map[string]*sseStream{
				"Last-Event-ID": env.openStream(t, token, got[2].ID, ""),
				"after":         env.openStream(t, token, "", "?after="+got[2].ID),
				// Last-Event-ID wins over after.
				"both": env.openStream(t, token, got[2].ID, "?after="+got[0].ID),
			} {
				var ids []string
				for _, bl := range s.events(t, 5) {
					ids = append(ids, bl.ID)
				}
				if diff := cmp.Diff(missed, ids); diff != "" {
					t.Errorf("resumed with %s (-want +got):\n%s", name, diff)
				}
			}
			for _, tc := range []struct{ query, lastEventID, field string }{
				{"", "999999", "Last-Event-ID"},
				{"", "x", "Last-Event-ID"},
				{"?after=999999", "", "after"},
				{"?after=x", "", "after"},
			} {
				p := env.problem(t, http.MethodGet, "/api/v1/stream"+tc.query, token, nil, http.StatusBadRequest, "Last-Event-ID", tc.lastEventID)
				if len(p.Errors) != 1 || p.Errors[0].Field != tc.field {
					t.Errorf("stream%s with Last-Event-ID %q: errors %+v, want one naming %s", tc.query, tc.lastEventID, p.Errors, tc.field)
				}
			}
		})
	}
}

func TestStream_HeartbeatMovesTheIDPastHiddenEvents(t *testing.T) {
	t.Parallel()
	env := newStreamEnv(t, backends()[0], 50*time.Millisecond)
	s := env.openStream(t, env.tokens[domain.RoleAgent], "", "")
	hidden := appendEvent(t, env.store, "mail-m1", domain.MailReceived{MailID: "m1", AccountID: "acc1"})
	deadline := time.After(30 * time.Second)
	for {
		select {
		case b := <-s.blocks:
			if b.Data != "" {
				t.Fatalf("agent got %s, which only auditors and admins see", b.Event)
			}
			if slices.Contains(b.Comments, "heartbeat") && b.ID == fmt.Sprint(hidden) {
				return
			}
		case <-deadline:
			t.Fatalf("no heartbeat carrying id %d", hidden)
		}
	}
}

func TestStream_WithoutTheLiveLogAnswers503(t *testing.T) {
	t.Parallel()
	env := newEnv(t, backends()[0])
	env.problem(t, http.MethodGet, "/api/v1/stream", env.tokens[domain.RoleAdmin], nil, http.StatusServiceUnavailable)
}

// read parses the answer's blocks into s.blocks until it ends.
func (s *sseStream) read(resp *http.Response) {
	defer close(s.blocks)
	defer func() { _ = resp.Body.Close() }()
	r := bufio.NewReader(resp.Body)
	var b sseBlock
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		field, value, _ := strings.Cut(line, ": ")
		switch {
		case line == "":
			s.blocks <- b
			b = sseBlock{}
		case strings.HasPrefix(line, ":"):
			b.Comments = append(b.Comments, strings.TrimPrefix(line, ": "))
		case field == "id":
			b.ID = value
		case field == "event":
			b.Event = value
		case field == "data":
			b.Data = value
		}
	}
}

// TestStream_OutlivesTheServersTimeouts runs the stream on a server whose
// read and write timeouts are far shorter than the stream: it must go on
// delivering events after both have passed (serve's are 1 and 2 minutes).
func TestStream_OutlivesTheServersTimeouts(t *testing.T) {
	t.Parallel()
	store, _ := openEmbedded(t)
	o := Options{Store: store, AdminToken: bootstrapToken}
	withLive(t, store, 100*time.Millisecond)(&o, nil)
	srv := httptest.NewUnstartedServer(New(o))
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	env := &testEnv{url: srv.URL}
	s := env.openStream(t, bootstrapToken, "", "")
	time.Sleep(time.Second) // past both timeouts, with heartbeats meanwhile
	pos := appendEvent(t, store, "mailbox-acc1", domain.MailboxPolled{AccountID: "acc1"})
	if got := s.events(t, 1)[0].ID; got != fmt.Sprint(pos) {
		t.Errorf("event after the timeouts has id %s, want %d", got, pos)
	}
}

// streamCounts records the StreamObserver calls.
type streamCounts struct {
	mu                     sync.Mutex
	opened, closed, lagged int
}

func (s *streamCounts) StreamOpened() { s.mu.Lock(); s.opened++; s.mu.Unlock() }
func (s *streamCounts) StreamClosed(lagged bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed++
	if lagged {
		s.lagged++
	}
}

// TestStream_ASlowClientIsCutOffWithAResumablePosition lets one client stop
// reading while large events pass: its stream ends with event lagged, the
// writer and a reading client go on, and a reconnect from the lagged id
// gets exactly the rest.
func TestStream_ASlowClientIsCutOffWithAResumablePosition(t *testing.T) {
	t.Parallel()
	store, _ := openEmbedded(t)
	live := broadcast.New(store.(broadcast.Store), broadcast.Options{BufferEvents: 8, PollInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = live.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	counts := &streamCounts{}
	srv := httptest.NewServer(New(Options{Store: store, AdminToken: bootstrapToken,
		Live: Live{Log: live, Heartbeat: time.Hour, Observer: counts}}))
	t.Cleanup(srv.Close)
	env := &testEnv{url: srv.URL}

	// The slow client reads nothing until the events have passed: they pile
	// up in the sockets until its handler can no longer write.
	slowResp := unreadStream(t, srv.URL)
	defer func() { _ = slowResp.Body.Close() }() // read closes it too; a second Close does nothing
	slow := &sseStream{blocks: make(chan sseBlock, 1000), cancel: func() {}}
	fast := env.openStream(t, bootstrapToken, "", "")
	big := strings.Repeat("x", 256<<10)
	var want []string
	for i := range 60 {
		want = append(want, fmt.Sprint(appendEvent(t, store, "mailbox-acc1", domain.MailboxPolled{AccountID: "acc1", Fetched: i, ServerReply: big})))
		fast.events(t, 1) // the fast client keeps up, one event at a time
	}
	go slow.read(slowResp)
	var got []string
	lagged := ""
	for b := range slow.blocks {
		if b.Event == "lagged" {
			lagged = b.ID
			break
		}
		if b.Data != "" {
			got = append(got, b.ID)
		}
	}
	if lagged == "" || len(got) == len(want) {
		t.Fatalf("the slow client got %d of %d events and no lagged event", len(got), len(want))
	}
	if lagged != got[len(got)-1] {
		t.Errorf("lagged id %s, want the last event it got, %s", lagged, got[len(got)-1])
	}
	resumed := env.openStream(t, bootstrapToken, lagged, "")
	for _, b := range resumed.events(t, len(want)-len(got)) {
		got = append(got, b.ID)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events before the cut and after the resume (-want +got):\n%s", diff)
	}
	counts.mu.Lock()
	defer counts.mu.Unlock()
	if counts.opened != 3 || counts.lagged != 1 {
		t.Errorf("observer saw %d streams opened, %d cut off; want 3 and 1", counts.opened, counts.lagged)
	}
}

// unreadStream opens GET /stream as admin and leaves the answer unread.
func unreadStream(tb testing.TB, base string) *http.Response {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+bootstrapToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	return resp
}
