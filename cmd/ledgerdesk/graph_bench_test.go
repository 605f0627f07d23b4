package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// BenchmarkServeGraphImport is BenchmarkGraphImport (adapters/ingest)
// through the running service: serve on the embedded store, an app-only
// connection on the fake identity provider, a Graph account whose first
// poll finds 5,000 mails of 3-5 KB, next to the bare Graph client on the
// same fake in the same run:
//
//	go test -run '^$' -bench ServeGraphImport -benchtime 1x ./cmd/ledgerdesk
//
// The import's time is that of the poll that imported the mails (its
// MailboxPolled event's start to finish: listing, downloads, blobs,
// parsing, commits, deletes), so the scheduler's wait for a new account
// does not count; mails/s-to-tickets runs from the poll's start until the
// tickets view holds them all.
func BenchmarkServeGraphImport(b *testing.B) {
	const mails, mailbox = 5000, "bench@desk.example"
	raws := make([][]byte, mails)
	for i := range raws {
		raws[i] = e2eMail(fmt.Sprintf("customer%d@example.com", i), mailbox, fmt.Sprintf("question %d", i),
			fmt.Sprintf("bench-%d@example.com", i))
		for len(raws[i]) < 3000+i%2000 {
			raws[i] = append(raws[i], "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n"...)
		}
	}
	var ours, bare, tickets time.Duration
	for range b.N {
		b.StopTimer()
		idp := oauthtest.Start(b, oauthtest.Options{})
		graph := graphtest.Start(b, graphtest.Options{})
		graph.AddMessages(mailbox, "Inbox", raws)
		start := time.Now()
		if n := graph.BareDownload(b, mailbox, "bench-token"); n != mails {
			b.Fatalf("the bare client downloaded %d mails, want %d", n, mails)
		}
		bare += time.Since(start)

		srv := startServe(b, map[string]string{envDataDir: b.TempDir(), envAdminToken: e2eToken})
		api := apiClient{tb: b, base: srv.URL}
		conn := api.createdID("/api/v1/oauth-connections", map[string]any{"name": "bench", "provider": "microsoft365",
			"flow": "app_only", "tenant_id": "contoso.example", "login_base_url": idp.URL, "graph_base_url": graph.URL,
			"client_id": oauthtest.DefaultClientID, "client_secret": oauthtest.DefaultClientSecret})
		api.createdID("/api/v1/inbound-accounts", map[string]any{"name": "bench", "protocol": "graph", "mailbox": mailbox,
			"oauth_connection_id": conn, "account_address": mailbox, "poll_interval_seconds": 3600, "enabled": true})
		b.StartTimer()
		var polled domain.MailboxPolled
		for deadline := time.Now().Add(5 * time.Minute); polled.Fetched < mails; {
			if time.Now().After(deadline) {
				b.Fatalf("no poll imported the %d mails within 5 minutes", mails)
			}
			time.Sleep(100 * time.Millisecond)
			for _, e := range api.events(domain.MailboxPolledName) {
				_ = json.Unmarshal(e.Payload, &polled)
			}
		}
		ours += polled.FinishedAt.Sub(polled.StartedAt)
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			var page struct {
				Items []json.RawMessage `json:"items"`
			}
			_ = json.Unmarshal(api.must(http.MethodGet, fmt.Sprintf("/api/v1/tickets?limit=1&q=question%%20%d", mails-1), nil), &page)
			// The intake and the view take the log in order: the last
			// mail's ticket in the view means all of them are.
			if len(page.Items) > 0 {
				tickets += time.Since(polled.StartedAt)
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("the tickets view did not reach %d tickets within 5 minutes", mails)
			}
		}
		b.StopTimer()
		if graph.Count(mailbox, "Inbox") != 0 || polled.Fetched != mails || polled.Error != "" {
			b.Fatalf("poll %+v left %d mails", polled, graph.Count(mailbox, "Inbox"))
		}
		srv.Stop(b)
	}
	oursRate := float64(mails*b.N) / ours.Seconds()
	bareRate := float64(mails*b.N) / bare.Seconds()
	b.ReportMetric(oursRate, "mails/s")
	b.ReportMetric(bareRate, "bare-mails/s")
	b.ReportMetric(oursRate/bareRate, "x-bare")
	b.ReportMetric(float64(mails*b.N)/tickets.Seconds(), "mails/s-to-tickets")
}
