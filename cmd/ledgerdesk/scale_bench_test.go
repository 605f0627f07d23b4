package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// scaleBenchConfig sizes BenchmarkScale; the environment can shrink it for
// a quick try (LEDGERDESK_SCALE_ACCOUNTS, _MAILS, _RATE, _IDLE_SECONDS).
type scaleBenchConfig struct {
	accounts, mails int
	rate            float64       // mails per second
	idle            time.Duration // how long the idle footprint is measured
	pollInterval    int           // seconds, of the polled accounts
	pushedInterval  int           // seconds, the safety-net poll of the pushed accounts
}

func scaleBenchConfigFromEnv(tb testing.TB) scaleBenchConfig {
	tb.Helper()
	num := func(name string, def float64) float64 {
		raw := os.Getenv(name)
		if raw == "" {
			return def
		}
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil || v <= 0 {
			tb.Fatalf("%s=%q is not a positive number", name, raw)
		}
		return v
	}
	return scaleBenchConfig{
		accounts: int(num("LEDGERDESK_SCALE_ACCOUNTS", 1000)), mails: int(num("LEDGERDESK_SCALE_MAILS", 2000)),
		rate: num("LEDGERDESK_SCALE_RATE", 20), idle: time.Duration(num("LEDGERDESK_SCALE_IDLE_SECONDS", 60) * float64(time.Second)),
		pollInterval: 60, pushedInterval: int(ingest.DefaultPollInterval / time.Second),
	}
}

// scaleFigures are one variant's measurements.
type scaleFigures struct {
	accounts          int
	delivered         int
	ticketLat, sseLat []time.Duration // sorted
	// byTenth is the slowest delivered → ticket of each tenth of the
	// mails in delivery order: a tail from the start or steady?
	byTenth    []time.Duration
	missing    int
	rss        int64
	cpuPerHour time.Duration
}

// BenchmarkScale measures a thousand mailboxes on one `serve` (a child
// process on PostgreSQL) against a test Dovecot with a thousand users:
//
//	go test -v -run '^$' -bench Scale -benchtime 1x -timeout 60m ./cmd/ledgerdesk
//
// Latency: 2,000 mails delivered at a steady 20 mails/s (each moved into
// a user's Maildir/new, round robin over the users), from the delivery to
// the ticket showing in GET /api/v1/tickets (read every 20 ms) and to its
// TicketCreated on GET /api/v1/stream: p50 and p99 with every account
// pushed (IMAP IDLE; targets p50 ≤ 1 s, p99 ≤ 2 s), next to the same
// mails with push off and a 60 s poll (every mail a ticket within 61 s).
// Footprint: resident memory (VmRSS) of the serve with the accounts idle,
// and its CPU time over LEDGERDESK_SCALE_IDLE_SECONDS (60) of idling
// scaled to an hour, next to a serve without accounts in the same run.
// A build without push or the stream reports what it has and says which
// figures are missing.
// Without -v the testing package cuts a benchmark's log after ten lines;
// the metrics line has every figure all the same.
func BenchmarkScale(b *testing.B) {
	cfg := scaleBenchConfigFromEnv(b)
	for range b.N {
		rig := newScaleRig(b, cfg.accounts)

		empty := startScaleServeChild(b, scaleEnv(b))
		push, stream := empty.pushSupported(), empty.streamSupported()
		emptyRSS, emptyCPU := idleFootprint(b, empty, cfg.idle)
		empty.stop()
		b.Logf("baseline: serve without accounts: VmRSS %.1f MB, CPU %.1f s per idle hour (%s measured, scaled)",
			mb(emptyRSS), emptyCPU.Seconds(), cfg.idle)
		b.ReportMetric(mb(emptyRSS), "MB-rss-empty")
		b.ReportMetric(emptyCPU.Seconds(), "cpu-s/h-empty")

		off := false
		var pushOpt *bool
		if push {
			pushOpt = &off
		}
		only := os.Getenv("LEDGERDESK_SCALE_ONLY") // "pushed" or "polled", for a quick look at one
		var polled scaleFigures
		if only != "pushed" {
			polled = runScaleVariant(b, rig, cfg, "polled", cfg.pollInterval, pushOpt, stream)
			reportScale(b, "polled", polled, cfg.pollInterval, emptyRSS, emptyCPU, nil)
		}
		if only == "polled" {
			continue
		}
		if !push {
			b.Logf("pushed: not measured, this build has no push option on inbound accounts")
			continue
		}
		on := true
		pushed := runScaleVariant(b, rig, cfg, "pushed", cfg.pushedInterval, &on, stream)
		var baseline *scaleFigures
		if len(polled.ticketLat) > 0 {
			baseline = &polled
		}
		reportScale(b, "pushed", pushed, cfg.pushedInterval, emptyRSS, emptyCPU, baseline)
	}
}

