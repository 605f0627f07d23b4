package ticketing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// plainOpener stands in for the secret box: "sealed:" + plaintext.
type plainOpener struct{}

func (plainOpener) Open(s string) (string, error) {
	p, ok := strings.CutPrefix(s, "sealed:")
	if !ok {
		return "", errors.New("not sealed")
	}
	return p, nil
}

// harness is a store with an inbound and an outgoing account, the intake
// and the saga running, and an SMTP server receiving.
type harness struct {
	t     *testing.T
	store eventstore.Store
	srv   *smtptest.Server
	saga  *Outbound
	stop  func()
}

const outSender = "desk-out@desk.example"

func newHarness(t *testing.T, store eventstore.Store, srvOpts smtptest.Options, tune func(*OutboundOptions)) *harness {
	t.Helper()
	srvOpts.Username, srvOpts.Password = "desk", "pw"
	srv := smtptest.Start(t, srvOpts)
	account := domain.InboundAccount{ID: "acc", Name: "support", Enabled: true, Protocol: "imap", Host: "mail.example",
		Username: "support", AccountAddress: "support@desk.example", SenderAddress: "support@desk.example", SenderName: "Desk Support",
		AutoReplyTemplate: "default"}.WithDefaults()
	appendEvent(t, store, InboundAccountsStream, eventstore.NoStream, "acc-1", domain.InboundAccountCreated{Account: account, Actor: "test"})
	out := domain.OutboundAccount{ID: "out-1", Name: "smtp", Enabled: true, Host: srv.Host, Port: srv.Port, Security: "none",
		Auth: "cram-md5", Username: "desk", Password: "sealed:pw", SenderAddress: outSender, SenderName: "Desk"}.WithDefaults()
	ev, err := domain.DecideCreateOutboundAccount(domain.OutboundAccounts{}, out, "test")
	if err != nil {
		t.Fatal(err)
	}
	appendEvent(t, store, OutboundAccountsStream, eventstore.NoStream, "out-1", ev[0])
	return startHarness(t, store, srv, tune)
}

func startHarness(t *testing.T, store eventstore.Store, srv *smtptest.Server, tune func(*OutboundOptions)) *harness {
	t.Helper()
	start := time.Now()
	opts := OutboundOptions{Store: store, Secrets: plainOpener{}, Now: func() time.Time { return t0.Add(24*time.Hour + time.Since(start)) },
		Workers: 2, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, PollInterval: 20 * time.Millisecond}
	if tune != nil {
		tune(&opts)
	}
	saga := NewOutbound(opts)
	pm := NewProcessManager(store, opts.Now, testKey, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- pm.Run(ctx) }()
	go func() { done <- saga.Run(ctx) }()
	h := &harness{t: t, store: store, srv: srv, saga: saga}
	var stopped atomic.Bool
	h.stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		for range 2 {
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("background part stopped with %v", err)
			}
		}
	}
	t.Cleanup(h.stop)
	return h
}

// waitStates waits until the saga's rows reach want (state -> count).
func (h *harness) waitStates(want map[string]int) map[string]int {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got map[string]int
	for time.Now().Before(deadline) {
		var err error
		got, err = OutboundStatus(context.Background(), h.store)
		if err != nil {
			h.t.Fatal(err)
		}
		if cmp.Equal(want, got) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("saga states = %v, want %v", got, want)
	return got
}

func appendMails(t *testing.T, store eventstore.Store, ms []domain.MailReceived) {
	t.Helper()
	for start := 0; start < len(ms); start += 100 {
		var reqs []eventstore.AppendRequest
		for _, m := range ms[start:min(start+100, len(ms))] {
			name, v, payload, err := domain.MarshalEvent(m)
			if err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, eventstore.AppendRequest{Stream: MailStream(m.MailID), ExpectedVersion: eventstore.NoStream,
				Events: []eventstore.NewEvent{{ID: m.MailID, Type: name, SchemaVersion: v, Payload: payload, Metadata: eventstore.Metadata{OccurredAt: m.ReceivedAt}}}})
		}
		if _, err := store.Append(context.Background(), reqs...); err != nil {
			t.Fatal(err)
		}
	}
}

