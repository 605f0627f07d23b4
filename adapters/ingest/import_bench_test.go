package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/imapsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/adapters/pop3source"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

// benchMail is a 3-5 KB mail.
func benchMail(n int) []byte {
	body := strings.Repeat(fmt.Sprintf("This is line of mail %d, long enough to look like a customer's text.\r\n", n), 40+n%25)
	return fmt.Appendf(nil, "From: Customer <c%d@example.com>\r\nTo: support@example.org\r\nSubject: bench %d\r\n"+
		"Message-ID: <bench-%d@example.com>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s",
		n, n, n, body)
}

func openBenchStore(tb testing.TB, kind string) eventstore.Store {
	tb.Helper()
	return storetest.Open(tb, kind)
}

func hostPort(tb testing.TB, addr string) (string, int) {
	tb.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func benchFetcher(tb testing.TB, protocol string, dv *dovecottest.Server) mailsource.Fetcher {
	tb.Helper()
	logger := slog.New(slog.DiscardHandler)
	if protocol == "imap" {
		h, p := hostPort(tb, dv.IMAPAddr)
		f, err := imapsource.New(imapsource.Config{Host: h, Port: p, Security: mailsource.SecurityNone, AllowPlaintextAuth: true, Username: "bench",
			Password: "pw", Folders: []string{"INBOX"}, AfterImport: mailsource.AfterImportDelete, Timeout: time.Minute}, logger)
		if err != nil {
			tb.Fatal(err)
		}
		return f
	}
	h, p := hostPort(tb, dv.POP3Addr)
	f, err := pop3source.New(pop3source.Config{Host: h, Port: p, Security: mailsource.SecurityNone, AllowPlaintextAuth: true, Username: "bench",
		Password: "pw", AfterImport: mailsource.AfterImportDelete, Timeout: time.Minute}, logger)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// BenchmarkImport measures mails/s imported from a real Dovecot and
// committed (blob stored, parsed, MailReceived appended, deleted on the
// server) for 10,000 mails of 3-5 KB. Compare with imapsource's
// BenchmarkBareUIDFetch and pop3source's BenchmarkBareRETR in the same run:
//
//	go test -run '^$' -bench 'Import|Bare' -benchtime 1x ./adapters/ingest ./adapters/imapsource ./adapters/pop3source
func BenchmarkImport(b *testing.B) {
	const mails = 10000
	for _, protocol := range []string{"imap", "pop3"} {
		for _, kind := range []string{"postgres", "embedded"} {
			b.Run(protocol+"/"+kind, func(b *testing.B) {
				raws := make([][]byte, mails)
				for i := range raws {
					raws[i] = benchMail(i)
				}
				var total time.Duration
				var timed *timedSink
				for range b.N {
					b.StopTimer()
					dv := dovecottest.Start(b)
					dv.AddUser(b, "bench", "pw")
					dv.DeliverMany(b, "bench", raws)
					store := openBenchStore(b, kind)
					blobs, err := blobstore.NewFS(filepath.Join(b.TempDir(), "blobs"))
					if err != nil {
						b.Fatal(err)
					}
					sink, err := NewSink(SinkConfig{Store: store, Blobs: blobs, Limits: mimeparse.DefaultLimits(),
						AccountID: "bench", Now: time.Now})
					if err != nil {
						b.Fatal(err)
					}
					f := benchFetcher(b, protocol, dv)
					if protocol == "imap" {
						// As imapsource's BenchmarkBareUIDFetch does: one untimed
						// SELECT lets Dovecot index the fresh mails first.
						if err := f.Check(context.Background()); err != nil {
							b.Fatal(err)
						}
					}
					b.StartTimer()
					start := time.Now()
					timed = &timedSink{Sink: sink}
					res, err := f.Poll(context.Background(), timed)
					total += time.Since(start)
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					if res.Fetched != mails || dv.Count(b, "bench") != 0 {
						b.Fatalf("fetched %d, %d left on the server; want %d and 0", res.Fetched, dv.Count(b, "bench"), mails)
					}
					dv.Stop()
				}
				b.ReportMetric(float64(mails*b.N)/total.Seconds(), "mails/s")
				// Where the last poll's wall time went: in the sink (reading the
				// mail off the wire, parsing, committing) and the rest (listing,
				// deleting on the server).
				b.ReportMetric(timed.receive.Seconds(), "s-receive")
				b.ReportMetric(timed.commit.Seconds(), "s-commit-wait")
				b.ReportMetric(timed.known.Seconds(), "s-known")
			})
		}
	}
}

// BenchmarkImport50MB imports one mail with a 50 MB attachment over IMAP
// and reports the peak heap above the idle footprint, sampled every
// millisecond while it runs.
func BenchmarkImport50MB(b *testing.B) {
	const size = 50 << 20
	raw := bigMail(size)
	for range b.N {
		b.StopTimer()
		dv := dovecottest.Start(b)
		dv.AddUser(b, "bench", "pw")
		dv.Deliver(b, "bench", raw)
		store := openBenchStore(b, "embedded")
		blobs, err := blobstore.NewFS(filepath.Join(b.TempDir(), "blobs"))
		if err != nil {
			b.Fatal(err)
		}
		sink, err := NewSink(SinkConfig{Store: store, Blobs: blobs, Limits: mimeparse.DefaultLimits(), AccountID: "bench", Now: time.Now})
		if err != nil {
			b.Fatal(err)
		}
		f := benchFetcher(b, "imap", dv)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		idle := ms.HeapInuse
		var peak atomic.Uint64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			var m runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}()
		b.StartTimer()
		res, err := f.Poll(context.Background(), sink)
		b.StopTimer()
		close(stop)
		<-done
		if err != nil || res.Fetched != 1 {
			b.Fatalf("Poll = %+v, %v; want 1 fetched", res, err)
		}
		above := float64(peak.Load()) - float64(idle)
		b.ReportMetric(above/(1<<20), "peak-MB-above-idle")
		b.ReportMetric(above/float64(len(raw)), "peak/mail-size")
		dv.Stop()
	}
}

// bigMail is a mail with one base64 attachment of about n bytes on the wire.
func bigMail(n int) []byte {
	var sb strings.Builder
	sb.WriteString("From: Big <big@example.com>\r\nTo: support@example.org\r\nSubject: a large scan\r\n" +
		"Message-ID: <big-1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--b1\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Disposition: attachment; filename=\"scan.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 3)[:76] + "\r\n"
	for sb.Len() < n {
		sb.WriteString(line)
	}
	sb.WriteString("--b1--\r\n")
	return []byte(sb.String())
}
