package ticketing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// BenchmarkSendThroughput compares the saga's send rate (take-on in the
// subscription, claim, render, build, SMTP, record) with two bare go-smtp
// client loops, one connection for all mails and one connection per mail,
// against a local server in the same run. It reports mails/s; each saga
// run also measures a one-connection bare loop of as many mails right
// before it and reports that rate (bare-mails/s) and the saga's ratio to
// it (x-bare). take-on-only runs the saga's subscription alone, which
// takes on each queued mail with one statement in the checkpoint's
// transaction: its rate bounds the saga's from above. LEDGERDESK_BENCH_WORKERS
// and LEDGERDESK_BENCH_BATCH set the saga's Workers and BatchSize (default:
// the saga's defaults).
//
//	go test -run '^$' -bench SendThroughput -benchtime 2000x -count 3 ./ticketing/
func BenchmarkSendThroughput(b *testing.B) {
	b.Run("bare-go-smtp-loop", func(b *testing.B) {
		srv := smtptest.Start(b, smtptest.Options{})
		b.ResetTimer()
		b.ReportMetric(bareLoop(b, srv.Addr, b.N), "mails/s")
	})
	b.Run("bare-go-smtp-conn-per-mail", func(b *testing.B) {
		// a connection per mail: dial, EHLO, MAIL, RCPT, DATA, QUIT.
		srv := smtptest.Start(b, smtptest.Options{})
		msgs := bareMessages(b)
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			c, err := smtp.Dial(srv.Addr)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.SendMail("desk@desk.example", []string{"kunde1@customer.example"}, bytesReader(msgs[i%len(msgs)])); err != nil {
				b.Fatal(err)
			}
			if err := c.Quit(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "mails/s")
	})
	for _, backend := range []string{"embedded", "postgres"} {
		b.Run("take-on-only-"+backend, func(b *testing.B) {
			// The subscription alone (one INSERT per queued mail in the
			// checkpoint's transaction): the ceiling of the saga's rate.
			store := benchStore(b, backend)
			bare := bareLoop(b, smtptest.Start(b, smtptest.Options{}).Addr, b.N)
			benchQueue(b, store, b.N)
			saga := NewOutbound(OutboundOptions{Store: store, TakeOnBatch: takeOnBatch(backend)})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ResetTimer()
			start := time.Now()
			go func() {
				done <- store.SubscribeBatch(ctx, OutboundSubscriber, saga.HandleBatch, saga.takeOnOptions())
			}()
			deadline := time.Now().Add(5 * time.Minute)
			for {
				st, err := OutboundStatus(context.Background(), store)
				if err != nil {
					b.Fatal(err)
				}
				if st[stateP] == b.N {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("took on %d of %d within 5 minutes", st[stateP], b.N)
				}
				time.Sleep(5 * time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				b.Errorf("saga stopped with %v", err)
			}
			rate := float64(b.N) / elapsed.Seconds()
			b.ReportMetric(rate, "mails/s")
			b.ReportMetric(bare, "bare-mails/s")
			b.ReportMetric(rate/bare, "x-bare")
		})
	}
	for _, backend := range []string{"embedded", "postgres"} {
		b.Run("saga-"+backend, func(b *testing.B) {
			store := benchStore(b, backend)
			// The bare loop this run's saga is compared with, on a server
			// of its own, measured right before the saga.
			bare := bareLoop(b, smtptest.Start(b, smtptest.Options{}).Addr, b.N)
			srv := smtptest.Start(b, smtptest.Options{})
			out := domain.OutboundAccount{ID: "out-1", Name: "smtp", Enabled: true, Host: srv.Host, Port: srv.Port, Security: "none",
				SenderAddress: "desk@desk.example"}.WithDefaults()
			evs, _ := domain.DecideCreateOutboundAccount(domain.OutboundAccounts{}, out, "bench")
			benchAppend(b, store, OutboundAccountsStream, []domain.Event{evs[0]})
			benchQueue(b, store, b.N)
			saga := NewOutbound(OutboundOptions{Store: store, PollInterval: 10 * time.Millisecond, BatchSize: benchBatch, Workers: benchWorkers,
				TakeOnBatch: takeOnBatch(backend)})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ResetTimer()
			start := time.Now()
			go func() { done <- saga.Run(ctx) }()
			deadline := time.Now().Add(5 * time.Minute)
			for srv.Count() < b.N || !allSent(b, store, b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("sent %d of %d within 5 minutes", srv.Count(), b.N)
				}
				time.Sleep(5 * time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				b.Errorf("saga stopped with %v", err)
			}
			if srv.Count() != b.N {
				b.Fatalf("server received %d mails, want %d", srv.Count(), b.N)
			}
			// the bare loop moves the same bytes (bareMessages)
			var sagaBytes, bareBytes int
			for _, r := range srv.Received() {
				sagaBytes += len(r.Data)
			}
			for _, m := range bareMessages(b) {
				bareBytes += len(m)
			}
			b.ReportMetric(float64(sagaBytes)/float64(b.N), "bytes/mail")
			b.ReportMetric(float64(bareBytes)/2, "bare-bytes/mail")
			rate := float64(b.N) / elapsed.Seconds()
			b.ReportMetric(rate, "mails/s")
			b.ReportMetric(bare, "bare-mails/s")
			b.ReportMetric(rate/bare, "x-bare")
		})
	}
}

// benchQueue queues n mails as a help desk sends them, each about a
// ticket of its own: every other one the auto-reply to the customer's mail
// that opened the ticket (the mail, TicketCreated and AutoReplyQueued; the
// saga reads the mail for loop protection and counts the recipient), the
// others an agent's reply (TicketCreated and ReplyQueued). The saga reads
// each ticket to pick the account and the reference.
func benchQueue(tb testing.TB, store eventstore.Store, n int) {
	tb.Helper()
	var reqs []eventstore.AppendRequest
	at := time.Now()
	for i := range n {
		id := fmt.Sprintf("bench-%d", i)
		ticketID := fmt.Sprintf("t-%d", i)
		mailID := "m-" + id
		customer := domain.Address{Name: "Kunde", Email: fmt.Sprintf("kunde%d@customer.example", i)}
		created := domain.TicketCreated{TicketID: ticketID, Number: 1001 + int64(i), Subject: "Drucker", Status: domain.StatusNew,
			Requester: domain.Requester{Email: customer.Email, Name: customer.Name}, AccountID: "acc", MessageID: id + "@customer.example",
			SenderEmail: customer.Email, MailReceivedAt: at, CreatedAt: at, CausedBy: mailID}
		if i%2 == 0 {
			reqs = append(reqs,
				benchRequest(tb, MailStream(mailID), domain.MailReceived{MailID: mailID, AccountID: "acc", SourceKey: id, ReceivedAt: at,
					MessageID: id + "@customer.example", Subject: "Drucker", From: customer, To: []domain.Address{{Email: "support@desk.example"}},
					TextBody: "Der Drucker druckt nicht."}),
				benchRequest(tb, domain.TicketStream(ticketID), created, domain.AutoReplyQueued{
					OutgoingMail: domain.OutgoingMail{OutgoingMailID: id, MessageID: domain.OutgoingMessageID(ticketID, id, "desk.example", testKey),
						InReplyTo: id + "@customer.example"},
					TicketID: ticketID, AccountID: "acc", Template: TemplateDefault, To: customer, Subject: "Drucker", QueuedAt: at, CausedBy: mailID}))
		} else {
			reqs = append(reqs, benchRequest(tb, domain.TicketStream(ticketID), created, domain.ReplyQueued{
				OutgoingMail: domain.OutgoingMail{OutgoingMailID: id, MessageID: domain.OutgoingMessageID(ticketID, id, "desk.example", testKey),
					InReplyTo: id + "@customer.example"},
				TicketID: ticketID, To: []domain.Address{customer}, Subject: "Re: Drucker", Body: "Wir kümmern uns.",
				QueuedAt: at, Actor: "agent"}))
		}
		if len(reqs) >= 500 || i == n-1 {
			if _, err := store.Append(context.Background(), reqs...); err != nil {
				tb.Fatal(err)
			}
			reqs = reqs[:0]
		}
	}
	// The log of a running help desk has statistics (autovacuum analyzes
	// it after every 10% of growth); one filled in bulk a moment ago has
	// none, and PostgreSQL would plan reads of it as full scans.
	if err := store.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
		_, err := tx.Exec(ctx, `ANALYZE events`)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
}

func allSent(tb testing.TB, store eventstore.Store, n int) bool {
	st, err := OutboundStatus(context.Background(), store)
	if err != nil {
		tb.Fatal(err)
	}
	return st[stateSent] == n
}

func benchAppend(tb testing.TB, store eventstore.Store, stream string, evs []domain.Event) {
	tb.Helper()
	if _, err := store.Append(context.Background(), benchRequest(tb, stream, evs...)); err != nil {
		tb.Fatal(err)
	}
}

func benchRequest(tb testing.TB, stream string, evs ...domain.Event) eventstore.AppendRequest {
	tb.Helper()
	req := eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.AnyVersion}
	for _, e := range evs {
		name, v, payload, err := domain.MarshalEvent(e)
		if err != nil {
			tb.Fatal(err)
		}
		req.Events = append(req.Events, eventstore.NewEvent{Type: name, SchemaVersion: v, Payload: payload, Metadata: eventstore.Metadata{OccurredAt: time.Now()}})
	}
	return req
}

