package api

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// longTicket is a ticket of many mails that went through the ingest sink.
type longTicket struct {
	id       string
	position int64
	texts    []string // the whole text of each article's mail, by seq-1
}

// seedLongTicket stores n mails of about size bytes of text each through
// the real ingest sink, opens a ticket with the first and appends the
// others to it, as anyone writing [Ticket#N] in a subject can.
func (e *testEnv) seedLongTicket(tb testing.TB, n, size int) longTicket {
	tb.Helper()
	ctx := context.Background()
	account := uniq("acc-long")
	sink, err := ingest.NewSink(ingest.SinkConfig{Store: e.store, Blobs: e.blobs(tb), Limits: mimeparse.DefaultLimits(),
		AccountID: account, Now: func() time.Time { return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) }})
	if err != nil {
		tb.Fatal(err)
	}
	lt := longTicket{}
	mailIDs := make([]string, n)
	for i := range n {
		raw, text := longTextMail(fmt.Sprintf("long-%d-%s@example.org", i, account), size)
		key := fmt.Sprintf("uid-%d", i)
		if out, err := sink.Receive(ctx, key, int64(len(raw)), bytes.NewReader(raw)); err != nil || out.Reason != "" {
			tb.Fatalf("Receive(%d) = %+v, %v", i, out, err)
		}
		mailIDs[i] = domain.MailIDFor(account, key)
		lt.texts = append(lt.texts, text)
	}
	if err := sink.Commit(ctx); err != nil {
		tb.Fatalf("Commit() error = %v", err)
	}
	lt.id = domain.TicketIDFor(mailIDs[0])
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	evs := []domain.Event{domain.TicketCreated{
		TicketID: lt.id, Number: 100000 + ticketNumbers.Add(1), Subject: "long", Status: domain.StatusNew,
		Requester: domain.Requester{Email: "long@example.org", Source: domain.RequesterAddress}, AccountID: account,
		MessageID: "long-0-" + account + "@example.org", CreatedAt: at, CausedBy: mailIDs[0],
	}}
	for i := 1; i < n; i++ {
		evs = append(evs, domain.MailAppended{TicketID: lt.id, MessageID: fmt.Sprintf("long-%d-%s@example.org", i, account),
			From: domain.Address{Email: "long@example.org"}, Subject: "Re: long", At: at.Add(time.Duration(i) * time.Second),
			CausedBy: mailIDs[i]})
	}
	lt.position = e.appendDomain(tb, domain.TicketStream(lt.id), eventstore.NoStream, evs...)
	return lt
}

// heapDuring runs fn and returns how many bytes the process allocated
// meanwhile and the most its heap grew above where it started, sampled.
func heapDuring(fn func()) (allocated, peak uint64) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var high uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			high = max(high, m.HeapAlloc)
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	fn()
	close(stop)
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	high = max(high, after.HeapAlloc)
	if high > before.HeapAlloc {
		peak = high - before.HeapAlloc
	}
	return after.TotalAlloc - before.TotalAlloc, peak
}

// TestArticleBodies_OneBodyReadsOneMail is not parallel: it measures the
// heap of the whole test process, and parallel tests wait while it runs.
func TestArticleBodies_OneBodyReadsOneMail(t *testing.T) {
	e := newEnv(t, backends()[0])
	agent := e.tokens[domain.RoleAgent]
	// given a ticket of 300 mails of 120 KB each
	const mails, size = 300, 120 << 10
	lt := e.seedLongTicket(t, mails, size)
	path := func(seq int, suffix string) string {
		return fmt.Sprintf("/api/v1/tickets/%s/articles/%d%s?min_position=%d", lt.id, seq, suffix, lt.position)
	}
	var warm bodyOut // the first request also waits for the view and warms what is made once
	e.mustJSON(t, http.MethodGet, path(2, "/body"), agent, nil, http.StatusOK, &warm)

	// when one article's body is read
	var body bodyOut
	allocated, peak := heapDuring(func() {
		e.mustJSON(t, http.MethodGet, path(150, "/body"), agent, nil, http.StatusOK, &body)
	})
	t.Logf("one body of a ticket with %d mails of %d KiB: %d KiB allocated, heap peak +%d KiB (sampled)",
		mails, size>>10, allocated>>10, peak>>10)
	// then it is that mail's whole text
	if strings.TrimRight(body.Text, "\n") != strings.TrimRight(lt.texts[149], "\n") {
		t.Errorf("article 150's body = %d bytes, want its mail's %d", len(body.Text), len(lt.texts[149]))
	}
	// and the request handled about one mail, not the ticket's 300 (36 MB)
	if bound := uint64(64 * size); allocated > bound {
		t.Errorf("one body request allocated %d KiB, want at most %d KiB (64 times one mail)", allocated>>10, bound>>10)
	}

	// the same for the .eml and the attachment list
	allocated, _ = heapDuring(func() {
		resp, raw := e.do(t, http.MethodGet, path(151, "/eml"), agent, nil)
		if resp.StatusCode != http.StatusOK || len(raw) < size {
			t.Errorf(".eml = %d, %d bytes", resp.StatusCode, len(raw))
		}
	})
	t.Logf("one .eml of the same ticket: %d KiB allocated", allocated>>10)
	if bound := uint64(64 * size); allocated > bound {
		t.Errorf("one .eml request allocated %d KiB, want at most %d KiB", allocated>>10, bound>>10)
	}
}