func outcomes(t *testing.T, store eventstore.Store, outgoingMailID string) []domain.Event {
	t.Helper()
	evs, err := store.ReadStream(context.Background(), domain.OutboundMailStream(outgoingMailID), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []domain.Event
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func parseMail(t *testing.T, raw []byte) (gomail.Header, string) {
	t.Helper()
	r, err := gomail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(p.Body)
	return r.Header, string(b)
}

func TestOutbound_AutoReplyThreadsAndIsSentOnce(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		h := newHarness(t, store, smtptest.Options{}, nil)
		// given a customer's mail that opens a ticket
		m := mail(1, "Drucker brennt", func(m *domain.MailReceived) { m.References = []string{"older@customer.example"} })
		appendMails(t, store, []domain.MailReceived{m})
		// then one auto-reply arrives, threaded to it, with the ticket number
		h.waitStates(map[string]int{"sent": 1})
		got := h.srv.Received()
		if len(got) != 1 {
			t.Fatalf("received %d mails, want 1", len(got))
		}
		if got[0].From != outSender || !cmp.Equal(got[0].To, []string{"erika@customer.example"}) || got[0].User != "desk" {
			t.Errorf("envelope from %q to %v user %q", got[0].From, got[0].To, got[0].User)
		}
		hdr, body := parseMail(t, got[0].Data)
		subject, _ := hdr.Subject()
		irt, _ := hdr.MsgIDList("In-Reply-To")
		refs, _ := hdr.MsgIDList("References")
		mid, _ := hdr.MessageID()
		from, _ := hdr.AddressList("From")
		outID := domain.OutgoingMailIDFor(domain.AutoMailNewTicket, m.MailID)
		wantMID := domain.OutgoingMessageID(domain.TicketIDFor(m.MailID), outID, "", testKey)
		gotHdr := []string{subject, strings.Join(irt, ","), strings.Join(refs, ","), mid, from[0].Address, hdr.Get("Auto-Submitted"), hdr.Get("X-Auto-Response-Suppress")}
		wantHdr := []string{"[Ticket#1001] Drucker brennt", "m1@customer.example", "older@customer.example,m1@customer.example", wantMID,
			"support@desk.example", "auto-replied", "All"}
		if d := cmp.Diff(wantHdr, gotHdr); d != "" {
			t.Errorf("headers (-want +got):\n%s", d)
		}
		if !strings.Contains(body, "Ticketnummer 1001") || !strings.Contains(body, "ticket number 1001") || !strings.Contains(body, "Erika Muster") {
			t.Errorf("body does not name the ticket number and requester in German and English:\n%s", body)
		}
		evs := outcomes(t, store, outID)
		if len(evs) != 1 {
			t.Fatalf("outcomes = %v, want one OutboundMailSent", evs)
		}
		sent, ok := evs[0].(domain.OutboundMailSent)
		if !ok || sent.Attempt != 1 || sent.MessageID != wantMID || sent.AccountID != "out-1" {
			t.Errorf("outcome = %+v", evs[0])
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
		// then nothing more is sent
		time.Sleep(100 * time.Millisecond)
		h.waitStates(map[string]int{"sent": 1})
		if n := h.srv.Count(); n != 1 {
			t.Errorf("received %d mails after a re-delivery, want 1", n)
		}
	})
}

func TestOutbound_RetriesTransientFailuresAndGivesUp(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		var calls atomic.Int32
		fail := func(stage, arg string) error {
			if stage != "rcpt" {
				return nil
			}
			switch {
			case strings.HasPrefix(arg, "retry"):
				if calls.Add(1) <= 2 {
					return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"}
				}
			case strings.HasPrefix(arg, "never"):
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
			case strings.HasPrefix(arg, "unknown"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			return nil
		}
		h := newHarness(t, store, smtptest.Options{Fail: fail}, func(o *OutboundOptions) { o.MaxAttempts = 3 })
		var ms []domain.MailReceived
		for i, who := range []string{"retry", "never", "unknown"} {
			ms = append(ms, mail(i+1, "mail from "+who, func(m *domain.MailReceived) { m.From.Email = who + "@customer.example" }))
		}
		appendMails(t, store, ms)
		h.waitStates(map[string]int{"sent": 1, "failed": 2})

		kinds := func(m domain.MailReceived) []string {
			var out []string
			for _, e := range outcomes(t, store, domain.OutgoingMailIDFor(domain.AutoMailNewTicket, m.MailID)) {
				switch e := e.(type) {
				case domain.OutboundMailSent:
					out = append(out, fmt.Sprintf("sent#%d", e.Attempt))
				case domain.OutboundMailFailed:
					out = append(out, fmt.Sprintf("failed#%d/%d/%v/%s", e.Attempt, e.Code, e.Permanent, e.Stage))
				}
			}
			return out
		}
		want := [][]string{
			{"failed#1/451/false/rcpt", "failed#2/451/false/rcpt", "sent#3"},
			{"failed#1/452/false/rcpt", "failed#2/452/false/rcpt", "failed#3/452/true/rcpt"},
			{"failed#1/550/true/rcpt"},
		}
		for i, m := range ms {
			if d := cmp.Diff(want[i], kinds(m)); d != "" {
				t.Errorf("%s: outcomes (-want +got):\n%s", m.From.Email, d)
			}
		}
		last := outcomes(t, store, domain.OutgoingMailIDFor(domain.AutoMailNewTicket, ms[1].MailID))
		if f := last[len(last)-1].(domain.OutboundMailFailed); !strings.Contains(f.Reply, "mailbox full") || !strings.Contains(f.Reply, "gave up after 3") {
			t.Errorf("last failure reply = %q, want the server's reply and the attempt limit", f.Reply)
		}
	})
}

// TestOutbound_CrashAfterAccept: the process dies after the server's 250
// but before "sent" is committed. The restarted saga sends the mail again
// with the same Message-ID (the documented at-least-once window) and
// records it sent once.
func TestOutbound_CrashAfterAccept(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		h := newHarness(t, store, smtptest.Options{}, func(o *OutboundOptions) { o.Workers = 1 })
		var crashed atomic.Bool
		h.saga.crashAfterAccept = func(string) bool { return !crashed.Swap(true) }
		m := mail(1, "crash test", nil)
		appendMails(t, store, []domain.MailReceived{m})
		h.waitStates(map[string]int{"sending": 1})
		h.srv.WaitCount(1, 10*time.Second)
		h.stop()

		startHarness(t, store, h.srv, nil).waitStates(map[string]int{"sent": 1})
		got := h.srv.Received()
		if len(got) != 2 {
			t.Fatalf("received %d copies, want 2 (the at-least-once window)", len(got))
		}
		h1, _ := parseMail(t, got[0].Data)
		h2, _ := parseMail(t, got[1].Data)
		if a, b := h1.Get("Message-Id"), h2.Get("Message-Id"); a != b || a == "" {
			t.Errorf("Message-IDs %q and %q differ", a, b)
		}
		evs := outcomes(t, store, domain.OutgoingMailIDFor(domain.AutoMailNewTicket, m.MailID))
		if len(evs) != 1 || evs[0].(domain.OutboundMailSent).Attempt != 2 {
			t.Errorf("outcomes = %+v, want one OutboundMailSent at attempt 2", evs)
		}
	})
}