func benchStore(tb testing.TB, backend string) eventstore.Store {
	tb.Helper()
	if backend == "embedded" {
		db, err := embedded.OpenDB(filepath.Join(tb.TempDir(), "ledgerdesk.db"))
		if err != nil {
			tb.Fatal(err)
		}
		if err := migrations.ApplySQLite(context.Background(), db); err != nil {
			tb.Fatal(err)
		}
		s := embedded.New(db, slog.New(slog.DiscardHandler))
		tb.Cleanup(func() { _ = s.Close() })
		return s
	}
	pool := pgtest.NewPool(tb)
	if err := migrations.ApplyPostgres(context.Background(), pool); err != nil {
		tb.Fatal(err)
	}
	s, err := postgres.New(pool, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// takeOnBatch is what cmd/ledgerdesk wires for the backend.
func takeOnBatch(backend string) int {
	if backend == "embedded" {
		return TakeOnBatchEmbedded
	}
	return TakeOnBatchPostgres
}

// benchBatch is the saga's BatchSize in the benchmark (0: the default).
var benchBatch = envInt("LEDGERDESK_BENCH_BATCH")

// benchWorkers is the saga's Workers in the benchmark (0: the default).
var benchWorkers = envInt("LEDGERDESK_BENCH_WORKERS")

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// bareMessages are the two kinds of mail the benchmark's saga sends (an
// auto-reply from the shipped default template, and an agent's reply in
// the reply frame), built with the same headers, so that the bare loop
// moves the same bytes as the saga.
func bareMessages(tb testing.TB) [][]byte {
	tb.Helper()
	data := TemplateData{TicketNumber: 1001, Reference: "[Ticket#1001]", Subject: "[Ticket#1001] Drucker", RequesterName: "Kunde",
		RequesterEmail: "kunde1@customer.example", SenderName: "desk@desk.example", SenderAddress: "desk@desk.example", Body: "Wir kümmern uns."}
	var out [][]byte
	for _, k := range []struct {
		template  string
		subject   string
		automatic bool
	}{{TemplateDefault, "[Ticket#1001] Drucker", true}, {TemplateReply, "Re: [Ticket#1001] Drucker", false}} {
		_, body, err := render(shipped[k.template], data)
		if err != nil {
			tb.Fatal(err)
		}
		raw, err := smtpsend.Build(smtpsend.Message{From: smtpsend.Address{Email: "desk@desk.example"},
			To: []smtpsend.Address{{Name: "Kunde", Email: "kunde1@customer.example"}}, Subject: k.subject,
			MessageID: domain.OutgoingMessageID("t-1", "bench-1", "desk.example", testKey), InReplyTo: "bench-1@customer.example",
			Date: time.Now(), Automatic: k.automatic, Body: body})
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, raw)
	}
	return out
}

// bareLoop sends n mails, the kinds of bareMessages in turn, over one
// go-smtp connection to addr and returns the rate in mails/s.
func bareLoop(tb testing.TB, addr string, n int) float64 {
	tb.Helper()
	msgs := bareMessages(tb)
	c, err := smtp.Dial(addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	start := time.Now()
	for i := range n {
		if err := c.SendMail("desk@desk.example", []string{"kunde1@customer.example"}, bytesReader(msgs[i%len(msgs)])); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
