package ticketing

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// The saga's guarantees for graph accounts, against a fake sendMail
// endpoint on loopback: the same mails as over SMTP, raw, once, retried and
// recorded alike.

const (
	graphConnection = "conn-graph"
	graphMailbox    = "desk-out@desk.example"
)

// graphRequest is what the fake sendMail endpoint received.
type graphRequest struct {
	Path, Auth, ContentType, Prefer string
	MIME                            []byte
	Base64Err                       error
	At                              time.Time
}

// graphAnswer is one scripted answer.
type graphAnswer struct {
	status int
	header map[string]string
	body   string
}

func graphError(status int, code, message string, header ...string) graphAnswer {
	h := map[string]string{"Content-Type": "application/json", "request-id": "req-" + code}
	for i := 0; i+1 < len(header); i += 2 {
		h[header[i]] = header[i+1]
	}
	return graphAnswer{status: status, header: h,
		body: fmt.Sprintf(`{"error":{"code":%q,"message":%q,"innerError":{"date":"2026-12-01T09:00:00"}}}`, code, message)}
}

// fakeGraph answers sendMail from a script, then with 202 Accepted, and
// records every request.
type fakeGraph struct {
	srv    *httptest.Server
	mu     sync.Mutex
	script []graphAnswer
	reqs   []graphRequest
}

func startFakeGraph(t *testing.T, script ...graphAnswer) *fakeGraph {
	t.Helper()
	f := &fakeGraph{script: script}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		raw, err := base64.StdEncoding.DecodeString(string(data))
		f.mu.Lock()
		n := len(f.reqs) + 1
		f.reqs = append(f.reqs, graphRequest{Path: r.URL.EscapedPath(), Auth: r.Header.Get("Authorization"),
			ContentType: r.Header.Get("Content-Type"), Prefer: r.Header.Get("Prefer"), MIME: raw, Base64Err: err, At: time.Now()})
		a := graphAnswer{status: http.StatusAccepted, header: map[string]string{"request-id": fmt.Sprintf("req-%d", n)}}
		if len(f.script) > 0 {
			a, f.script = f.script[0], f.script[1:]
		}
		f.mu.Unlock()
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeGraph) requests() []graphRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]graphRequest(nil), f.reqs...)
}

// graphTokens stands in for the OAuth manager: tok-1, and tok-2 once tok-1
// was refused. It records what it was asked for.
type graphTokens struct {
	mu       sync.Mutex
	gen      int
	asked    []string // connection/protocol
	renewals int
}

func (g *graphTokens) access(_ context.Context, connectionID, protocol string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asked = append(g.asked, connectionID+"/"+protocol)
	return fmt.Sprintf("tok-%d", g.gen+1), nil
}

func (g *graphTokens) renew(_ context.Context, connectionID, protocol, rejected string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asked = append(g.asked, connectionID+"/"+protocol)
	if rejected == fmt.Sprintf("tok-%d", g.gen+1) {
		g.gen++
		g.renewals++
	}
	return fmt.Sprintf("tok-%d", g.gen+1), nil
}

