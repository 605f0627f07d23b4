package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
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
			for _, role := range domain.Roles {
				streams[role] = env.openStream(t, env.tokens[role], "", "")
			}
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
			resp, _ := env.do(t, http.MethodGet, "/api/v1/stream", token, nil, "Last-Event-ID", "999999")
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("Last-Event-ID of no event = %d, want 400", resp.StatusCode)
			}
			resp, _ = env.do(t, http.MethodGet, "/api/v1/stream?after=x", token, nil)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("after=x = %d, want 400", resp.StatusCode)
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
