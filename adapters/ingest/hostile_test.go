package ingest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// hostileMail is one generated attack on the parser and what it must end as.
type hostileMail struct {
	name string
	raw  func() []byte
	want mailsource.Status
}

func lines(ls ...string) string { return strings.Join(ls, "\r\n") }

// hostileMails generates the corpus: structures that blow up naive MIME
// parsers (nesting, part counts, line lengths), bytes that break SQL (NUL
// and control characters everywhere), charsets nobody knows, and bodies
// that grow when decoded and rendered. MIME has no compression, so the
// "bombs" use the amplifiers a parser does have: one raw byte to three of
// UTF-8 (windows-1252 0x80 is U+20AC) and HTML escaping of the text ("&"
// to "&amp;").
func hostileMails() []hostileMail {
	const ctl = "\x00\x01\x07\x1b\x7f"
	deepMultipart := func(n int) []byte {
		var b strings.Builder
		b.WriteString("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i-1, i)
		}
		fmt.Fprintf(&b, "--b%d\r\n\r\nleaf\r\n", n)
		return []byte(b.String())
	}
	manyParts := func(n int) []byte {
		var b strings.Builder
		b.WriteString("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n")
		for range n {
			b.WriteString("--p\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n")
		}
		b.WriteString("--p--\r\n")
		return []byte(b.String())
	}
	nestedMessages := func(n int) []byte {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "From: level%d@example.com\r\nSubject: level %d\r\nContent-Type: message/rfc822\r\n\r\n", i, i)
		}
		b.WriteString("From: inner@example.com\r\nSubject: inner\r\n\r\nthe innermost text\r\n")
		return []byte(b.String())
	}
	b64Line := func(decoded []byte) string { return base64.StdEncoding.EncodeToString(decoded) }
	b64Lines := func(decoded []byte) string {
		s := b64Line(decoded)
		var b strings.Builder
		for len(s) > 76 {
			b.WriteString(s[:76] + "\r\n")
			s = s[76:]
		}
		b.WriteString(s)
		return b.String()
	}
	return []hostileMail{
		{name: "1,000 nested multiparts", want: mailsource.StatusFailed, raw: func() []byte { return deepMultipart(1000) }},
		{name: "10,000 parts", want: mailsource.StatusFailed, raw: func() []byte { return manyParts(10000) }},
		{name: "1,000 nested message/rfc822", want: mailsource.StatusFailed, raw: func() []byte { return nestedMessages(1000) }},
		{name: "40 nested message/rfc822", want: mailsource.StatusReceived, raw: func() []byte { return nestedMessages(40) }},
		{name: "a 1 MB From line", want: mailsource.StatusReceived, raw: func() []byte {
			return []byte(lines("From: "+strings.Repeat("a", 1_000_000)+"@example.com", "Sender: s@example.com",
				"Subject: long sender", "", "body"))
		}},
		{name: "a 1 MB Subject line", want: mailsource.StatusReceived, raw: func() []byte {
			return []byte(lines("From: a@example.com", "Subject: "+strings.Repeat("s ", 500_000), "", "body"))
		}},
		{name: "a 1.1 MB header line", want: mailsource.StatusFailed, raw: func() []byte {
			return []byte(lines("From: a@example.com", "X-Long: "+strings.Repeat("x", 1_100_000), "", "body"))
		}},
		{name: "a To header of 40,000 addresses", want: mailsource.StatusReceived, raw: func() []byte {
			as := make([]string, 40000)
			for i := range as {
				as[i] = fmt.Sprintf("u%d@example.com", i)
			}
			return []byte(lines("From: a@example.com", "To: "+strings.Join(as, ", "), "", "body"))
		}},
		{name: "NUL and control bytes in every header", want: mailsource.StatusReceived, raw: func() []byte {
			return []byte(lines(
				"Return-Path: <r"+ctl+"@example.com>",
				"Delivered-To: d"+ctl+"@example.com",
				"From: Ev"+ctl+"il <e"+ctl+"@example.com>",
				"Sender: =?utf-8?q?s=00=0D=0A?= <s"+ctl+"@example.com>",
				"Reply-To: r"+ctl+"@example.com",
				"To: t"+ctl+"@example.com, ok@example.com",
				"Cc: =?utf-8?q?c=00c?= <c@example.com>",
				"Subject: sub"+ctl+"ject =?utf-8?q?=00=0D=0ABcc:_x@example.com?=",
				"Message-ID: <m"+ctl+"@example.com>",
				"In-Reply-To: <i"+ctl+"@example.com>",
				"References: <r"+ctl+"@example.com> <ok@example.com>",
				"Date: Mon, 07 May 2012 08:45:46 +0200"+ctl,
				"Auto-Submitted: auto"+ctl,
				"Precedence: bulk"+ctl,
				"List-Id: <l"+ctl+"@example.com>",
				"MIME-Version: 1.0"+ctl,
				`Content-Type: multipart/mixed; boundary="c`+ctl+`"`,
				"",
				"--c"+ctl,
				"Content-Type: text/plain; charset=utf-8"+ctl,
				"",
				"text with a NUL \x00 inside",
				"--c"+ctl,
				"Content-Type: application/pdf"+ctl+"; name=\"f"+ctl+".pdf\"",
				"Content-Disposition: attachment; filename*=utf-8''f%00%0D%0A.pdf",
				"Content-ID: <cid"+ctl+"@example.com>",
				"Content-Transfer-Encoding: base64"+ctl,
				"",
				"AAAA",
				"--c"+ctl+"--",
				""))
		}},
		{name: "unknown and broken charsets", want: mailsource.StatusReceived, raw: func() []byte {
			return []byte(lines(
				"From: =?x-klingon?q?Q=FF=FE?= <k@example.com>",
				"Subject: =?"+strings.Repeat("c", 5000)+"?b?AAAA?= =?utf-7?b?K0FHRUFZUS0=?= =?iso-2022-jp?b?GyRCJSIbKEI=?=",
				`Content-Type: multipart/mixed; boundary="cs"`,
				"",
				"--cs",
				"Content-Type: text/plain; charset=x-klingon",
				"",
				"\xff\xfe\x80 klingon",
				"--cs",
				"Content-Type: text/plain; charset=\""+strings.Repeat("z", 10000)+"\"",
				"",
				"long charset name",
				"--cs",
				"Content-Type: text/plain; charset=iso-2022-jp",
				"",
				"\x1b$B\xff\xff\x1b(B broken escape",
				"--cs",
				"Content-Type: text/html; charset=utf-16",
				"",
				"\xff\xfe<\x00p\x00>\x00",
				"--cs",
				"Content-Type: application/octet-stream; name*=x-unknown''%FF%FE.bin",
				"",
				"x",
				"--cs--",
				""))
		}},
		{name: "a 5 MB base64 line", want: mailsource.StatusReceived, raw: func() []byte {
			return []byte(lines("From: a@example.com", "Subject: one line", `Content-Type: multipart/mixed; boundary="l"`, "",
				"--l", "Content-Type: application/octet-stream; name=big.bin", "Content-Transfer-Encoding: base64", "",
				b64Line(bytes.Repeat([]byte{0xde, 0xad, 0xbe}, (5<<20)/4)), "--l--", ""))
		}},
		{name: "a base64 bomb: 3 MB of & and 0x80, rendered as HTML", want: mailsource.StatusReceived, raw: func() []byte {
			return []byte(lines("From: a@example.com", "Subject: base64 bomb", `Content-Type: multipart/mixed; boundary="x"`, "",
				"--x", "Content-Type: text/plain; charset=windows-1252", "Content-Transfer-Encoding: base64", "",
				b64Lines(bytes.Repeat([]byte("&\x80"), (3<<20)/2)),
				"--x", "Content-Type: text/html", "", "<p>signature</p>", "--x--", ""))
		}},
		{name: "a quoted-printable bomb: 3 MB of =26=80, rendered as HTML", want: mailsource.StatusReceived, raw: func() []byte {
			qp := strings.Repeat(strings.Repeat("=26=80", 12)+"=\r\n", (3<<20)/75)
			return []byte(lines("From: a@example.com", "Subject: qp bomb", `Content-Type: multipart/mixed; boundary="q"`, "",
				"--q", "Content-Type: text/plain; charset=windows-1252", "Content-Transfer-Encoding: quoted-printable", "",
				qp, "--q", "Content-Type: text/html", "", "<p>signature</p>", "--q--", ""))
		}},
		{name: "10,000 Received headers", want: mailsource.StatusReceived, raw: func() []byte {
			return []byte(strings.Repeat("Received: from x by y; Mon, 07 May 2012 08:45:46 +0200\r\n", 10000) +
				"From: a@example.com\r\n\r\nbody")
		}},
		{name: "a boundary that never comes", want: mailsource.StatusReceived, raw: func() []byte {
			return []byte(lines("From: a@example.com", `Content-Type: multipart/mixed; boundary="never"`, "",
				strings.Repeat("no boundary here\r\n", 100000)))
		}},
		{name: "binary garbage", want: mailsource.StatusFailed, raw: func() []byte {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = byte(i*7 + i>>8)
			}
			return b
		}},
		{name: "nothing at all", want: mailsource.StatusFailed, raw: func() []byte { return nil }},
	}
}

