package ingest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/graphsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
)

// BenchmarkGraphImport measures mails/s imported from a fake Graph on
// loopback and committed (listed with their sizes, downloaded, stored as
// blobs, parsed, MailReceived appended to the embedded store, deleted on
// the server) for 5,000 mails of 3-5 KB, next to a bare Go client that
// lists and downloads the same mails with 4 concurrent requests, in the
// same run, on the same fake:
//
//	go test -run '^$' -bench GraphImport -benchtime 1x ./adapters/ingest
//
// It reports both rates, the ratio (x-bare), the HTTP requests per
// imported mail (req/mail; the deletes go 20 to a JSON batch) and the
// operations Graph counts against its limits (graph-ops/mail: each request
// of a batch).
func BenchmarkGraphImport(b *testing.B) {
	const mails, mailbox = 5000, "bench@example.org"
	raws := make([][]byte, mails)
	for i := range raws {
		raws[i] = benchMail(i)
	}
	var ours, bare time.Duration
	var requests, operations int
	var timed *timedSink
	for range b.N {
		b.StopTimer()
		srv := graphtest.Start(b, graphtest.Options{})
		srv.AddMessages(mailbox, "Inbox", raws)

		start := time.Now()
		if n := srv.BareDownload(b, mailbox, "bench-token"); n != mails {
			b.Fatalf("the bare client downloaded %d mails, want %d", n, mails)
		}
		bare += time.Since(start)

		store := openBenchStore(b, "embedded")
		blobs, err := blobstore.NewFS(filepath.Join(b.TempDir(), "blobs"))
		if err != nil {
			b.Fatal(err)
		}
		sink, err := NewSink(SinkConfig{Store: store, Blobs: blobs, Limits: mimeparse.DefaultLimits(), AccountID: "bench", Now: time.Now})
		if err != nil {
			b.Fatal(err)
		}
		f, err := graphsource.New(graphsource.Config{BaseURL: srv.URL, Mailbox: mailbox,
			TokenSource: func(context.Context) (string, error) { return "bench-token", nil },
			AfterImport: mailsource.AfterImportDelete, Timeout: time.Minute}, nil)
		if err != nil {
			b.Fatal(err)
		}
		srv.ResetCounters()
		b.StartTimer()
		start = time.Now()
		timed = &timedSink{Sink: sink}
		res, err := f.Poll(context.Background(), timed)
		ours += time.Since(start)
		b.StopTimer()
		if err != nil || res.Fetched != mails || srv.Count(mailbox, "Inbox") != 0 {
			b.Fatalf("Poll() = %+v, %v with %d left; want %d fetched and none left", res, err, srv.Count(mailbox, "Inbox"), mails)
		}
		for _, r := range srv.Requests() {
			if r.Batch == "" {
				requests++ // an HTTP request: a listing, a download, a batch
			}
			if r.Path != "/v1.0/$batch" {
				operations++ // what Graph counts: a batch's requests one by one
			}
		}
		if srv.PeakConcurrency(mailbox) > 4 {
			b.Fatalf("peak concurrency %d, want at most 4", srv.PeakConcurrency(mailbox))
		}
		srv.Close()
	}
	oursRate := float64(mails*b.N) / ours.Seconds()
	bareRate := float64(mails*b.N) / bare.Seconds()
	b.ReportMetric(oursRate, "mails/s")
	b.ReportMetric(bareRate, "bare-mails/s")
	b.ReportMetric(oursRate/bareRate, "x-bare")
	b.ReportMetric(float64(requests)/float64(mails*b.N), "req/mail")
	b.ReportMetric(float64(operations)/float64(mails*b.N), "graph-ops/mail")
	// Where the last poll's wall time went: in the sink (parsing, staging),
	// waiting for commits, asking for known keys; the rest is Graph.
	b.ReportMetric(timed.receive.Seconds(), "s-receive")
	b.ReportMetric(timed.commit.Seconds(), "s-commit-wait")
	b.ReportMetric(timed.known.Seconds(), "s-known")
}
