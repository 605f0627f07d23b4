package ticketing

import (
	"fmt"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// TestOutbound_Storm runs mail storms through the intake and the saga into
// a real (in-process) SMTP server.
func TestOutbound_Storm(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		n := 500
		if testing.Short() {
			n = 100
		}
		h := newHarness(t, store, smtptest.Options{}, func(o *OutboundOptions) { o.Workers = 4 })

		// given n mails from autoresponders, in four flavours
		var robots []domain.MailReceived
		for i := range n {
			robots = append(robots, mail(i+1, fmt.Sprintf("Abwesenheitsnotiz %d", i), func(m *domain.MailReceived) {
				m.From.Email = "robot@customer.example"
				switch i % 4 {
				case 0:
					m.AutoSubmitted = "auto-replied"
				case 1:
					m.Precedence = "bulk"
				case 2:
					m.LoopHeaders = map[string]string{"x-autoreply": "yes"}
				case 3:
					m.From = domain.Address{Name: "Mail Delivery System", Email: "MAILER-DAEMON@mx.customer.example"}
					m.ReturnPathEmpty = true
					m.ContentType, m.ReportType = "multipart/report", "delivery-status"
				}
			}))
		}
		appendMails(t, store, robots)
		// then no automatic mail goes out (the intake suppresses them all)
		waitReached(t, store, IntakeSubscriber)
		waitReached(t, store, OutboundSubscriber)
		if got := h.srv.Count(); got != 0 {
			t.Fatalf("%d automatic mails sent to autoresponders, want 0", got)
		}

		// given n mails from n different customers
		start := time.Now()
		var people []domain.MailReceived
		for i := range n {
			people = append(people, mail(10_000+i, fmt.Sprintf("Frage %d", i), func(m *domain.MailReceived) {
				m.From.Email = fmt.Sprintf("kunde%d@customer%d.example", i, i%7)
			}))
		}
		appendMails(t, store, people)
		// then each gets exactly one auto-reply
		h.waitStates(map[string]int{"sent": n})
		elapsed := time.Since(start)
		if got := h.srv.Count(); got != n {
			t.Fatalf("%d auto-replies for %d customers, want %d", got, n, n)
		}
		seen := map[string]int{}
		for _, r := range h.srv.Received() {
			seen[r.To[0]]++
		}
		if len(seen) != n {
			t.Errorf("auto-replies went to %d distinct addresses, want %d", len(seen), n)
		}
		t.Logf("%d customer mails -> %d auto-replies in %s (intake + saga + SMTP, %.0f mails/s)", n, n, elapsed, float64(n)/elapsed.Seconds())

		// given 20 mails from one customer within an hour
		var chatty []domain.MailReceived
		for i := range 20 {
			chatty = append(chatty, mail(20_000+i, fmt.Sprintf("Noch eine Frage %d", i), func(m *domain.MailReceived) {
				m.From.Email = "chatty@customer.example"
				m.ReceivedAt = t0.Add(time.Duration(i) * 3 * time.Minute)
			}))
		}
		appendMails(t, store, chatty)
		// then at most the per-recipient limit is sent, the rest suppressed with the reason
		h.waitStates(map[string]int{"sent": n + domain.RecipientLimit, "suppressed": 20 - domain.RecipientLimit})
		limited := 0
		for _, m := range chatty {
			for _, e := range outcomes(t, store, domain.OutgoingMailIDFor(domain.AutoMailNewTicket, m.MailID)) {
				if s, ok := e.(domain.OutboundMailSuppressed); ok && s.Code == domain.SuppressRecipientLimit {
					limited++
				}
			}
		}
		if limited != 20-domain.RecipientLimit {
			t.Errorf("%d mails suppressed by the per-recipient limit, want %d", limited, 20-domain.RecipientLimit)
		}
	})
}

// waitReached waits until subscriber has processed the whole log.
func waitReached(t *testing.T, store eventstore.Store, subscriber string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		evs, err := store.ReadAll(t.Context(), 0, 1_000_000)
		if err != nil {
			t.Fatal(err)
		}
		ok, err := store.Reached(t.Context(), subscriber, evs[len(evs)-1].Position)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not catch up", subscriber)
}