// runScaleVariant runs one serve with an account per user, delivers the
// mails and measures.
func runScaleVariant(b *testing.B, rig *scaleRig, cfg scaleBenchConfig, name string, interval int, push *bool, stream bool) scaleFigures {
	b.Helper()
	env := scaleEnv(b)
	setup := startScaleServeChild(b, env)
	start := time.Now()
	ids := setup.createAccounts(rig.users, rig.dv.IMAPAddr, interval, push)
	b.Logf("%s: %d accounts created in %s", name, len(ids), time.Since(start).Round(time.Millisecond))
	// Restarted, the serve finds the accounts at once and spreads their
	// first polls over the interval, as in steady operation (accounts
	// created one after the other in a few seconds would poll in step).
	setup.stop()
	start = time.Now()
	srv := startScaleServeChild(b, env)
	defer srv.stop()
	if push != nil && *push {
		// Pushed since this serve started: the view may still say so from
		// the one before.
		srv.waitMailboxes(ids, 5*time.Minute, "pushed", func(row map[string]any) bool {
			since, _ := row["delivery_since"].(string)
			at, err := time.Parse(time.RFC3339Nano, since)
			return row["delivery"] == domain.DeliveryPushed && err == nil && at.After(start)
		})
	} else {
		srv.waitMailboxes(ids, time.Duration(interval+60)*time.Second, "polled once",
			func(row map[string]any) bool { return row["last_checked_at"] != nil })
	}
	b.Logf("%s: all accounts ready %s after the restart", name, time.Since(start).Round(time.Millisecond))

	watch := watchTickets(srv.api.base)
	defer watch.close()
	var sse *sseWatch
	if stream {
		sse = watchStream(b, srv.api.base)
		defer sse.close()
	}
	deliveries := rig.deliverSteady(name, cfg.mails, cfg.rate)
	limit := time.Duration(interval)*time.Second + time.Minute
	var f scaleFigures
	f.delivered, f.accounts = len(deliveries), len(ids)
	var missing []string
	f.ticketLat, missing = waitSeen(deliveries, watch.firstSeen, limit)
	f.missing = len(missing)
	for tenth := range 10 {
		var worst time.Duration
		for _, d := range deliveries[tenth*len(deliveries)/10 : (tenth+1)*len(deliveries)/10] {
			if at, ok := watch.firstSeen(d.subject); ok {
				worst = max(worst, at.Sub(d.at))
			}
		}
		f.byTenth = append(f.byTenth, worst)
	}
	if sse != nil {
		f.sseLat, _ = waitSeen(deliveries, sse.firstSeen, 10*time.Second)
	}
	time.Sleep(5 * time.Second) // the last polls' commits settle
	f.rss, f.cpuPerHour = idleFootprint(b, srv, cfg.idle)
	return f
}