// newGraphHarness is newHarness with a graph outgoing account on f, whose
// sent_folder_account_id names an IMAP account on a listener that counts
// connections (the copy Graph makes itself must not be made again).
func newGraphHarness(t *testing.T, store eventstore.Store, f *fakeGraph, tune func(*OutboundOptions)) (*harness, *graphTokens, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var imapConns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			imapConns.Add(1)
			_ = c.Close()
		}
	}()
	account := domain.InboundAccount{ID: "acc", Name: "support", Enabled: true, Protocol: "imap", Host: "mail.example",
		Username: "support", AccountAddress: "support@desk.example", SenderAddress: "support@desk.example", SenderName: "Desk Support",
		AutoReplyTemplate: "default"}.WithDefaults()
	appendEvent(t, store, InboundAccountsStream, eventstore.NoStream, "acc-1", domain.InboundAccountCreated{Account: account, Actor: "test"})
	sentBox := domain.InboundAccount{ID: "sent-acc", Name: "sent", Enabled: false, Protocol: "imap", Host: "127.0.0.1",
		Port: ln.Addr().(*net.TCPAddr).Port, Security: "none", Username: "desk-out", Password: "sealed:pw", AllowPlaintextAuth: true}.WithDefaults()
	appendEvent(t, store, InboundAccountsStream, 1, "acc-2", domain.InboundAccountCreated{Account: sentBox, Actor: "test"})
	out := domain.OutboundAccount{ID: "out-1", Name: "graph", Enabled: true, Protocol: domain.OutboundGraph, Mailbox: graphMailbox,
		OAuthConnectionID: graphConnection, SenderAddress: outSender, SenderName: "Desk",
		SentFolderAccountID: "sent-acc", SentFolder: "Sent"}.WithDefaults()
	ev, err := domain.DecideCreateOutboundAccount(domain.OutboundAccounts{}, out, "test")
	if err != nil {
		t.Fatal(err)
	}
	appendEvent(t, store, OutboundAccountsStream, eventstore.NoStream, "out-1", ev[0])
	tokens := &graphTokens{}
	h := startHarness(t, store, nil, func(o *OutboundOptions) {
		o.AccessToken, o.RenewAccessToken = tokens.access, tokens.renew
		o.GraphBaseURL = func(_ context.Context, connectionID string) (string, error) {
			if connectionID != graphConnection {
				return "", fmt.Errorf("no such OAuth connection: %s", connectionID)
			}
			return f.srv.URL, nil
		}
		if tune != nil {
			tune(o)
		}
	})
	return h, tokens, &imapConns
}

// attempts lists a mail's outcomes as sent#attempt or
// failed#attempt/code/permanent/stage.
func attempts(t *testing.T, store eventstore.Store, outgoingMailID string) []string {
	t.Helper()
	var out []string
	for _, e := range outcomes(t, store, outgoingMailID) {
		switch e := e.(type) {
		case domain.OutboundMailSent:
			out = append(out, fmt.Sprintf("sent#%d", e.Attempt))
		case domain.OutboundMailFailed:
			out = append(out, fmt.Sprintf("failed#%d/%d/%v/%s", e.Attempt, e.Code, e.Permanent, e.Stage))
		}
	}
	return out
}

