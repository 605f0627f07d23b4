package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
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
		if n := bareGraphDownload(b, srv.URL, mailbox); n != mails {
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

// bareGraphDownload is the least a client must do to read the folder:
// list the ids a thousand at a time, then GET every /$value with 4
// requests at once, discarding the bytes. It returns how many it read.
func bareGraphDownload(tb testing.TB, base, mailbox string) int {
	tb.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	get := func(u string) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer bench-token")
		req.Header.Set("Prefer", `IdType="ImmutableId"`)
		return client.Do(req)
	}
	users := base + "/v1.0/users/" + url.PathEscape(mailbox)
	var ids []string
	for next := users + "/mailFolders/inbox/messages?$select=id&$top=1000"; next != ""; {
		resp, err := get(next)
		if err != nil {
			tb.Fatal(err)
		}
		var page struct {
			Value []struct {
				ID string `json:"id"`
			} `json:"value"`
			Next string `json:"@odata.nextLink"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			tb.Fatal(err)
		}
		for _, v := range page.Value {
			ids = append(ids, v.ID)
		}
		next = page.Next
	}
	queue := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var n int
	var firstErr error
	for range 4 {
		wg.Go(func() {
			for id := range queue {
				resp, err := get(users + "/messages/" + url.PathEscape(id) + "/$value")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				mu.Lock()
				if err == nil {
					n++
				} else if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		queue <- id
	}
	close(queue)
	wg.Wait()
	if firstErr != nil {
		tb.Fatal(firstErr)
	}
	return n
}
