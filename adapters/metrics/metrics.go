// Package metrics exports ledgerdesk's operational figures in the
// Prometheus text format through the official client library
// (client_golang), on a registry of its own.
//
// The mail import reports through ingest.Observer, which Metrics
// implements; the figures that live in the store (each subscriber's lag
// behind the log, the outbound queue, OAuth token state) are read when
// Prometheus scrapes. Labels carry ids only (account, connection,
// subscriber), never an address, a subject or a secret.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// scrapeTimeout bounds the store reads of one scrape.
const scrapeTimeout = 10 * time.Second

// Log is what the lag of the subscribers is read from.
type Log interface {
	eventstore.LogInspector
	ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.RecordedEvent, error)
	Checkpoint(ctx context.Context, name string) (int64, error)
}

// TokenState is one OAuth connection's token state (domain.TokenState*).
type TokenState struct {
	ConnectionID string
	State        string
	// ExpiresAt is when the access token expires; zero when none is held.
	ExpiresAt time.Time
}

// Options wire the collectors read at scrape time; cmd fills them in. A
// nil function leaves its metrics out.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Log and Subscribers give each durable subscriber's lag.
	Log         Log
	Subscribers []string
	// OutboundMails counts the outbound queue's mails by state
	// (ticketing.OutboundStatus).
	OutboundMails func(ctx context.Context) (map[string]int, error)
	// TokenStates lists the OAuth connections' token states.
	TokenStates func(ctx context.Context) ([]TokenState, error)
	// TokenStateNames are all states, so that each connection has a series
	// per state (1 for its state, 0 for the others).
	TokenStateNames []string
}

// Metrics holds the registry and the import's instruments. It implements
// ingest.Observer.
type Metrics struct {
	registry *prometheus.Registry

	polls      *prometheus.CounterVec
	mails      *prometheus.CounterVec
	failures   *prometheus.GaugeVec
	lastPoll   *prometheus.GaugeVec
	pushed     *prometheus.GaugeVec
	pollTime   prometheus.Histogram
	commitTime prometheus.Histogram
	commits    *prometheus.CounterVec

	streams      prometheus.Gauge
	streamsEnded *prometheus.CounterVec
}

var _ ingest.Observer = (*Metrics)(nil)

// New registers every metric on a fresh registry, with the Go runtime's
// and the process's own.
func New(opts Options) (*Metrics, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		return nil, errors.New("metrics: no clock")
	}
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledgerdesk_mailbox_polls_total",
			Help: "Finished polls of an inbound account, by outcome (ok, error)."}, []string{"account_id", "outcome"}),
		mails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledgerdesk_mailbox_mails_total",
			Help: "Mails of an inbound account by what the polls did with them: imported (committed as MailReceived), " +
				"failed (unparseable), oversize, skipped (committed earlier, finished now), deleted (removed or moved on the server)."},
			[]string{"account_id", "result"}),
		failures: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ledgerdesk_mailbox_consecutive_failures",
			Help: "Polls in a row that failed, the latest included; 0 after a good poll."}, []string{"account_id"}),
		lastPoll: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ledgerdesk_mailbox_last_poll_timestamp_seconds",
			Help: "When the latest poll of the account finished (Unix time)."}, []string{"account_id"}),
		pushed: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ledgerdesk_mailbox_pushed",
			Help: "1 while new mail of the account is pushed (IMAP IDLE), 0 while it is polled; absent for accounts not running."},
			[]string{"account_id"}),
		pollTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ledgerdesk_mailbox_poll_duration_seconds",
			Help:    "How long one poll (connect, fetch, commit, finish) took, all accounts.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ledgerdesk_mailbox_commit_duration_seconds",
			Help:    "How long one commit of a batch of fetched mails (blobs, index, events) took, all accounts.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledgerdesk_mailbox_commits_total",
			Help: "Commits of batches of fetched mails, by outcome (ok, error)."}, []string{"account_id", "outcome"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ledgerdesk_stream_clients",
			Help: "Open GET /api/v1/stream connections."}),
		streamsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledgerdesk_stream_ended_total",
			Help: "Ended event streams, by reason: lagged (the client was too slow for the live buffer and was " +
				"disconnected) or closed (the client went, or the server shut down)."}, []string{"reason"}),
	}
	cs := []prometheus.Collector{m.polls, m.mails, m.failures, m.lastPoll, m.pushed, m.pollTime, m.commitTime, m.commits,
		m.streams, m.streamsEnded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&storeCollector{opts: opts}}
	for _, c := range cs {
		if err := m.registry.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return m, nil
}

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics when the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// Polled implements ingest.Observer.
func (m *Metrics) Polled(r ingest.PollReport) {
	m.polls.WithLabelValues(r.AccountID, outcome(r.Err)).Inc()
	for result, n := range map[string]int{"imported": r.Result.Fetched, "failed": r.Result.Failed,
		"oversize": r.Result.Oversize, "skipped": r.Result.Skipped, "deleted": r.Result.Deleted} {
		// Add(0) too: every account has all five series from its first poll.
		m.mails.WithLabelValues(r.AccountID, result).Add(float64(n))
	}
	m.failures.WithLabelValues(r.AccountID).Set(float64(r.Failures))
	m.lastPoll.WithLabelValues(r.AccountID).Set(float64(r.FinishedAt.UnixMilli()) / 1000)
	m.pollTime.Observe(r.Took.Seconds())
}