func TestOutbound_GraphSendsTheRawMailOnce(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		f := startFakeGraph(t)
		h, tokens, imapConns := newGraphHarness(t, store, f, nil)
		// given a customer's mail that opens a ticket, and one from our own
		// sending address
		m := mail(1, "Drucker brennt", func(m *domain.MailReceived) { m.References = []string{"older@customer.example"} })
		own := mail(2, "loop", func(m *domain.MailReceived) { m.From.Email = outSender })
		appendMails(t, store, []domain.MailReceived{m, own})
		// then one auto-reply goes to sendMail, raw, with our headers
		h.waitStates(map[string]int{"sent": 1, "suppressed": 1})
		reqs := f.requests()
		if len(reqs) != 1 {
			t.Fatalf("sendMail got %d requests, want 1", len(reqs))
		}
		r := reqs[0]
		if d := cmp.Diff([]string{"/v1.0/users/" + graphMailbox + "/sendMail", "Bearer tok-1", "text/plain", `IdType="ImmutableId"`, "<nil>"},
			[]string{r.Path, r.Auth, r.ContentType, r.Prefer, fmt.Sprint(r.Base64Err)}); d != "" {
			t.Errorf("request (-want +got):\n%s", d)
		}
		hdr, body := parseMail(t, r.MIME)
		subject, _ := hdr.Subject()
		irt, _ := hdr.MsgIDList("In-Reply-To")
		refs, _ := hdr.MsgIDList("References")
		mid, _ := hdr.MessageID()
		from, _ := hdr.AddressList("From")
		to, _ := hdr.AddressList("To")
		outID := domain.OutgoingMailIDFor(domain.AutoMailNewTicket, m.MailID)
		wantMID := domain.OutgoingMessageID(domain.TicketIDFor(m.MailID), outID, "", testKey)
		gotHdr := []string{subject, strings.Join(irt, ","), strings.Join(refs, ","), mid, from[0].Address, to[0].Address,
			hdr.Get("Auto-Submitted"), hdr.Get("X-Auto-Response-Suppress")}
		wantHdr := []string{"[Ticket#1001] Drucker brennt", "m1@customer.example", "older@customer.example,m1@customer.example", wantMID,
			"support@desk.example", "erika@customer.example", "auto-replied", "All"}
		if d := cmp.Diff(wantHdr, gotHdr); d != "" {
			t.Errorf("headers of the MIME posted (-want +got):\n%s", d)
		}
		if !strings.Contains(body, "Ticketnummer 1001") || !strings.Contains(body, "ticket number 1001") {
			t.Errorf("body does not name the ticket number:\n%s", body)
		}
		if d := cmp.Diff([]string{graphConnection + "/" + domain.ProtocolGraph}, tokens.asked); d != "" {
			t.Errorf("tokens asked for (-want +got):\n%s", d)
		}
		evs := outcomes(t, store, outID)
		sent, ok := evs[0].(domain.OutboundMailSent)
		if len(evs) != 1 || !ok || sent.Attempt != 1 || sent.MessageID != wantMID || sent.AccountID != "out-1" || sent.Reply != "202 Accepted (request-id req-1)" {
			t.Errorf("outcomes = %+v, want one OutboundMailSent at attempt 1 with Graph's 202 and request-id", evs)
		}
		ownOut := outcomes(t, store, domain.OutgoingMailIDFor(domain.AutoMailNewTicket, own.MailID))
		if len(ownOut) != 1 || ownOut[0].(domain.OutboundMailSuppressed).Code != domain.SuppressOwnAddress {
			t.Errorf("mail from our own address: outcomes %+v, want suppressed with %s", ownOut, domain.SuppressOwnAddress)
		}

		// when the queued event is delivered to the saga again
		tevs, err := store.ReadStream(context.Background(), domain.TicketStream(domain.TicketIDFor(m.MailID)), 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range tevs {
			if re.Type == domain.AutoReplyQueuedName {
				if err := store.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error { return h.saga.Handle(ctx, tx, re) }); err != nil {
					t.Fatal(err)
				}
			}
		}
		// then nothing more is sent, and no copy went to an IMAP Sent
		// folder: sendMail saved one in the mailbox's Sent Items
		time.Sleep(100 * time.Millisecond)
		h.waitStates(map[string]int{"sent": 1, "suppressed": 1})
		h.stop()
		time.Sleep(50 * time.Millisecond)
		if n := len(f.requests()); n != 1 {
			t.Errorf("sendMail got %d requests after a re-delivery, want 1", n)
		}
		if n := imapConns.Load(); n != 0 {
			t.Errorf("%d connections to the Sent folder's IMAP server, want 0 for a graph account", n)
		}
	})
}