func TestTickets_DetailPagesItsArticles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backends()[0])
	agent := e.tokens[domain.RoleAgent]
	// given a ticket of 230 mails of 10 KB
	const mails = 230
	lt := e.seedLongTicket(t, mails, 10<<10)
	type page struct {
		ticketDetailOut
		Articles []struct {
			projections.Article
			BodyURL string `json:"body_url"`
		} `json:"articles"`
		ArticlesNextCursor string `json:"articles_next_cursor"`
	}
	// when the ticket is read page by page with the default size
	var seqs []int64
	cursor, pages := "", 0
	for {
		path := fmt.Sprintf("/api/v1/tickets/%s?min_position=%d", lt.id, lt.position)
		if cursor != "" {
			path += "&articles_cursor=" + url.QueryEscape(cursor)
		}
		var p page
		e.mustJSON(t, http.MethodGet, path, agent, nil, http.StatusOK, &p)
		pages++
		if p.ArticleCount != mails || p.Version != mails {
			t.Fatalf("ticket = %d articles, version %d; want %d", p.ArticleCount, p.Version, mails)
		}
		for _, a := range p.Articles {
			seqs = append(seqs, a.Seq)
			// then each listed body is cut, says so and links to the whole
			if len(a.TextBody) > 8<<10 || !a.BodyTruncated || !strings.HasPrefix(lt.texts[a.Seq-1], a.TextBody) {
				t.Fatalf("article %d lists %d bytes of text (truncated %v)", a.Seq, len(a.TextBody), a.BodyTruncated)
			}
			if want := fmt.Sprintf("/api/v1/tickets/%s/articles/%d/body", lt.id, a.Seq); a.BodyURL != want {
				t.Fatalf("article %d body_url = %q, want %q", a.Seq, a.BodyURL, want)
			}
		}
		if p.ArticlesNextCursor == "" {
			break
		}
		if len(p.Articles) != 100 {
			t.Errorf("page %d has %d articles and a next cursor, want the default 100", pages, len(p.Articles))
		}
		cursor = p.ArticlesNextCursor
	}
	// then the pages hold every article once, in order
	if pages != 3 || len(seqs) != mails || seqs[0] != 1 || seqs[mails-1] != mails {
		t.Fatalf("%d pages with %d articles (%v...), want 3 pages of articles 1 to %d", pages, len(seqs), seqs[:min(3, len(seqs))], mails)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("article %d follows article %d", seqs[i], seqs[i-1])
		}
	}
	// and a listed article's body_url serves its whole text
	var body bodyOut
	e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s/articles/7/body", lt.id), agent, nil, http.StatusOK, &body)
	if strings.TrimRight(body.Text, "\n") != strings.TrimRight(lt.texts[6], "\n") {
		t.Errorf("body of article 7 = %d bytes, want %d", len(body.Text), len(lt.texts[6]))
	}
	// and a smaller page, and bad paging parameters
	var small page
	e.mustJSON(t, http.MethodGet, "/api/v1/tickets/"+lt.id+"?articles_limit=5&articles_cursor=225", agent, nil, http.StatusOK, &small)
	if len(small.Articles) != 5 || small.Articles[0].Seq != 226 || small.ArticlesNextCursor != "" {
		t.Errorf("articles after 225, 5 a page = %d from %d, next %q; want 226 to 230 and no next",
			len(small.Articles), small.Articles[0].Seq, small.ArticlesNextCursor)
	}
	for _, q := range []string{"articles_limit=0", "articles_limit=201", "articles_cursor=x", "articles_cursor=-1"} {
		e.problem(t, http.MethodGet, "/api/v1/tickets/"+lt.id+"?"+q, agent, nil, http.StatusBadRequest)
	}
}
