package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// serveCPUProfile names a file for a CPU profile of the timed part of
// BenchmarkServeIMAPImport (poll-now until the tickets view holds every
// mail): the profile of the running service, without the set-up and the
// baseline that -cpuprofile would also hold.
var serveCPUProfile = flag.String("serve.cpuprofile", "", "write a CPU profile of BenchmarkServeIMAPImport's timed part to `file`")

// serveBlobStore is the LEDGERDESK_BLOB_STORE of BenchmarkServeIMAPImport's
// serve (file or postgres), to measure a blob store through the service as
// well as in blobbench.
var serveBlobStore = flag.String("serve.blobstore", "file", "the blob store (`file` or postgres) of BenchmarkServeIMAPImport's serve")

// BenchmarkServeIMAPImport measures the whole pipeline in the running
// service: serve on PostgreSQL, one IMAP account on a real Dovecot whose
// INBOX holds 5,000 mails of 3-5 KB, a poll-now; next to a bare go-imap
// UID FETCH of the same mails from the same Dovecot in the same run:
//
//	go test -run '^$' -bench ServeIMAPImport -benchtime 1x ./cmd/ledgerdesk
//
// Both start on freshly delivered mail that one untimed SELECT has let
// Dovecot index. The account is created, and its first (empty) poll done,
// before the mails are delivered, so the scheduler's wait for a new account
// does not count; the account is polled only (push off). The import runs from the poll-now request to the end of
// the poll that imported the mails (its MailboxPolled event: every
// MailReceived committed, the INBOX expunged); mail-to-ticket from the
// same request until GET /api/v1/tickets shows the last mail's ticket.
func BenchmarkServeIMAPImport(b *testing.B) {
	const mails, user, password = 5000, "bench", "bench-pw"
	raws := make([][]byte, mails)
	for i := range raws {
		raws[i] = e2eMail(fmt.Sprintf("customer%d@example.com", i), "bench@desk.example", fmt.Sprintf("question %d", i),
			fmt.Sprintf("bench-%d@example.com", i))
		for len(raws[i]) < 3000+i%2000 {
			raws[i] = append(raws[i], "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n"...)
		}
	}
	var imported, tickets, bare time.Duration
	for i := range b.N {
		b.StopTimer()
		dv := dovecottest.Start(b)
		host, portStr, _ := net.SplitHostPort(dv.IMAPAddr)
		port, _ := strconv.Atoi(portStr)

		bareUser := fmt.Sprintf("bare%d", i)
		dv.AddUser(b, bareUser, password)
		dv.DeliverMany(b, bareUser, raws)
		selectInbox(b, dv.IMAPAddr, bareUser, password)
		start := time.Now()
		if n := bareUIDFetch(b, dv.IMAPAddr, bareUser, password); n != mails {
			b.Fatalf("the bare client fetched %d mails, want %d", n, mails)
		}
		bare += time.Since(start)

		dv.AddUser(b, user, password)
		dbURL := pgtest.NewDatabase(b)
		srv := startServe(b, map[string]string{envDataDir: b.TempDir(), envDatabaseURL: dbURL,
			envSecretKey: strings.Repeat("ab", 32), envAdminToken: e2eToken, envBlobStore: *serveBlobStore})
		api := apiClient{tb: b, base: srv.URL}
		id := api.createdID("/api/v1/inbound-accounts", map[string]any{"name": "bench", "protocol": "imap", "host": host,
			"port": port, "security": "none", "allow_plaintext_auth": true, "username": user, "password": password,
			"poll_interval_seconds": 3600, "after_import": "delete", "account_address": "bench@desk.example", "enabled": true,
			// The measure is one poll-now: an IDLE watch would start
			// polls of its own while the mails are being delivered.
			"push": false})
		db, err := pgxpool.New(context.Background(), dbURL)
		if err != nil {
			b.Fatal(err)
		}
		waitPolled(b, db, id, 0) // the first poll of the empty INBOX
		dv.DeliverMany(b, user, raws)
		selectInbox(b, dv.IMAPAddr, user, password)

		stopProfile := startServeProfile(b)
		b.StartTimer()
		start = time.Now()
		api.must(http.MethodPost, "/api/v1/inbound-accounts/"+id+"/poll", nil)
		polled := waitPolled(b, db, id, mails)
		imported += polled.FinishedAt.Sub(start)
		first := domain.FirstTicketNumber
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
			// The intake numbers tickets in the log's order and the view
			// follows the log: the last number there means all are.
			if newestTicketNumber(b, api) == first+mails-1 {
				tickets += time.Since(start)
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("the tickets view did not reach %d tickets within 5 minutes", mails)
			}
		}
		b.StopTimer()
		stopProfile()
		var received, viewed int
		if err := db.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE event_type = $1`,
			domain.MailReceivedName).Scan(&received); err != nil {
			b.Fatal(err)
		}
		if err := db.QueryRow(context.Background(), `SELECT count(*) FROM tickets`).Scan(&viewed); err != nil {
			b.Fatal(err)
		}
		if received != mails || viewed != mails || dv.Count(b, user) != 0 || polled.Error != "" {
			b.Fatalf("%d MailReceived, %d tickets, %d mails left, poll %+v; want %d, %d, 0 and no error",
				received, viewed, dv.Count(b, user), polled, mails, mails)
		}
		db.Close()
		srv.Stop(b)
		dv.Stop()
	}
	bareRate := float64(mails*b.N) / bare.Seconds()
	importRate := float64(mails*b.N) / imported.Seconds()
	ticketRate := float64(mails*b.N) / tickets.Seconds()
	b.ReportMetric(bareRate, "bare-mails/s")
	b.ReportMetric(importRate, "mails/s")
	b.ReportMetric(importRate/bareRate, "x-bare")
	b.ReportMetric(ticketRate, "mails/s-to-tickets")
	b.ReportMetric(ticketRate/bareRate, "x-bare-to-tickets")
}

// startServeProfile starts the CPU profile -serve.cpuprofile asks for and
// returns what stops it.
func startServeProfile(tb testing.TB) func() {
	tb.Helper()
	if *serveCPUProfile == "" {
		return func() {}
	}
	f, err := os.Create(*serveCPUProfile)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		tb.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// waitPolled waits for the account's first recorded poll that fetched at
// least fetched mails, reading the mailbox stream in the database.
func waitPolled(tb testing.TB, db *pgxpool.Pool, accountID string, fetched int) domain.MailboxPolled {
	tb.Helper()
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		rows, err := db.Query(context.Background(), `SELECT payload FROM events WHERE stream = $1 ORDER BY stream_version`,
			ingest.MailboxStream(accountID))
		if err != nil {
			tb.Fatal(err)
		}
		for rows.Next() {
			var raw []byte
			var ev domain.MailboxPolled
			if err := rows.Scan(&raw); err != nil {
				tb.Fatal(err)
			}
			if err := json.Unmarshal(raw, &ev); err != nil {
				tb.Fatal(err)
			}
			if ev.Fetched >= fetched {
				rows.Close()
				return ev
			}
		}
		if err := rows.Err(); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Fatalf("no poll of account %s fetched %d mails within 5 minutes", accountID, fetched)
	return domain.MailboxPolled{}
}

// newestTicketNumber is the highest ticket number GET /api/v1/tickets
// shows, 0 before the first ticket.
func newestTicketNumber(tb testing.TB, api apiClient) int64 {
	tb.Helper()
	var page struct {
		Items []struct {
			Number int64 `json:"number"`
		} `json:"items"`
	}
	if err := json.Unmarshal(api.must(http.MethodGet, "/api/v1/tickets?limit=1&sort=-number", nil), &page); err != nil {
		tb.Fatal(err)
	}
	if len(page.Items) == 0 {
		return 0
	}
	return page.Items[0].Number
}

// selectInbox logs in and selects INBOX once, which lets Dovecot index
// freshly delivered mail outside the measured time.
func selectInbox(tb testing.TB, addr, user, password string) {
	tb.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Login(user, password).Wait(); err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		tb.Fatal(err)
	}
	if err := c.Logout().Wait(); err != nil {
		tb.Fatal(err)
	}
}

// bareUIDFetch is the baseline: go-imap alone lists the UIDs and downloads
// every mail with UID FETCH BODY.PEEK[] in sets of 500 over one
// connection, to io.Discard, deleting nothing (as imapsource's
// BenchmarkBareUIDFetch does).
func bareUIDFetch(tb testing.TB, addr, user, password string) int {
	tb.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Login(user, password).Wait(); err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		tb.Fatal(err)
	}
	sd, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for chunk := range slices.Chunk(sd.AllUIDs(), 500) {
		fc := c.Fetch(imap.UIDSetNum(chunk...), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
		var copyErr error
		for msg := fc.Next(); msg != nil; msg = fc.Next() {
			for item := msg.Next(); item != nil; item = msg.Next() {
				if body, ok := item.(imapclient.FetchItemDataBodySection); ok && body.Literal != nil {
					if _, err := io.Copy(io.Discard, body.Literal); err != nil && copyErr == nil {
						copyErr = err // keep draining: Close hangs on an unread literal
					}
					n++
				}
			}
		}
		if err := errors.Join(fc.Close(), copyErr); err != nil {
			tb.Fatal(err)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		tb.Fatal(err)
	}
	return n
}