func TestOutbound_GraphFailuresAndRetries(t *testing.T) {
	t.Parallel()
	const invalid = "At least one recipient isn't valid., Recipient 'erika@customer.example' is not resolved. All recipients must be resolved before a message can be submitted."
	tests := []struct {
		name      string
		script    []graphAnswer
		tune      func(*OutboundOptions)
		want      []string
		wantState map[string]int
		wantAuth  []string
		check     func(t *testing.T, evs []domain.Event, reqs []graphRequest)
	}{
		{
			name: "a 429 waits for its Retry-After, then the mail is sent",
			script: []graphAnswer{graphError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
				"Retry-After", "1")},
			// a back-off far below the Retry-After, so the wait is Graph's
			tune:      func(o *OutboundOptions) { o.MaxBackoff = 10 * time.Second },
			want:      []string{"failed#1/429/false/send", "sent#2"},
			wantState: map[string]int{"sent": 1},
			wantAuth:  []string{"Bearer tok-1", "Bearer tok-1"},
			check: func(t *testing.T, evs []domain.Event, reqs []graphRequest) {
				f := evs[0].(domain.OutboundMailFailed)
				if !strings.HasPrefix(f.Reply, "ApplicationThrottled: Application is over its MailboxConcurrency limit.") {
					t.Errorf("failure reply = %q, want Graph's code and message", f.Reply)
				}
				if wait := f.NextAttemptAt.Sub(f.At); wait < time.Second {
					t.Errorf("next attempt %s after the 429, want at least its Retry-After of 1s", wait)
				}
				if gap := reqs[1].At.Sub(reqs[0].At); gap < time.Second {
					t.Errorf("second request %s after the 429, want at least 1s", gap)
				}
			},
		},
		{
			name:      "a 401 gets one fresh token and the mail is sent at the same attempt",
			script:    []graphAnswer{graphError(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")},
			want:      []string{"sent#1"},
			wantState: map[string]int{"sent": 1},
			wantAuth:  []string{"Bearer tok-1", "Bearer tok-2"},
		},
		{
			name:      "a 400 ErrorInvalidRecipients is recorded verbatim and not retried",
			script:    []graphAnswer{graphError(400, "ErrorInvalidRecipients", invalid)},
			want:      []string{"failed#1/400/true/send"},
			wantState: map[string]int{"failed": 1},
			wantAuth:  []string{"Bearer tok-1"},
			check: func(t *testing.T, evs []domain.Event, _ []graphRequest) {
				if got, want := evs[0].(domain.OutboundMailFailed).Reply, "ErrorInvalidRecipients: "+invalid+" (request-id req-ErrorInvalidRecipients)"; got != want {
					t.Errorf("failure reply = %q, want %q", got, want)
				}
			},
		},
		{
			name:      "a 503 without Retry-After is retried with the back-off",
			script:    []graphAnswer{graphError(503, "ServiceUnavailable", "Service Unavailable")},
			want:      []string{"failed#1/503/false/send", "sent#2"},
			wantState: map[string]int{"sent": 1},
			wantAuth:  []string{"Bearer tok-1", "Bearer tok-1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachStore(t, func(t *testing.T, store eventstore.Store) {
				f := startFakeGraph(t, tc.script...)
				h, _, _ := newGraphHarness(t, store, f, tc.tune)
				m := mail(1, "Hilfe", nil)
				appendMails(t, store, []domain.MailReceived{m})
				h.waitStates(tc.wantState)
				outID := domain.OutgoingMailIDFor(domain.AutoMailNewTicket, m.MailID)
				if d := cmp.Diff(tc.want, attempts(t, store, outID)); d != "" {
					t.Errorf("outcomes (-want +got):\n%s", d)
				}
				reqs := f.requests()
				var auth []string
				for _, r := range reqs {
					auth = append(auth, r.Auth)
					if hdr, _ := parseMail(t, r.MIME); hdr.Get("Message-Id") != reqs[0].messageID(t) {
						t.Errorf("a retry posted Message-ID %q, want the first attempt's", hdr.Get("Message-Id"))
					}
				}
				if d := cmp.Diff(tc.wantAuth, auth); d != "" {
					t.Errorf("Authorization of the requests (-want +got):\n%s", d)
				}
				if tc.check != nil {
					tc.check(t, outcomes(t, store, outID), reqs)
				}
			})
		})
	}
}

func (r graphRequest) messageID(t *testing.T) string {
	t.Helper()
	hdr, _ := parseMail(t, r.MIME)
	return hdr.Get("Message-Id")
}
