package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// sseEvent is one event block of GET /api/v1/stream, or a heartbeat
// (Heartbeat true, ID only when it carries one).
type sseEvent struct {
	ID        string
	Type      string
	Data      loggedEvent
	Heartbeat bool
}

// liveStream is an open GET /api/v1/stream.
type liveStream struct {
	events chan sseEvent
	cancel context.CancelFunc
}

func openLiveStream(tb testing.TB, base, token, lastEventID string) *liveStream {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		tb.Fatalf("GET /api/v1/stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		cancel()
		tb.Fatalf("GET /api/v1/stream = %d", resp.StatusCode)
	}
	s := &liveStream{events: make(chan sseEvent, 10000), cancel: cancel}
	go s.read(tb, resp)
	tb.Cleanup(s.close)
	return s
}

func (s *liveStream) close() { s.cancel() }

// read parses the answer's blocks into s.events until it ends.
func (s *liveStream) read(tb testing.TB, resp *http.Response) {
	defer close(s.events)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var ev sseEvent
	var data string
	for sc.Scan() {
		line := sc.Text()
		field, value, _ := strings.Cut(line, ": ")
		switch {
		case line == "":
			if data != "" {
				if err := json.Unmarshal([]byte(data), &ev.Data); err != nil {
					tb.Errorf("stream data %q: %v", data, err)
				}
			}
			if data != "" || ev.Heartbeat {
				s.events <- ev
			}
			ev, data = sseEvent{}, ""
		case line == ": heartbeat":
			ev.Heartbeat = true
		case field == "id":
			ev.ID = value
		case field == "event":
			ev.Type = value
		case field == "data":
			data = value
		}
	}
}

// until reads events until one of type typ arrives and returns all events
// read (heartbeats left out).
func (s *liveStream) until(tb testing.TB, typ string) []sseEvent {
	tb.Helper()
	var out []sseEvent
	deadline := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				tb.Fatalf("stream ended before a %s event; got %d events", typ, len(out))
			}
			if ev.Heartbeat {
				continue
			}
			out = append(out, ev)
			if ev.Type == typ {
				return out
			}
		case <-deadline:
			tb.Fatalf("no %s event on the stream within 60s; got %d events", typ, len(out))
		}
	}
}

// TestStream_MailDeliveredIntoDovecotArrivesLive reads GET /api/v1/stream of
// a running serve while mails are delivered into a real Dovecot: the
// ticket and its articles arrive, a reconnect with Last-Event-ID gets
// exactly the events it missed, the heartbeat follows
// LEDGERDESK_STREAM_HEARTBEAT, and a shutdown ends open streams.
func TestStream_MailDeliveredIntoDovecotArrivesLive(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot")
	}
	t.Parallel()
	for _, kind := range []string{"embedded", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			dv := dovecottest.Start(t)
			dv.AddUser(t, "support", "pw1")
			env := map[string]string{envDataDir: t.TempDir(), envSecretKey: strings.Repeat("ef", 32), envAdminToken: e2eToken,
				envStreamHeartbeat: "1s"}
			if kind == "postgres" {
				env[envDatabaseURL] = pgtest.NewDatabase(t)
			}
			srv := startServe(t, env)
			api := apiClient{tb: t, base: srv.URL}
			host, portStr, _ := net.SplitHostPort(dv.IMAPAddr)
			port, _ := strconv.Atoi(portStr)
			api.must(http.MethodPost, "/api/v1/inbound-accounts", map[string]any{"name": "support", "protocol": "imap",
				"host": host, "port": port, "security": "none", "allow_plaintext_auth": true, "username": "support",
				"password": "pw1", "poll_interval_seconds": 1, "after_import": "delete", "enabled": true,
				"account_address": "support@desk.example", "create_unknown_users": true})

			live := openLiveStream(t, srv.URL, e2eToken, "")
			dv.Deliver(t, "support", e2eMail("Erika <erika@customer.example>", "support@desk.example", "Printer broken", "s1@customer.example"))
			got := live.until(t, domain.TicketCreatedName)
			created := got[len(got)-1]
			ticket := payload[domain.TicketCreated](t, created.Data)
			if ticket.Subject != "Printer broken" || created.ID != strconv.FormatInt(created.Data.Position, 10) {
				t.Errorf("TicketCreated on the stream = id %s %+v, want the printer ticket with its position as id", created.ID, ticket)
			}
			if !slices.ContainsFunc(got, func(e sseEvent) bool { return e.Type == domain.MailReceivedName }) {
				t.Errorf("no MailReceived before TicketCreated on an admin's stream: %v", types(got))
			}
			heartbeat(t, live)
			if n, _ := value(scrape(t, srv.URL, e2eToken), "ledgerdesk_stream_clients", map[string]string{}); n != 1 {
				t.Errorf("ledgerdesk_stream_clients = %v with one stream open, want 1", n)
			}
			live.close()

			// Missed while disconnected: a reply to the ticket.
			dv.Deliver(t, "support", e2eMail("erika@customer.example", "support@desk.example",
				fmt.Sprintf("Re: [Ticket#%d] Printer broken", ticket.Number), "s2@customer.example"))
			api.waitEvents(domain.MailAppendedName, 1)
			resumed := openLiveStream(t, srv.URL, e2eToken, created.ID)
			got = resumed.until(t, domain.MailAppendedName)
			// Exactly the streamed kinds of events of the log after TicketCreated, up to MailAppended.
			want := afterAndStreamed(t, api, created.Data.Position, got[len(got)-1].Data.Position)
			var ids []string
			for _, e := range got {
				ids = append(ids, e.ID)
			}
			if diff := cmp.Diff(want, ids); diff != "" {
				t.Errorf("resumed stream ids (-want +got):\n%s", diff)
			}

			// A shutdown ends the open stream instead of waiting for it.
			if code := srv.Stop(t); code != exitOK {
				t.Errorf("serve with an open stream exited %d, want %d; log:\n%s", code, exitOK, tail(srv.Log.String(), 2000))
			}
		})
	}
}

// afterAndStreamed lists the positions of the log after from up to and
// including to whose events an admin's stream carries.
func afterAndStreamed(tb testing.TB, api apiClient, from, to int64) []string {
	tb.Helper()
	var out []string
	started := false
	for _, e := range api.events() {
		if started && (strings.HasPrefix(e.Stream, domain.TicketStream("")) || e.Type == domain.MailReceivedName ||
			e.Type == domain.MailFailedName || e.Type == domain.MailSkippedName || e.Type == domain.MailboxPolledName) {
			out = append(out, strconv.FormatInt(e.Position, 10))
		}
		if e.Position == from {
			started = true
		}
		if e.Position == to {
			return out
		}
	}
	tb.Fatalf("position %d not in the log", to)
	return nil
}

func types(evs []sseEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// heartbeat waits for a heartbeat; with LEDGERDESK_STREAM_HEARTBEAT=1s one
// comes long before the 15 s default would send one.
func heartbeat(tb testing.TB, s *liveStream) {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-s.events:
			if ev.Heartbeat {
				return
			}
		case <-deadline:
			tb.Fatal("no heartbeat within 10s with LEDGERDESK_STREAM_HEARTBEAT=1s")
		}
	}
}