func reportScale(b *testing.B, name string, f scaleFigures, interval int, emptyRSS int64, emptyCPU time.Duration, baseline *scaleFigures) {
	b.Helper()
	p50, p99, worst := percentile(f.ticketLat, 50), percentile(f.ticketLat, 99), percentile(f.ticketLat, 100)
	within := 0
	for _, l := range f.ticketLat {
		if l <= time.Duration(interval)*time.Second+time.Second {
			within++
		}
	}
	b.Logf("%s (poll interval %d s): %d mails, %d no ticket; delivered → ticket in /tickets p50 %.3f s, p99 %.3f s, max %.3f s; "+
		"%d of %d within the interval + 1 s", name, interval, f.delivered, f.missing, p50.Seconds(), p99.Seconds(), worst.Seconds(),
		within, f.delivered)
	var tenths []string
	for _, d := range f.byTenth {
		tenths = append(tenths, fmt.Sprintf("%.2f", d.Seconds()))
	}
	b.Logf("%s: slowest per tenth of the mails, in delivery order (s): %s", name, strings.Join(tenths, " "))
	b.ReportMetric(p50.Seconds(), name+"-p50-s")
	b.ReportMetric(p99.Seconds(), name+"-p99-s")
	b.ReportMetric(worst.Seconds(), name+"-max-s")
	b.ReportMetric(float64(within)/float64(max(f.delivered, 1)), name+"-within-interval+1s")
	if baseline != nil {
		b.Logf("%s vs polled: p50 %.4f ×, p99 %.4f × (targets: p50 ≤ 1 s, p99 ≤ 2 s)", name,
			p50.Seconds()/percentile(baseline.ticketLat, 50).Seconds(), p99.Seconds()/percentile(baseline.ticketLat, 99).Seconds())
		b.ReportMetric(p50.Seconds()/percentile(baseline.ticketLat, 50).Seconds(), name+"-p50-x-polled")
	}
	if len(f.sseLat) > 0 {
		s50, s99 := percentile(f.sseLat, 50), percentile(f.sseLat, 99)
		b.Logf("%s: delivered → TicketCreated on /stream p50 %.3f s, p99 %.3f s (%d of %d seen)", name, s50.Seconds(),
			s99.Seconds(), len(f.sseLat), f.delivered)
		b.ReportMetric(s50.Seconds(), name+"-sse-p50-s")
		b.ReportMetric(s99.Seconds(), name+"-sse-p99-s")
	} else {
		b.Logf("%s: stream latency not measured, this build has no GET /api/v1/stream", name)
	}
	b.Logf("%s: %d accounts idle: VmRSS %.1f MB (%.2f × the empty serve's %.1f MB; target ≤ 300 MB pushed), "+
		"CPU %.1f s per idle hour (empty serve %.1f s)", name, f.accounts, mb(f.rss), float64(f.rss)/float64(emptyRSS), mb(emptyRSS),
		f.cpuPerHour.Seconds(), emptyCPU.Seconds())
	b.ReportMetric(mb(f.rss), "MB-rss-"+name)
	b.ReportMetric(f.cpuPerHour.Seconds(), "cpu-s/h-"+name)
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// streamSupported says whether this build serves GET /api/v1/stream.
func (s *scaleServe) streamSupported() bool {
	var doc struct {
		Paths map[string]json.RawMessage `json:"paths"`
	}
	_ = json.Unmarshal(s.api.must(http.MethodGet, "/api/v1/openapi.json", nil), &doc)
	_, ok := doc.Paths["/stream"]
	if !ok {
		_, ok = doc.Paths["/api/v1/stream"]
	}
	return ok
}

// sseWatch reads GET /api/v1/stream and notes when each ticket's
// TicketCreated arrives, by subject.
type sseWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	seen   map[string]time.Time
}

func watchStream(tb testing.TB, base string) *sseWatch {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // the reading goroutine closes it
	if err != nil {
		cancel()
		tb.Fatalf("GET /api/v1/stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		_ = resp.Body.Close()
		tb.Fatalf("GET /api/v1/stream = %d", resp.StatusCode)
	}
	w := &sseWatch{cancel: cancel, done: make(chan struct{}), seen: map[string]time.Time{}}
	go func() {
		defer close(w.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event:"):
				event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
			case strings.HasPrefix(line, "data:") && event == domain.TicketCreatedName:
				var item struct {
					Payload domain.TicketCreated `json:"payload"`
				}
				if json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, "data:"))), &item) == nil {
					now := time.Now()
					w.mu.Lock()
					if _, ok := w.seen[item.Payload.Subject]; !ok {
						w.seen[item.Payload.Subject] = now
					}
					w.mu.Unlock()
				}
			case line == "":
				event = ""
			}
		}
	}()
	return w
}

func (w *sseWatch) firstSeen(subject string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.seen[subject]
	return at, ok
}

func (w *sseWatch) close() {
	w.cancel()
	<-w.done
}
