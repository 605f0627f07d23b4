package mimeparse_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"net/mail"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message/charset"

	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
)

// bigMail returns a reader that generates, without holding it in memory, a
// mail of about size bytes: a short text part and one base64 attachment
// that makes up the rest. It also returns the exact size and the decoded
// size of the attachment.
func bigMail(size int64) (r io.Reader, total, attachment int64) {
	head := strings.Join([]string{
		"From: Sender <sender@example.com>",
		"To: support@example.com",
		"Subject: a big attachment",
		"Message-ID: <big@example.com>",
		"MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="bench"`,
		"",
		"--bench",
		"Content-Type: text/plain; charset=utf-8",
		"",
		"see the attachment",
		"--bench",
		"Content-Type: application/octet-stream",
		`Content-Disposition: attachment; filename="big.bin"`,
		"Content-Transfer-Encoding: base64",
		"",
		"",
	}, "\r\n")
	tail := "\r\n--bench--\r\n"
	raw := make([]byte, 57) // 57 bytes encode to one 76-character line
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	line := base64.StdEncoding.EncodeToString(raw) + "\r\n"
	lines := (size - int64(len(head)+len(tail))) / int64(len(line))
	body := &repeatReader{unit: []byte(line), left: lines * int64(len(line))}
	total = int64(len(head)) + lines*int64(len(line)) + int64(len(tail))
	return io.MultiReader(strings.NewReader(head), body, strings.NewReader(tail)), total, lines * 57
}

// repeatReader yields unit over and over until left bytes were read. The
// last line break before the tail's boundary belongs to the boundary, so
// the generated line ends are stripped by the parser as RFC 2046 says.
type repeatReader struct {
	unit []byte
	off  int
	left int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.left > 0 {
		c := copy(p[n:], r.unit[r.off:])
		if int64(c) > r.left {
			c = int(r.left)
		}
		n += c
		r.left -= int64(c)
		r.off = (r.off + c) % len(r.unit)
	}
	return n, nil
}

// heapSampler records the peak of live heap bytes while it runs.
type heapSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak atomic.Uint64
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() {
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v > h.peak.Load() {
			h.peak.Store(v)
		}
	}
	read()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				read()
				return
			case <-t.C:
				read()
			}
		}
	}()
	return h
}

func (h *heapSampler) done() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak.Load()
}

func liveHeap() uint64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

// BenchmarkParse50MB parses a generated 50 MB mail streamed from a reader.
// Besides allocations per op it reports peak-heap-MB: the highest live heap
// seen while parsing, above the heap before it. The attachment is counted,
// not kept, so this stays far below the mail's size.
func BenchmarkParse50MB(b *testing.B) {
	const size = 50 << 20
	b.ReportAllocs()
	var peakAbove uint64
	for b.Loop() {
		r, total, _ := bigMail(size)
		b.SetBytes(total)
		idle := liveHeap()
		hs := startHeapSampler()
		s, err := mimeparse.Parse(r, mimeparse.DefaultLimits())
		peak := hs.done()
		if err != nil {
			b.Fatalf("Parse() error = %v", err)
		}
		if s.Size != total {
			b.Fatalf("Size = %d, want %d", s.Size, total)
		}
		if peak > idle && peak-idle > peakAbove {
			peakAbove = peak - idle
		}
	}
	b.ReportMetric(float64(peakAbove)/(1<<20), "peak-heap-MB")
}

// TestParse_LargeMailMemoryIsBounded parses a 16 MB mail from a stream and
// checks that the bytes allocated during the whole parse stay a small
// constant, far below the mail's size: nothing proportional to an
// attachment is ever held. It is not parallel, so no other test allocates
// meanwhile.
func TestParse_LargeMailMemoryIsBounded(t *testing.T) {
	const size = 16 << 20
	const maxAlloc = 4 << 20
	r, total, attSize := bigMail(size)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := mimeparse.Parse(r, mimeparse.DefaultLimits())
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	if len(s.Attachments) != 1 || s.Attachments[0].Size != attSize || s.Size != total {
		t.Fatalf("Parse() Attachments = %+v, Size = %d; want one attachment of %d bytes and Size %d",
			s.Attachments, s.Size, attSize, total)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > maxAlloc {
		t.Errorf("Parse() of a %d-byte mail allocated %d bytes, want at most %d", total, alloc, maxAlloc)
	} else {
		t.Logf("Parse() of a %d-byte mail allocated %d bytes in total", total, alloc)
	}
}

// BenchmarkParseCorpus parses every mail of the corpus (real-world headers
// in many charsets) per op. Its baseline, measured in the same run, is the
// standard library reading the same mails' headers (net/mail.ReadMessage,
// mime.WordDecoder on the Subject, AddressList on From and To), which
// repairs and decodes far less; x-stdlib is the ratio between the two.
func BenchmarkParseCorpus(b *testing.B) {
	dir := corpusDir(b)
	var mails [][]byte
	for _, f := range corpusMails(b, dir) {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		mails = append(mails, raw)
	}
	dec := &mime.WordDecoder{CharsetReader: charset.Reader}
	var ours, stdlib time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		for _, raw := range mails {
			_, _ = mimeparse.ParseBytes(raw, mimeparse.DefaultLimits())
		}
		mid := time.Now()
		for _, raw := range mails {
			m, err := mail.ReadMessage(bytes.NewReader(raw))
			if err != nil {
				continue
			}
			_, _ = dec.DecodeHeader(m.Header.Get("Subject"))
			_, _ = m.Header.AddressList("From")
			_, _ = m.Header.AddressList("To")
			_, _ = io.Copy(io.Discard, m.Body)
		}
		ours += mid.Sub(start)
		stdlib += time.Since(mid)
	}
	perMail := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*len(mails)) }
	b.ReportMetric(perMail(ours), "ns/mail")
	b.ReportMetric(perMail(stdlib), "stdlib-ns/mail")
	b.ReportMetric(float64(ours)/float64(stdlib), "x-stdlib")
}