// TestOutbound_SagaGuard: loop protection the intake cannot apply (our
// outgoing accounts' addresses) and the no-reply patterns are the saga's.
func TestOutbound_SagaGuard(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		h := newHarness(t, store, smtptest.Options{}, nil)
		ms := []domain.MailReceived{
			mail(1, "from our own outgoing account", func(m *domain.MailReceived) { m.From.Email = outSender }),
			mail(2, "from a no-reply variant", func(m *domain.MailReceived) { m.From.Email = "noreply-billing@shop.example" }),
			mail(3, "a person", nil),
		}
		appendMails(t, store, ms)
		h.waitStates(map[string]int{"sent": 1, "suppressed": 2})
		for i, code := range []string{domain.SuppressOwnAddress, domain.SuppressSystemAddress} {
			evs := outcomes(t, store, domain.OutgoingMailIDFor(domain.AutoMailNewTicket, ms[i].MailID))
			if len(evs) != 1 || evs[0].(domain.OutboundMailSuppressed).Code != code {
				t.Errorf("%s: outcomes %+v, want suppressed with %s", ms[i].From.Email, evs, code)
			}
		}
	})
}

// TestOutbound_AgentReplyAndTemplates: a stored template replaces the
// shipped one, and an agent's reply goes out framed by the reply template,
// threaded and not marked automatic.
func TestOutbound_AgentReplyAndTemplates(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		tpls := NewTemplates(store)
		if _, err := tpls.Save(context.Background(), domain.Template{Name: "default", Subject: "Eingang: {{.Subject}}",
			Body: "Nr. {{.TicketNumber}} für {{.RequesterEmail}} von {{.SenderAddress}}", UpdatedAt: t0}, "admin"); err != nil {
			t.Fatal(err)
		}
		if _, err := tpls.Save(context.Background(), domain.Template{Name: "bad", Subject: "{{.Nope}}", Body: "x", UpdatedAt: t0}, "admin"); !errors.Is(err, domain.ErrInvalid) {
			t.Errorf("saving a template with an unknown field: %v, want ErrInvalid", err)
		}
		h := newHarness(t, store, smtptest.Options{}, nil)
		m := mail(1, "Hilfe", nil)
		appendMails(t, store, []domain.MailReceived{m})
		h.waitStates(map[string]int{"sent": 1})
		hdr, body := parseMail(t, h.srv.Received()[0].Data)
		subject, _ := hdr.Subject()
		if subject != "Eingang: [Ticket#1001] Hilfe" || strings.TrimSpace(body) != "Nr. 1001 für erika@customer.example von support@desk.example" {
			t.Errorf("stored template not used: subject %q body %q", subject, body)
		}

		ticketID := domain.TicketIDFor(m.MailID)
		if _, err := NewCommands(store, testKey).Handle(context.Background(), ticketID, domain.ReplyByMail{CommandID: "c1", Body: "Wir kümmern uns.",
			Actor: "agent-1", At: t0.Add(25 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		h.waitStates(map[string]int{"sent": 2})
		hdr, body = parseMail(t, h.srv.Received()[1].Data)
		subject, _ = hdr.Subject()
		irt, _ := hdr.MsgIDList("In-Reply-To")
		from, _ := hdr.AddressList("From")
		if subject != "Re: [Ticket#1001] Hilfe" || !cmp.Equal(irt, []string{"m1@customer.example"}) || hdr.Get("Auto-Submitted") != "" ||
			from[0].Address != outSender || !strings.HasPrefix(body, "Wir kümmern uns.") {
			t.Errorf("reply: subject %q in-reply-to %v auto-submitted %q from %q body %q", subject, irt, hdr.Get("Auto-Submitted"), from[0].Address, body)
		}
	})
}

func TestTemplates_ShippedAndListed(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"default", "default.de", "default.en", "error", "error.en", "ticket_closed", "ticket_closed.de", "reply"} {
		tpl, ok := shipped[name]
		if !ok {
			t.Errorf("template %q is not shipped", name)
			continue
		}
		if err := CheckTemplate(tpl.Subject, tpl.Body); err != nil {
			t.Errorf("shipped template %q: %v", name, err)
		}
	}
}