// Committed implements ingest.Observer.
func (m *Metrics) Committed(accountID string, _ int, took time.Duration, err error) {
	m.commits.WithLabelValues(accountID, outcome(err)).Inc()
	m.commitTime.Observe(took.Seconds())
}

// Mode implements ingest.Observer.
func (m *Metrics) Mode(accountID string, pushed bool) {
	v := 0.0
	if pushed {
		v = 1
	}
	m.pushed.WithLabelValues(accountID).Set(v)
}

// Stopped implements ingest.Observer: the account's state gauges go; its
// counters stay until the process ends.
func (m *Metrics) Stopped(accountID string) {
	m.pushed.DeleteLabelValues(accountID)
	m.failures.DeleteLabelValues(accountID)
	m.lastPoll.DeleteLabelValues(accountID)
}

// StreamOpened implements api.StreamObserver.
func (m *Metrics) StreamOpened() { m.streams.Inc() }

// StreamClosed implements api.StreamObserver.
func (m *Metrics) StreamClosed(lagged bool) {
	m.streams.Dec()
	reason := "closed"
	if lagged {
		reason = "lagged"
	}
	m.streamsEnded.WithLabelValues(reason).Inc()
}

// storeCollector reads the figures that live in the store at each scrape.
type storeCollector struct {
	opts Options
}

var (
	lagEventsDesc = prometheus.NewDesc("ledgerdesk_subscriber_lag_events",
		"Events of the log a durable subscriber has not processed yet.", []string{"subscriber"}, nil)
	lagSecondsDesc = prometheus.NewDesc("ledgerdesk_subscriber_lag_seconds",
		"How long the oldest event a durable subscriber has not processed has been in the log; 0 when it is caught up.",
		[]string{"subscriber"}, nil)
	outboundDesc = prometheus.NewDesc("ledgerdesk_outbound_mails",
		"Mails of the outbound queue by state: pending, sending and retry are waiting; sent, failed and suppressed are "+
			"outcomes, counted since the first mail.", []string{"state"}, nil)
	tokenStateDesc = prometheus.NewDesc("ledgerdesk_oauth_token_state",
		"1 for the token state an OAuth connection is in, 0 for the others.", []string{"connection_id", "state"}, nil)
	tokenExpiryDesc = prometheus.NewDesc("ledgerdesk_oauth_access_token_expiry_timestamp_seconds",
		"When the access token of an OAuth connection expires (Unix time); absent when none is held.",
		[]string{"connection_id"}, nil)
	scrapeErrorsDesc = prometheus.NewDesc("ledgerdesk_scrape_store_errors",
		"Store reads that failed during this scrape (their metrics are missing); the reasons go to the log.", nil, nil)
)

// outboundStates are the states the outbound queue's rows can be in, so
// that each has a series from the start.
var outboundStates = []string{"pending", "sending", "retry", "sent", "failed", "suppressed"}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{lagEventsDesc, lagSecondsDesc, outboundDesc, tokenStateDesc, tokenExpiryDesc,
		scrapeErrorsDesc} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	failed := 0
	fail := func(what string, err error) {
		failed++
		c.opts.Logger.Warn("metrics: read "+what, "err", err)
	}
	if c.opts.Log != nil {
		for _, name := range c.opts.Subscribers {
			events, seconds, err := c.lag(ctx, name)
			if err != nil {
				fail("lag of "+name, err)
				continue
			}
			ch <- prometheus.MustNewConstMetric(lagEventsDesc, prometheus.GaugeValue, float64(events), name)
			ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, seconds, name)
		}
	}
	if c.opts.OutboundMails != nil {
		if byState, err := c.opts.OutboundMails(ctx); err != nil {
			fail("outbound queue", err)
		} else {
			for _, st := range outboundStates {
				ch <- prometheus.MustNewConstMetric(outboundDesc, prometheus.GaugeValue, float64(byState[st]), st)
			}
		}
	}
	if c.opts.TokenStates != nil {
		if states, err := c.opts.TokenStates(ctx); err != nil {
			fail("OAuth token states", err)
		} else {
			for _, ts := range states {
				for _, name := range c.opts.TokenStateNames {
					v := 0.0
					if name == ts.State {
						v = 1
					}
					ch <- prometheus.MustNewConstMetric(tokenStateDesc, prometheus.GaugeValue, v, ts.ConnectionID, name)
				}
				if !ts.ExpiresAt.IsZero() {
					ch <- prometheus.MustNewConstMetric(tokenExpiryDesc, prometheus.GaugeValue,
						float64(ts.ExpiresAt.UnixMilli())/1000, ts.ConnectionID)
				}
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorsDesc, prometheus.GaugeValue, float64(failed))
}

// lag is how many events the subscriber has not processed and how long
// the oldest of them has waited.
func (c *storeCollector) lag(ctx context.Context, name string) (events int64, seconds float64, err error) {
	cp, err := c.opts.Log.Checkpoint(ctx, name)
	if err != nil {
		return 0, 0, err
	}
	events, err = c.opts.Log.CountAfter(ctx, cp)
	if err != nil || events == 0 {
		return events, 0, err
	}
	next, err := c.opts.Log.ReadAll(ctx, cp, 1)
	if err != nil || len(next) == 0 {
		return events, 0, err
	}
	return events, max(0, c.opts.Now().Sub(next[0].RecordedAt).Seconds()), nil
}