// heapSampler records the largest HeapInuse seen while it runs.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done sync.WaitGroup
}

func startHeapSampler(every time.Duration) *heapSampler {
	s := &heapSampler{stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > s.peak.Load() {
				s.peak.Store(m.HeapInuse)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *heapSampler) Stop() uint64 {
	close(s.stop)
	s.done.Wait()
	return s.peak.Load()
}

// TestSink_HostileMailCorpus runs every generated hostile mail through the
// real parse and stage path into an embedded store: each must end as
// MailReceived or as MailFailed with a reason, without a panic, and what is
// stored must hold no NUL and no sender beyond RFC 5321's limits. It logs
// the peak heap (HeapInuse, sampled every 5 ms) per mail and overall. It is
// not parallel, so that the heap figures are its own.
func TestSink_HostileMailCorpus(t *testing.T) {
	store := openBenchStore(t, "embedded")
	ctx := context.Background()
	blobs, err := blobstore.NewFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	sink, err := NewSink(SinkConfig{Store: store, Blobs: blobs, Limits: mimeparse.DefaultLimits(), AccountID: "hostile", Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}

	corpus := hostileMails()
	var received, failed int
	var overall uint64
	started := time.Now()
	for i, m := range corpus {
		raw := m.raw()
		key := fmt.Sprintf("pop3/hostile-%02d", i)
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		sampler := startHeapSampler(5 * time.Millisecond)
		mailStart := time.Now()
		out, err := sink.Receive(ctx, key, int64(len(raw)), bytes.NewReader(raw))
		if err == nil {
			err = sink.Commit(ctx)
		}
		peak := sampler.Stop()
		overall = max(overall, peak)
		if err != nil {
			t.Errorf("%s: Receive/Commit error = %v, want the mail recorded", m.name, err)
			continue
		}
		switch {
		case out.Status == mailsource.StatusFailed && out.Reason == "":
			t.Errorf("%s: failed without a reason", m.name)
		case out.Status != m.want:
			t.Errorf("%s: status %v (%s), want %v", m.name, out.Status, out.Reason, m.want)
		}
		if out.Status == mailsource.StatusFailed {
			failed++
		} else {
			received++
		}
		t.Logf("%-58s %9d bytes  %-8s peak heap %5.1f MiB (%+5.1f MiB)  %4dms  %s", m.name, len(raw), statusName(out.Status),
			float64(peak)/(1<<20), (float64(peak)-float64(base.HeapInuse))/(1<<20), time.Since(mailStart).Milliseconds(),
			out.Reason)
	}

	t.Logf("hostile corpus: %d mails, %d MailReceived, %d MailFailed, peak heap %.1f MiB, %v",
		len(corpus), received, failed, float64(overall)/(1<<20), time.Since(started).Round(time.Millisecond))

	evs, err := store.ReadAll(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	perKey := map[string]int{}
	for _, e := range evs {
		if bytes.Contains(e.Payload, []byte(`\u0000`)) {
			t.Errorf("%s event %s holds a NUL", e.Type, e.ID)
		}
		switch e.Type {
		case domain.MailReceivedName:
			var r struct { // not the bodies: decoding megabytes of them is slow under -race
				SourceKey string         `json:"source_key"`
				MessageID string         `json:"message_id"`
				From      domain.Address `json:"from"`
			}
			if err := json.Unmarshal(e.Payload, &r); err != nil {
				t.Fatal(err)
			}
			perKey[r.SourceKey]++
			if len(r.From.Email) > 254 || strings.ContainsFunc(r.From.Email, unicode.IsControl) ||
				len(r.MessageID) > 998 || strings.ContainsFunc(r.MessageID, unicode.IsControl) {
				t.Errorf("%s: sender %q or Message-ID %q cannot be indexed", r.SourceKey, short(r.From.Email), short(r.MessageID))
			}
		case domain.MailFailedName:
			var f domain.MailFailed
			if err := json.Unmarshal(e.Payload, &f); err != nil {
				t.Fatal(err)
			}
			perKey[f.SourceKey]++
		}
	}
	for i, m := range corpus {
		if n := perKey[fmt.Sprintf("pop3/hostile-%02d", i)]; n != 1 {
			t.Errorf("%s: %d intake events, want 1", m.name, n)
		}
	}
}

func statusName(s mailsource.Status) string {
	switch s {
	case mailsource.StatusReceived:
		return "received"
	case mailsource.StatusFailed:
		return "failed"
	}
	return fmt.Sprint(int(s))
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}