// TestOutbound_OldQueuedMailsExpire: a saga started on a log with mails
// queued long ago does not send them.
func TestOutbound_OldQueuedMailsExpire(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		h := newHarness(t, store, smtptest.Options{}, nil)
		// given a reply queued two days before the saga's clock
		out := domain.OutgoingMailIDFor(domain.OutgoingReply, "t-old", "c1")
		appendEvent(t, store, domain.TicketStream("t-old"), eventstore.AnyVersion, "old-1", domain.ReplyQueued{
			OutgoingMail: domain.OutgoingMail{OutgoingMailID: out, MessageID: domain.OutgoingMessageID("t-old", out, "", testKey)},
			TicketID:     "t-old", To: []domain.Address{{Email: "erika@customer.example"}}, Subject: "Re: alt", Body: "spät",
			QueuedAt: t0.Add(-24 * time.Hour), Actor: "agent"})
		// then it is suppressed as expired, not sent
		h.waitStates(map[string]int{"suppressed": 1})
		evs := outcomes(t, store, out)
		if len(evs) != 1 || evs[0].(domain.OutboundMailSuppressed).Code != domain.SuppressExpired || h.srv.Count() != 0 {
			t.Errorf("outcomes %+v, %d sent; want suppressed as expired and nothing sent", evs, h.srv.Count())
		}
	})
}

