package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/metrics"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

func scrape(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape = %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

// series returns the value of family's series whose labels include want.
func series(fams map[string]*dto.MetricFamily, family string, want ...string) (float64, bool) {
	for _, m := range fams[family].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetrics_SubscriberLagInEventsAndSeconds(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s eventstore.Store) {
		ctx := context.Background()
		var last eventstore.AppendResult
		for i := range 5 {
			var err error
			last, err = s.Append(ctx, eventstore.AppendRequest{Stream: "s", ExpectedVersion: eventstore.AnyVersion,
				Events: []eventstore.NewEvent{{Type: "E", SchemaVersion: 1, Payload: json.RawMessage(`{}`)}}})
			if err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
		}
		first, err := s.ReadAll(ctx, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		now := first[0].RecordedAt.Add(90 * time.Second)
		m, err := metrics.New(metrics.Options{Now: func() time.Time { return now }, Log: s.(metrics.Log),
			Subscribers: []string{"behind", "caught-up"}})
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- s.Subscribe(sctx, "caught-up", func(context.Context, eventstore.Tx, eventstore.RecordedEvent) error { return nil },
				eventstore.SubscribeOptions{PollInterval: 10 * time.Millisecond})
		}()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if ok, err := s.Reached(ctx, "caught-up", last.LastPosition); err == nil && ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the subscriber did not catch up within 30s")
			}
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Subscribe() = %v, want context.Canceled", err)
		}

		fams := scrape(t, m)
		for _, tc := range []struct {
			family, subscriber string
			want               float64
		}{
			{"ledgerdesk_subscriber_lag_events", "behind", 5},
			{"ledgerdesk_subscriber_lag_seconds", "behind", 90},
			{"ledgerdesk_subscriber_lag_events", "caught-up", 0},
			{"ledgerdesk_subscriber_lag_seconds", "caught-up", 0},
		} {
			if got, ok := series(fams, tc.family, "subscriber", tc.subscriber); !ok || got != tc.want {
				t.Errorf("%s{subscriber=%q} = %v (present %v), want %v", tc.family, tc.subscriber, got, ok, tc.want)
			}
		}
	})
}

func TestMetrics_ObserverCountsPollsCommitsAndModes(t *testing.T) {
	t.Parallel()
	m, err := metrics.New(metrics.Options{Now: time.Now,
		OutboundMails: func(context.Context) (map[string]int, error) { return map[string]int{"sent": 4, "retry": 1}, nil },
		TokenStates: func(context.Context) ([]metrics.TokenState, error) {
			return []metrics.TokenState{{ConnectionID: "c1", State: "needs_reconnect"}}, nil
		},
		TokenStateNames: []string{"ok", "needs_reconnect"}})
	if err != nil {
		t.Fatal(err)
	}
	var obs ingest.Observer = m
	obs.Mode("a1", false)
	obs.Polled(ingest.PollReport{AccountID: "a1", FinishedAt: time.Unix(1000, 0), Took: time.Second,
		Result: mailsource.PollResult{Fetched: 3, Failed: 1, Skipped: 2}})
	obs.Polled(ingest.PollReport{AccountID: "a1", FinishedAt: time.Unix(1010, 0), Err: errors.New("login refused"), Failures: 1})
	obs.Committed("a1", 3, 20*time.Millisecond, nil)
	obs.Mode("a2", true)
	m.StreamOpened()
	m.StreamOpened()
	m.StreamClosed(true)
	fams := scrape(t, m)
	for _, tc := range []struct {
		family string
		labels []string
		want   float64
	}{
		{"ledgerdesk_mailbox_mails_total", []string{"account_id", "a1", "result", "imported"}, 3},
		{"ledgerdesk_mailbox_mails_total", []string{"account_id", "a1", "result", "failed"}, 1},
		{"ledgerdesk_mailbox_mails_total", []string{"account_id", "a1", "result", "skipped"}, 2},
		{"ledgerdesk_mailbox_mails_total", []string{"account_id", "a1", "result", "oversize"}, 0},
		{"ledgerdesk_mailbox_polls_total", []string{"account_id", "a1", "outcome", "ok"}, 1},
		{"ledgerdesk_mailbox_polls_total", []string{"account_id", "a1", "outcome", "error"}, 1},
		{"ledgerdesk_mailbox_consecutive_failures", []string{"account_id", "a1"}, 1},
		{"ledgerdesk_mailbox_last_poll_timestamp_seconds", []string{"account_id", "a1"}, 1010},
		{"ledgerdesk_mailbox_commits_total", []string{"account_id", "a1", "outcome", "ok"}, 1},
		{"ledgerdesk_mailbox_poll_duration_seconds", nil, 2},
		{"ledgerdesk_mailbox_commit_duration_seconds", nil, 1},
		{"ledgerdesk_mailbox_pushed", []string{"account_id", "a1"}, 0},
		{"ledgerdesk_mailbox_pushed", []string{"account_id", "a2"}, 1},
		{"ledgerdesk_outbound_mails", []string{"state", "sent"}, 4},
		{"ledgerdesk_outbound_mails", []string{"state", "pending"}, 0},
		{"ledgerdesk_oauth_token_state", []string{"connection_id", "c1", "state", "needs_reconnect"}, 1},
		{"ledgerdesk_oauth_token_state", []string{"connection_id", "c1", "state", "ok"}, 0},
		{"ledgerdesk_stream_clients", nil, 1},
		{"ledgerdesk_stream_ended_total", []string{"reason", "lagged"}, 1},
	} {
		if got, ok := series(fams, tc.family, tc.labels...); !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.family, tc.labels, got, ok, tc.want)
		}
	}
	obs.Stopped("a2")
	if _, ok := series(scrape(t, m), "ledgerdesk_mailbox_pushed", "account_id", "a2"); ok {
		t.Error("a stopped account still has ledgerdesk_mailbox_pushed")
	}
}