// TestOutbound_BatchTimeReleasesUnsent: a batch whose time is up stops
// starting submissions; its unsent mails go back to the queue without
// counting an attempt, and every mail is still sent exactly once.
func TestOutbound_BatchTimeReleasesUnsent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		// given a saga whose batches are out of time after one submission
		h := newHarness(t, store, smtptest.Options{}, func(o *OutboundOptions) {
			o.Workers, o.BatchSize, o.BatchTime = 1, 8, time.Nanosecond
		})
		// when 6 customers write at once
		var ms []domain.MailReceived
		for i := range 6 {
			ms = append(ms, mail(30_000+i, fmt.Sprintf("Frage %d", i), func(m *domain.MailReceived) {
				m.From.Email = fmt.Sprintf("batch%d@customer.example", i)
			}))
		}
		appendMails(t, store, ms)
		// then each gets one auto-reply, recorded as sent at its first attempt
		h.waitStates(map[string]int{"sent": 6})
		if got := h.srv.Count(); got != 6 {
			t.Fatalf("server received %d mails, want 6", got)
		}
		for _, m := range ms {
			evs := outcomes(t, store, domain.OutgoingMailIDFor(domain.AutoMailNewTicket, m.MailID))
			if len(evs) != 1 {
				t.Fatalf("%s: outcomes %+v, want one", m.MailID, evs)
			}
			if sent, ok := evs[0].(domain.OutboundMailSent); !ok || sent.Attempt != 1 {
				t.Errorf("%s: outcome %+v, want OutboundMailSent at attempt 1", m.MailID, evs[0])
			}
		}
	})
}

// TestOutbound_HandleBatch: one subscription batch counts its own earlier
// automatic mails against the per-recipient limit, takes on a mail queued
// twice once, and skips what an earlier batch took on.
func TestOutbound_HandleBatch(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		saga := NewOutbound(OutboundOptions{Store: store, Now: func() time.Time { return t0.Add(time.Hour) }})
		var batch []eventstore.RecordedEvent
		for i := range domain.RecipientLimit + 3 {
			id := fmt.Sprintf("auto-%02d", i)
			name, v, payload, err := domain.MarshalEvent(domain.AutoReplyQueued{
				OutgoingMail: domain.OutgoingMail{OutgoingMailID: id, MessageID: id + "@desk.example"},
				TicketID:     fmt.Sprintf("t-%d", i), AccountID: "acc", Template: "default",
				To: domain.Address{Email: "Chatty@Customer.example"}, Subject: "Frage", QueuedAt: t0.Add(time.Duration(i) * time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			batch = append(batch, eventstore.RecordedEvent{ID: "ev-" + id, Stream: "ticket-x", StreamVersion: int64(i + 1),
				Position: int64(i + 1), Type: name, SchemaVersion: v, Payload: payload})
		}
		batch = append(batch, batch[0]) // the same mail queued twice in one batch
		handle := func(evs []eventstore.RecordedEvent) {
			t.Helper()
			if err := store.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
				return saga.HandleBatch(ctx, tx, evs)
			}); err != nil {
				t.Fatalf("HandleBatch() error = %v", err)
			}
		}
		handle(batch)
		handle(batch[:2]) // delivered again
		got, err := OutboundStatus(context.Background(), store)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]int{stateP: domain.RecipientLimit, stateSupp: 3}; !cmp.Equal(want, got) {
			t.Fatalf("states = %v, want %v", got, want)
		}
		for i := domain.RecipientLimit; i < domain.RecipientLimit+3; i++ {
			evs := outcomes(t, store, fmt.Sprintf("auto-%02d", i))
			if len(evs) != 1 || evs[0].(domain.OutboundMailSuppressed).Code != domain.SuppressRecipientLimit {
				t.Errorf("auto-%02d: outcomes %+v, want suppressed with %s", i, evs, domain.SuppressRecipientLimit)
			}
		}
	})
}
