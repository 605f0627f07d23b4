package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/faultproxy"
	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// The fault tests of issue 14 import mail through a `ledgerdesk serve`
// child process while something it depends on fails: PostgreSQL restarts,
// the blob store's file system fills up, connections to the mail server
// are cut in mid-mail. Each proves that no mail is lost or imported twice
// and logs its figures (t.Logf, lines starting "figures:").

// envFaultTests opts into the fault tests that disturb more than their own
// processes: restarting the machine's shared PostgreSQL cluster.
const envFaultTests = "LEDGERDESK_FAULT_TESTS"

// envFaultScale multiplies the mail counts of the fault tests (default 1),
// for a longer run than the default suite can afford.
const envFaultScale = "LEDGERDESK_FAULT_SCALE"

func faultScale(tb testing.TB) int {
	tb.Helper()
	v := os.Getenv(envFaultScale)
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a whole number of at least 1", envFaultScale, v)
	}
	return n
}

// restartMails is how many mails the PostgreSQL restart tests import (times
// LEDGERDESK_FAULT_SCALE), and restartCount how often they restart it.
const (
	restartMails = 5000
	restartCount = 5
)

// TestFault_PostgresRestartsDuringImport imports 5,000 mails over IMAP with
// serve on PostgreSQL and restarts PostgreSQL five times at spread moments
// of the import, alternating PostgreSQL's fast shutdown (what pg_ctl restart
// does) with an immediate one (a crash, recovered from the WAL). The
// cluster is the test's own, so this disturbs no other test. serve must
// recover by itself (no poll-now), /readyz must answer 503 while the
// database is down and 200 after, and every mail must end with exactly one
// MailReceived and the mailbox empty.
func TestFault_PostgresRestartsDuringImport(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a child process, Dovecot and a private PostgreSQL")
	}
	t.Parallel()
	pg := startPrivatePostgres(t)
	dbURL := pg.createDatabase(t, "ledgerdesk")
	runRestartScenario(t, dbURL, restartPlan{restart: func(tb testing.TB, n int, w *readyWatch) (string, time.Time) {
		tb.Helper()
		mode, sig := "fast", syscall.SIGINT
		if n%2 == 0 {
			mode, sig = "immediate", syscall.SIGQUIT
		}
		downAt := time.Now()
		pg.stop(tb, sig)
		// Down for as long as it takes serve to notice, so that each
		// restart proves the 503 rather than racing it.
		if _, ok := w.waitFor(downAt, http.StatusServiceUnavailable, 15*time.Second); !ok {
			tb.Errorf("restart %d: /readyz did not answer 503 within 15s of PostgreSQL stopping", n)
		}
		pg.start(tb)
		return mode, time.Now()
	}})
}

// envFaultCluster names the Debian cluster ("15/main", as pg_lsclusters
// lists it) that TestFault_SharedPostgresRestartsDuringImport restarts. It
// must be the server of LEDGERDESK_TEST_DATABASE_URL (pgtest's default is
// 127.0.0.1:5432); unset, it is the one cluster named main.
const envFaultCluster = "LEDGERDESK_FAULT_PG_CLUSTER"

// TestFault_SharedPostgresRestartsDuringImport is the same import (read at
// 768 KB/s, see below), but restarts the machine's cluster with
// pg_ctlcluster, the one every other test's database lives on: it runs only when LEDGERDESK_FAULT_TESTS=1,
// and never in parallel with this package's other tests (tests of other
// packages running at the same time are still disturbed).
func TestFault_SharedPostgresRestartsDuringImport(t *testing.T) {
	if os.Getenv(envFaultTests) != "1" {
		t.Skipf("restarts the shared PostgreSQL cluster under every other test; run it alone with %s=1: "+
			"%s=1 go test -run TestFault_SharedPostgres ./cmd/ledgerdesk/ (%s picks the cluster)",
			envFaultTests, envFaultTests, envFaultCluster)
	}
	if testing.Short() {
		t.Skip("end-to-end with a child process, Dovecot and PostgreSQL")
	}
	cluster := os.Getenv(envFaultCluster)
	if cluster == "" {
		mains, _ := filepath.Glob("/etc/postgresql/*/main")
		if len(mains) != 1 {
			t.Fatalf("want exactly one cluster named main under /etc/postgresql, found %v; set %s", mains, envFaultCluster)
		}
		cluster = filepath.Base(filepath.Dir(mains[0])) + "/main"
	}
	version, name, ok := strings.Cut(cluster, "/")
	if !ok {
		t.Fatalf("%s=%q: want version/name, e.g. 15/main", envFaultCluster, cluster)
	}
	dbURL := pgtest.NewDatabase(t)
	// pg_ctlcluster restart returns about two seconds after the server is
	// up again (it polls every half second, then checks), longer than the
	// rest of a 5,000-mail import from a local Dovecot takes. So it runs in
	// the background while the scenario watches /readyz, and the mails
	// come over a link of 768 KB/s: 5,000 mails take about 25 s, and the
	// restarts, 800 mails apart, about 4 s.
	var pending chan error
	finish := func(tb testing.TB) {
		tb.Helper()
		if pending != nil {
			if err := <-pending; err != nil {
				tb.Errorf("pg_ctlcluster %s %s restart: %v", version, name, err)
			}
			pending = nil
		}
	}
	t.Cleanup(func() { finish(t) })
	runRestartScenario(t, dbURL, restartPlan{throttle: 768 << 10, restart: func(tb testing.TB, _ int, _ *readyWatch) (string, time.Time) {
		tb.Helper()
		finish(tb)
		done := make(chan error, 1)
		pending = done
		go func() {
			out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart").CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%w\n%s", err, out)
			}
			done <- err
		}()
		return "pg_ctlcluster restart", time.Time{}
	}})
	finish(t)
}

// restartFunc restarts PostgreSQL for the n-th time (from 1) and returns
// how (for the figures) and when it accepted connections again (zero when
// it does not know).
type restartFunc func(tb testing.TB, n int, w *readyWatch) (mode string, upAt time.Time)

// restartPlan says how the mails meet the restarts.
type restartPlan struct {
	restart restartFunc
	// throttle, when above 0, is the bytes per second at which the mail
	// server sends, for a restart that takes longer to finish
	// (pg_ctlcluster) than an import from a local Dovecot lasts.
	throttle int
}

func runRestartScenario(t *testing.T, dbURL string, plan restartPlan) {
	t.Helper()
	total := restartMails * faultScale(t)
	r := newFaultRig(t, dbURL, t.TempDir())
	// All mails are in the mailbox before the account exists: a poll
	// during the delivery would import a first part while the rest is
	// still being written, which on a loaded machine is most of it.
	r.deliver(total, 0)
	r.start()
	w := watchReady(t, r.base)
	mailAddr := r.dv.IMAPAddr
	if plan.throttle > 0 {
		mailAddr = startSlowProxy(t, mailAddr, plan.throttle)
	}
	r.addAccount("imap", mailAddr, 1)

	// committed counts the mails the store holds. The pool's connections
	// die with the server: a query on a dead one fails once and the pool
	// drops it, so a failure is tried again until the deadline.
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	committed := func() int {
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var n int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM mail_sources`).Scan(&n)
			cancel()
			if err == nil {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("count committed mails: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCommitted := func(what string, cond func(n int) bool) time.Time {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if cond(committed()) {
				return time.Now()
			}
			if time.Now().After(deadline) {
				_ = r.c.cmd.Process.Signal(syscall.SIGQUIT)
				_ = r.c.cmd.Wait()
				t.Fatalf("%s: not within 2 minutes (%d committed, %d in the mailbox); log tail:\n%s",
					what, committed(), r.inMailbox(), tail(r.c.log.String(), 30000))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 14))
	var began time.Time // the import's start: the scheduler picks a new account up within 10 s
	var unready, readyAfterUp, resumedAfter []time.Duration
	hit := 0 // restarts that came while mails were left to commit
	// The fetcher commits 500 mails at a time while it downloads the next
	// 500, a few hundred milliseconds a batch. Restart n comes once n/5 of
	// all but the last two batches have committed, plus up to 50 ms: in the
	// download or the commit of a following batch, after the import has
	// resumed from restart n-1, and with mail left for restart 5 to hit.
	for n := 1; n <= restartCount; n++ {
		threshold := (total - 1000) * n / restartCount
		waitCommitted(fmt.Sprintf("before restart %d, %d mails committed", n, threshold), func(c int) bool { return c >= threshold })
		if began.IsZero() {
			began = time.Now()
		}
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
		before := committed()
		if before < r.mails {
			hit++
		}
		t0 := time.Now()
		mode, upAt := plan.restart(t, n, w)
		downAt, ok := w.waitFor(t0, http.StatusServiceUnavailable, 30*time.Second)
		if !ok {
			downAt = t0 // counted below: /readyz must have answered 503 at least once
		}
		var readyAt time.Time
		if upAt.IsZero() {
			// While a shutdown begins, a pooled connection may still answer
			// the ping between refused new ones: wait for 200 to last.
			readyAt, ok = w.waitForSteady(downAt, http.StatusOK, 500*time.Millisecond, time.Minute)
		} else {
			readyAt, ok = w.waitFor(later(downAt, upAt), http.StatusOK, time.Minute)
		}
		if !ok {
			t.Fatalf("restart %d: /readyz not 200 within a minute of PostgreSQL accepting connections; log tail:\n%s",
				n, tail(r.c.log.String(), 5000))
		}
		unready = append(unready, readyAt.Sub(downAt).Round(time.Millisecond))
		line := fmt.Sprintf("restart %d (%s) with %d of %d mails committed: /readyz 503 for %v", n, mode, before, r.mails, unready[n-1])
		if !upAt.IsZero() {
			readyAfterUp = append(readyAfterUp, readyAt.Sub(upAt).Round(time.Millisecond))
			line += fmt.Sprintf(", 200 %v after PostgreSQL accepted connections", readyAfterUp[n-1])
		}
		if atReady := committed(); atReady < r.mails {
			resumedAt := waitCommitted(fmt.Sprintf("import resumes after restart %d", n), func(c int) bool { return c > atReady })
			resumedAfter = append(resumedAfter, resumedAt.Sub(readyAt).Round(time.Millisecond))
			line += fmt.Sprintf("; the next batch committed %v after /readyz 200", resumedAfter[len(resumedAfter)-1])
		} else {
			line += "; nothing was left to import"
		}
		t.Log(line)
	}
	r.waitEmpty(3 * time.Minute)
	wall := time.Since(began).Round(time.Millisecond)
	if code := readyzCode(t, r.base); code != http.StatusOK {
		t.Errorf("/readyz at the end = %d, want 200", code)
	}
	r.c.stop(t)
	w.close()
	tl := r.checkExactlyOnce()
	n503 := w.count(http.StatusServiceUnavailable)
	if n503 == 0 {
		t.Errorf("/readyz never answered 503 in %d restarts", restartCount)
	}
	if hit != restartCount {
		t.Errorf("%d of %d restarts came while mails were left to commit, want all", hit, restartCount)
	}
	fig := fmt.Sprintf("figures: %d mails over IMAP, PostgreSQL restarted %d times (%d during the import): %d lost, %d duplicated, "+
		"mailbox empty, /readyz 200 at the end; wall %v; /readyz 503 in %d samples, for %v per restart",
		total, restartCount, hit, tl.lost, tl.dup, wall, n503, unready)
	if len(readyAfterUp) > 0 {
		fig += fmt.Sprintf(", 200 again %v after PostgreSQL accepted connections", readyAfterUp)
	}
	t.Logf("%s; the next batch committed %v after /readyz 200", fig, resumedAfter)
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// startSlowProxy forwards 127.0.0.1:<port> to target, sending the
// server's bytes at about bytesPerSec per connection, until the test ends;
// it returns the address.
func startSlowProxy(tb testing.TB, target string, bytesPerSec int) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	const chunk = 16 << 10
	pause := time.Duration(float64(time.Second) * chunk / float64(bytesPerSec))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, client, server)
			mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(server, client)
				_ = server.Close()
			}()
			go func() {
				defer wg.Done()
				defer func() { _ = client.Close() }()
				buf := make([]byte, chunk)
				for {
					n, err := server.Read(buf)
					if n > 0 {
						if _, werr := client.Write(buf[:n]); werr != nil {
							_ = server.Close()
							return
						}
						time.Sleep(pause * time.Duration(n) / chunk)
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func readyzCode(tb testing.TB, base string) int {
	tb.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		tb.Fatalf("GET /readyz: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// The disk-full test's file system has 8 MB until it grows to 64 MB.
const (
	fullSmall = "8m"
	fullLarge = "64m"
)

// TestFault_BlobStoreFull gives serve (on PostgreSQL) a data directory on an
// 8 MB tmpfs and imports mail until the blob store runs out of space: once
// where a batch's pack file no longer fits (the write that must succeed
// before the batch's events commit), once where a large mail's loose blob
// no longer fits while it downloads. The import must stop with "no space
// left on device" in the mailbox status; every mail must then be committed
// (its raw mail intact) or still on the server; and once the file system
// grows the import must resume by itself and end with every mail imported
// exactly once.
func TestFault_BlobStoreFull(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a child process, Dovecot and PostgreSQL")
	}
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs as the data directory needs root")
	}
	for _, tc := range []struct {
		name     string
		mails    int
		bigEvery int    // every bigEvery-th mail (if > 0) is 100 KB, stored as a loose blob
		fails    string // the write that runs out of space first
	}{
		// Small mails only, 1.8 MB a batch's pack: the fifth pack does
		// not fit.
		{name: "pack file", mails: 3000, fails: "write pack"},
		// 450 small and 50 large a batch: the second batch's loose blobs
		// fill the file system while they download.
		{name: "loose blob", mails: 2000, bigEvery: 10, fails: "write blob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runDiskFull(t, tc.mails*faultScale(t), tc.bigEvery, tc.fails)
		})
	}
}

func runDiskFull(t *testing.T, total, bigEvery int, fails string) {
	t.Helper()
	dataDir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+fullSmall+",mode=0700", "tmpfs", dataDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on the data directory (needs CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dataDir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dataDir, err, out)
			_ = exec.Command("umount", "-l", dataDir).Run()
		}
	})
	r := newFaultRig(t, pgtest.NewDatabase(t), dataDir)
	r.start()
	r.addAccount("imap", r.dv.IMAPAddr, 1)
	r.deliver(total, bigEvery)
	began := time.Now()

	// Full: the poll fails on the blob store, twice in a row.
	var lastError string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		msg, failures := r.mailboxStatus()
		if strings.Contains(msg, "no space left on device") && failures >= 2 {
			lastError = msg
			break
		}
		if r.inMailbox() == 0 {
			t.Fatalf("all %d mails imported into %s of space; the test needs more mail", total, fullSmall)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no two polls in a row failed for lack of space within 2 minutes (last_error %q, %d failures); log tail:\n%s",
				msg, failures, tail(r.c.log.String(), 5000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	fullAfter := time.Since(began).Round(time.Millisecond)
	if full := r.pollErrors("no space left on device"); len(full) == 0 || !strings.Contains(full[0], fails) {
		t.Errorf("polls failed for lack of space with %q, want the first in %q", full, fails)
	}
	var st syscall.Statfs_t
	_ = syscall.Statfs(dataDir, &st)
	free := int64(st.Bavail) * st.Bsize

	// Nothing is gone: each mail is committed once, its raw mail readable
	// and intact, or it is still in the mailbox (not even flagged \Deleted).
	stalled := r.tally()
	if stalled.dup != 0 || stalled.strays != 0 {
		t.Errorf("while full: %d duplicated MailReceived, %d of mails never delivered", stalled.dup, stalled.strays)
	}
	intact := r.checkBlobsIntact(stalled)
	onServer := r.mailboxMessageIDs()
	gone := 0
	for i := range r.mails {
		id := fmt.Sprintf("crash-%d@example.com", i)
		if len(stalled.received[id]) == 0 && !onServer[id] {
			gone++
		}
	}
	if gone > 0 {
		t.Errorf("while full: %d mails are neither committed nor in the mailbox", gone)
	}
	committedFull := len(stalled.received)
	if committedFull >= total {
		t.Fatalf("all mails committed although the poll failed for lack of space")
	}
	// And the import stands still: another failed poll commits nothing.
	_, failures := r.mailboxStatus()
	deadline = time.Now().Add(time.Minute)
	for {
		if _, f := r.mailboxStatus(); f > failures {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no further poll within a minute of %d failures", failures)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(r.tally().received); n != committedFull {
		t.Errorf("%d mails committed by a poll on a full file system, want none (had %d)", n-committedFull, committedFull)
	}

	// Space returns: the import resumes at the next poll, without help.
	if out, err := exec.Command("mount", "-o", "remount,size="+fullLarge, dataDir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs to %s: %v: %s", fullLarge, err, out)
	}
	freed := time.Now()
	_, failuresAtFree := r.mailboxStatus()
	left := r.inMailbox()
	for r.inMailbox() == left {
		if time.Since(freed) > 2*time.Minute {
			t.Fatalf("import did not resume within 2 minutes of space returning; log tail:\n%s", tail(r.c.log.String(), 5000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	resumedAfter := time.Since(freed).Round(time.Millisecond)
	r.waitEmpty(3 * time.Minute)
	wall := time.Since(began).Round(time.Millisecond)
	// The last poll's outcome reaches the view a moment after the mailbox
	// is empty.
	deadline = time.Now().Add(30 * time.Second)
	for msg, _ := r.mailboxStatus(); msg != ""; msg, _ = r.mailboxStatus() {
		if time.Now().After(deadline) {
			t.Errorf("last_error after the import = %q, want empty", msg)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.c.stop(t)
	tl := r.checkExactlyOnce()
	intactEnd := r.checkBlobsIntact(tl)
	big := 0
	if bigEvery > 0 {
		big = total / bigEvery
	}
	t.Logf("figures: %d mails (%d of 100 KB) over IMAP into a %s blob store: full after %v with %d committed (raw mail of all %d intact), "+
		"%d neither committed nor in the mailbox, %d bytes free; first failure in %q; last_error %q; "+
		"grown to %s after %d failed polls: import resumed after %v; %d lost, %d duplicated, %d raw mails intact, mailbox empty; wall %v",
		total, big, fullSmall, fullAfter, committedFull, intact, gone, free, fails, lastError,
		fullLarge, failuresAtFree, resumedAfter, tl.lost, tl.dup, intactEnd, wall)
}

// cutsPerProtocol is how many connections the cut test drops in mid-mail
// per protocol (times LEDGERDESK_FAULT_SCALE).
const cutsPerProtocol = 50

// cutFigures is what one protocol's cut run reports.
type cutFigures struct {
	mails, cuts, lost, dup int
	wall                   time.Duration
}

// TestFault_ConnectionCutsMidMail puts faultproxy between serve and Dovecot
// and drops the connection 50 times in the middle of IMAP's UID FETCH and
// 50 times in the middle of POP3's RETR, 100 cuts in all. Every tenth cut
// comes after the first batch of 500 mails committed, in the download of
// the second, so the next poll must also finish the first batch's
// deletes. Every mail must end with exactly one MailReceived and the
// mailbox empty.
func TestFault_ConnectionCutsMidMail(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a child process and Dovecot")
	}
	t.Parallel()
	var (
		mu  sync.Mutex
		all []cutFigures
	)
	// Runs after the parallel subtests.
	t.Cleanup(func() {
		var sum cutFigures
		for _, f := range all {
			sum.mails += f.mails
			sum.cuts += f.cuts
			sum.lost += f.lost
			sum.dup += f.dup
			sum.wall = max(sum.wall, f.wall)
		}
		t.Logf("figures: %d connection cuts in mid-mail over IMAP and POP3, %d mails: %d lost, %d duplicated, mailboxes empty; wall %v",
			sum.cuts, sum.mails, sum.lost, sum.dup, sum.wall)
	})
	for _, tc := range []struct {
		protocol string
		postgres bool
	}{
		{protocol: "imap", postgres: true},
		{protocol: "pop3", postgres: false},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			t.Parallel()
			f := runCuts(t, tc.protocol, tc.postgres, cutsPerProtocol*faultScale(t))
			mu.Lock()
			all = append(all, f)
			mu.Unlock()
		})
	}
}

func runCuts(t *testing.T, protocol string, onPostgres bool, cuts int) cutFigures {
	t.Helper()
	dbURL := ""
	if onPostgres {
		dbURL = pgtest.NewDatabase(t)
	}
	r := newFaultRig(t, dbURL, t.TempDir())
	target := r.dv.IMAPAddr
	if protocol == "pop3" {
		target = r.dv.POP3Addr
	}
	proxy := faultproxy.Start(t, target)
	r.start()
	// Polled only on demand (and once at the start), so that no poll on
	// its own starts while mails are being delivered and sees only some.
	r.addAccount(protocol, proxy.Addr(), 3600)
	mailSize := int64(len(crashMail(0)))

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 100))
	began := time.Now()
	// idle waits until the mailbox is empty and the last poll has hung up,
	// so that the next cut cannot fall on its goodbye.
	idle := func() {
		t.Helper()
		r.waitEmpty(time.Minute)
		deadline := time.Now().Add(30 * time.Second)
		for proxy.Open() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("a connection stayed open 30s after the mailbox emptied")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	r.waitEmpty(time.Minute) // nothing to import yet; the first poll may still be connected
	idle()
	cycles := 0
	for proxy.Cuts() < cuts {
		cycles++
		// The greeting, login, folder listing and UIDL or UID list come
		// first: at most 4 KB and 60 bytes a mail. The cut falls in the
		// mails after that.
		n := 20 + rng.IntN(41)
		skip := int64(0)
		if cycles%10 == 0 {
			n, skip = 600, 500 // in the second batch
		}
		r.deliver(n, 0)
		head := 4096 + 60*int64(n)
		at := head + skip*mailSize + rng.Int64N((int64(n)-skip)*mailSize*9/10)
		before := proxy.Cuts()
		proxy.CutAfterBytes(at)
		r.pollNow()
		deadline := time.Now().Add(time.Minute)
		for proxy.Cuts() == before {
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: no cut after %d bytes within a minute (%d mails in the mailbox)", cycles, at, r.inMailbox())
			}
			time.Sleep(time.Millisecond)
		}
		proxy.Reset()
		r.pollNow()
		idle()
	}
	wall := time.Since(began).Round(time.Millisecond)
	r.c.stop(t)
	tl := r.checkExactlyOnce()
	if got := proxy.Cuts(); got != cuts {
		t.Errorf("%d connections cut, want exactly %d", got, cuts)
	}
	// Each cut broke the download: inside a mail's literal or between two
	// of them in UID FETCH's answer, or inside a RETR answer. The client
	// sees EOF, or a reset when the proxy closed with pipelined commands
	// still unread.
	midMail := map[string][]string{
		"imap": {"imapsource: mail ended after", "imapsource: UID FETCH BODY.PEEK[]: "},
		"pop3": {"pop3source: RETR"},
	}[protocol]
	broken := []string{"unexpected EOF", "connection reset by peer"}
	has := func(e string, subs []string) bool {
		return slices.ContainsFunc(subs, func(s string) bool { return strings.Contains(e, s) })
	}
	errs := r.pollErrors("")
	inMail := 0
	for _, e := range errs {
		if has(e, midMail) && has(e, broken) {
			inMail++
		} else {
			t.Errorf("poll failed outside the download of mails: %s", e)
		}
	}
	if inMail != cuts {
		t.Errorf("%d polls broke in the download of mails, want one per cut, %d", inMail, cuts)
	}
	t.Logf("figures: %s: %d connection cuts in %d cycles, %d polls broke in the download of mails; %d mails: %d lost, %d duplicated, mailbox empty; wall %v",
		protocol, proxy.Cuts(), cycles, inMail, r.mails, tl.lost, tl.dup, wall)
	return cutFigures{mails: r.mails, cuts: proxy.Cuts(), lost: tl.lost, dup: tl.dup, wall: wall}
}

// faultRig is one serve child importing from one private Dovecot. Mail n
// it delivers is crashMail(n) (or bigger, see deliver), Message-ID
// crash-n@example.com.
type faultRig struct {
	t         *testing.T
	bin       string
	dv        *dovecottest.Server
	env       []string
	base      string
	dbURL     string // "" for the embedded store under dataDir
	dataDir   string
	c         *child
	accountID string
	mails     int // delivered so far
}

// newFaultRig prepares serve on dbURL (or the embedded store when empty)
// with dataDir; start runs it.
func newFaultRig(t *testing.T, dbURL, dataDir string) *faultRig {
	t.Helper()
	r := &faultRig{t: t, bin: ledgerdeskBinary(t), dbURL: dbURL, dataDir: dataDir}
	r.dv = dovecottest.Start(t)
	r.dv.AddUser(t, "support", "s3cret")
	httpAddr := freeAddr(t)
	r.base = "http://" + httpAddr
	r.env = []string{"LEDGERDESK_HTTP_ADDR=" + httpAddr, "LEDGERDESK_DATA_DIR=" + dataDir,
		"LEDGERDESK_ADMIN_TOKEN=" + crashAdminToken, "LEDGERDESK_LOG_FORMAT=json"}
	if dbURL != "" {
		r.env = append(r.env, "LEDGERDESK_DATABASE_URL="+dbURL, "LEDGERDESK_SECRET_KEY="+strings.Repeat("cd", 32))
	}
	// Registered after Dovecot's and the database's cleanups, so it runs
	// before them: the child never outlives what it talks to.
	t.Cleanup(func() {
		if r.c != nil && r.c.cmd.ProcessState == nil {
			r.c.kill()
		}
	})
	return r
}

func (r *faultRig) start() {
	r.t.Helper()
	r.c = startChild(r.t, r.bin, r.env)
	waitReady(r.t, r.base, r.c)
}

// addAccount creates the inbound account (polled every interval seconds,
// mails deleted after import) on addr, which is the Dovecot port of
// protocol or a proxy to it. It is not pushed: these tests cut and count
// the poll's connections, and an IDLE connection would be one more
// (push_e2e_test.go tests push).
func (r *faultRig) addAccount(protocol, addr string, interval int) {
	r.t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	portNum, _ := strconv.Atoi(port)
	created := apiPost(r.t, r.base+"/api/v1/inbound-accounts", map[string]any{
		"name": "support", "protocol": protocol, "host": host, "port": portNum, "security": "none",
		"username": "support", "password": "s3cret", "poll_interval_seconds": interval, "after_import": "delete", "enabled": true,
		"push": false,
	})
	id, _ := created["id"].(string)
	if id == "" {
		r.t.Fatalf("create account: no id in %v", created)
	}
	r.accountID = id
}

// deliver puts n more mails into the INBOX; every bigEvery-th (if > 0) is
// padded to about 100 KB, which the blob store keeps as a loose file
// instead of in a pack.
func (r *faultRig) deliver(n, bigEvery int) {
	r.t.Helper()
	raws := make([][]byte, n)
	for i := range raws {
		raws[i] = faultMail(r.mails, bigEvery > 0 && r.mails%bigEvery == bigEvery-1)
		r.mails++
	}
	r.dv.DeliverMany(r.t, "support", raws)
}

// faultMail is crashMail(n), padded to about 100 KB when big.
func faultMail(n int, big bool) []byte {
	raw := crashMail(n)
	if !big {
		return raw
	}
	pad := strings.Repeat(fmt.Sprintf("padding of mail %d to make it larger than a packed blob\r\n", n), 1800)
	return append(raw, pad...)
}

// pollNow asks for a poll of the account at once. The scheduler knows a
// new account once its create is answered; a 409 all the same (a restarted
// child that has not loaded its accounts yet) is asked again.
func (r *faultRig) pollNow() {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequest(http.MethodPost, r.base+"/api/v1/inbound-accounts/"+r.accountID+"/poll", http.NoBody)
		if err != nil {
			r.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+crashAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			r.t.Fatalf("poll now: %v", err)
		}
		raw, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusAccepted:
			return
		case resp.StatusCode != http.StatusConflict || time.Now().After(deadline):
			r.t.Fatalf("poll now = %d %s", resp.StatusCode, raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *faultRig) inMailbox() int {
	r.t.Helper()
	return r.dv.Count(r.t, "support")
}

// waitEmpty waits until the INBOX is empty; after limit it prints where
// the child is stuck and fails the test.
func (r *faultRig) waitEmpty(limit time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(limit)
	for r.inMailbox() > 0 {
		if time.Now().After(deadline) {
			n := r.inMailbox()
			_ = r.c.cmd.Process.Signal(syscall.SIGQUIT) // the Go runtime prints every goroutine
			_ = r.c.cmd.Wait()
			r.t.Fatalf("mailbox still holds %d mails after %v; log tail:\n%s", n, limit, tail(r.c.log.String(), 30000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mailboxStatus returns the account's row of GET /api/v1/mailboxes.
func (r *faultRig) mailboxStatus() (lastError string, failures int) {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.base+"/api/v1/mailboxes", http.NoBody)
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+crashAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("GET /api/v1/mailboxes: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Items []struct {
			AccountID           string `json:"account_id"`
			LastError           string `json:"last_error"`
			ConsecutiveFailures int    `json:"consecutive_failures"`
		} `json:"items"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("GET /api/v1/mailboxes = %d %s", resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		r.t.Fatalf("GET /api/v1/mailboxes: %v: %s", err, raw)
	}
	for _, it := range body.Items {
		if it.AccountID == r.accountID {
			return it.LastError, it.ConsecutiveFailures
		}
	}
	return "", 0
}

// pollErrors returns the errors of the failed polls in the child's log
// that contain substr, oldest first.
func (r *faultRig) pollErrors(substr string) []string {
	r.t.Helper()
	var out []string
	for line := range strings.SplitSeq(r.c.log.String(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
			Err string `json:"err"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "poll failed" && strings.Contains(rec.Err, substr) {
			out = append(out, rec.Err)
		}
	}
	return out
}

// tally is what the store holds of the delivered mails.
type tally struct {
	received map[string][]blobstore.Ref // blob refs of the MailReceived events per Message-ID
	lost     int                        // delivered mails without a MailReceived
	dup      int                        // MailReceived events beyond the first of a mail
	strays   int                        // MailReceived events of mails never delivered
}

// tally reads the child's store: every MailReceived, by Message-ID.
func (r *faultRig) tally() tally {
	r.t.Helper()
	tl := tally{received: map[string][]blobstore.Ref{}}
	withStore(r.t, r.dbURL, filepath.Join(r.dataDir, "ledgerdesk.db"), func(ctx context.Context, store eventstore.Store) {
		var after int64
		for {
			evs, err := store.ReadAll(ctx, after, 1000)
			if err != nil {
				r.t.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			for _, e := range evs {
				if e.Type != "MailReceived" {
					continue
				}
				var p struct {
					MessageID string `json:"message_id"`
					BlobRef   string `json:"blob_ref"`
				}
				if err := json.Unmarshal(e.Payload, &p); err != nil {
					r.t.Fatal(err)
				}
				tl.received[p.MessageID] = append(tl.received[p.MessageID], blobstore.Ref(p.BlobRef))
			}
			after = evs[len(evs)-1].Position
		}
	})
	want := make(map[string]bool, r.mails)
	for i := range r.mails {
		id := fmt.Sprintf("crash-%d@example.com", i)
		want[id] = true
		if len(tl.received[id]) == 0 {
			tl.lost++
		}
	}
	for id, refs := range tl.received {
		if !want[id] {
			tl.strays += len(refs)
			continue
		}
		tl.dup += len(refs) - 1
	}
	return tl
}

// checkExactlyOnce fails the test unless every delivered mail has exactly
// one MailReceived and there is no other; it returns the tally.
func (r *faultRig) checkExactlyOnce() tally {
	r.t.Helper()
	tl := r.tally()
	if tl.lost != 0 || tl.dup != 0 || tl.strays != 0 {
		r.t.Errorf("of %d mails %d have no MailReceived and %d MailReceived are duplicates (%d of mails never delivered), want 0 and 0",
			r.mails, tl.lost, tl.dup, tl.strays)
	}
	return tl
}

// withStore opens the store the child uses (PostgreSQL at pgURL, else the
// SQLite file) for f.
func withStore(t *testing.T, pgURL, sqlitePath string, f func(context.Context, eventstore.Store)) {
	t.Helper()
	ctx := context.Background()
	var store eventstore.Store
	if pgURL != "" {
		pool, err := pgxpool.New(ctx, pgURL)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		if err := migrations.ApplyPostgres(ctx, pool); err != nil {
			t.Fatal(err)
		}
		s, err := postgres.New(pool, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		store = s
	} else {
		db, err := embedded.OpenDB(sqlitePath)
		if err != nil {
			t.Fatal(err)
		}
		store = embedded.New(db, slog.New(slog.DiscardHandler))
	}
	defer store.Close()
	f(ctx, store)
}

// checkBlobsIntact reads back the raw mail of every MailReceived in tl and
// checks it against its content address: an event must never name a blob
// that is missing or torn.
func (r *faultRig) checkBlobsIntact(tl tally) (checked int) {
	r.t.Helper()
	blobs, err := blobstore.NewFS(filepath.Join(r.dataDir, "blobs"))
	if err != nil {
		r.t.Fatal(err)
	}
	withStore(r.t, r.dbURL, filepath.Join(r.dataDir, "ledgerdesk.db"), func(ctx context.Context, store eventstore.Store) {
		for id, refs := range tl.received {
			for _, ref := range refs {
				rc, err := ingest.OpenBlob(ctx, store, blobs, ref)
				if err != nil {
					r.t.Errorf("mail %s: blob %s: %v", id, ref, err)
					continue
				}
				h := sha256.New()
				_, err = io.Copy(h, rc)
				_ = rc.Close()
				if err != nil {
					r.t.Errorf("mail %s: read blob %s: %v", id, ref, err)
					continue
				}
				if got := blobstore.RefFromDigest([sha256.Size]byte(h.Sum(nil))); got != ref {
					r.t.Errorf("mail %s: blob %s holds content %s", id, ref, got)
				}
				checked++
			}
		}
	})
	return checked
}

// mailboxMessageIDs lists the Message-IDs in the INBOX over IMAP (read
// only), as the server sees them: mails flagged \Deleted but not yet
// expunged are left out.
func (r *faultRig) mailboxMessageIDs() map[string]bool {
	r.t.Helper()
	c, err := imapclient.DialInsecure(r.dv.IMAPAddr, nil)
	if err != nil {
		r.t.Fatalf("dial IMAP: %v", err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Login("support", "s3cret").Wait(); err != nil {
		r.t.Fatalf("IMAP login: %v", err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		r.t.Fatalf("IMAP examine: %v", err)
	}
	ids := map[string]bool{}
	if sel.NumMessages == 0 {
		return ids
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Envelope: true, Flags: true}).Collect()
	if err != nil {
		r.t.Fatalf("IMAP fetch envelopes: %v", err)
	}
	for _, m := range msgs {
		if m.Envelope != nil && !slices.Contains(m.Flags, imap.FlagDeleted) {
			ids[m.Envelope.MessageID] = true
		}
	}
	return ids
}

// readyWatch samples /readyz every few milliseconds from a goroutine.
type readyWatch struct {
	mu      sync.Mutex
	samples []readySample
	stop    chan struct{}
	done    chan struct{}
}

type readySample struct {
	at   time.Time
	code int // 0: no answer
}

func watchReady(tb testing.TB, base string) *readyWatch {
	tb.Helper()
	w := &readyWatch{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(w.done)
		for {
			code := 0
			if resp, err := client.Get(base + "/readyz"); err == nil {
				code = resp.StatusCode
				_ = resp.Body.Close()
			}
			w.mu.Lock()
			w.samples = append(w.samples, readySample{at: time.Now(), code: code})
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	tb.Cleanup(w.close)
	return w
}

func (w *readyWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// first returns the time of the first sample at or after since with the
// code, and whether there is one.
func (w *readyWatch) first(since time.Time, code int) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.samples {
		if !s.at.Before(since) && s.code == code {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// count returns how many samples answered code.
func (w *readyWatch) count(code int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.samples {
		if s.code == code {
			n++
		}
	}
	return n
}

// waitForSteady waits up to limit for a sample at or after since with
// code that every sample in the hold after it repeats, and returns its time.
func (w *readyWatch) waitForSteady(since time.Time, code int, hold, limit time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(limit)
	for {
		w.mu.Lock()
		var start time.Time
		for _, s := range w.samples {
			switch {
			case s.at.Before(since):
			case s.code != code:
				start = time.Time{}
			case start.IsZero():
				start = s.at
			}
		}
		last := time.Time{}
		if n := len(w.samples); n > 0 {
			last = w.samples[n-1].at
		}
		w.mu.Unlock()
		if !start.IsZero() && last.Sub(start) >= hold {
			return start, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor waits up to limit for a sample at or after since with code.
func (w *readyWatch) waitFor(since time.Time, code int, limit time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(limit)
	for {
		if at, ok := w.first(since, code); ok {
			return at, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// privatePostgres is a PostgreSQL cluster of the test's own, in a temp
// dir on a free port, so that restarting it disturbs nobody else.
type privatePostgres struct {
	bin  string // directory holding initdb and postgres
	dir  string // the cluster's data directory; its parent holds the socket
	port int
	cred *syscall.Credential // the postgres user when the test runs as root

	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
}

// postgresBinDir returns the newest /usr/lib/postgresql/<version>/bin with
// initdb and postgres (Debian's layout), or "".
func postgresBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

// startPrivatePostgres initdbs a cluster and starts it; it is stopped and
// removed when the test ends. PostgreSQL refuses to run as root, so as root
// the cluster runs as the user postgres. Without the server binaries the
// test is skipped, or fails when CI is set.
func startPrivatePostgres(tb testing.TB) *privatePostgres {
	tb.Helper()
	bin := postgresBinDir()
	if bin == "" {
		if os.Getenv(dovecottest.EnvCI) != "" {
			tb.Fatal("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
		}
		tb.Skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (Debian package postgresql)")
	}
	// Not t.TempDir: its parents are 0700 root, which the postgres user
	// cannot enter.
	parent, err := os.MkdirTemp("", "ledgerdesk-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(parent) })
	p := &privatePostgres{bin: bin, dir: filepath.Join(parent, "data")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root, PostgreSQL needs the user postgres: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(parent, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", p.dir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	_, port, _ := net.SplitHostPort(freeAddr(tb))
	p.port, _ = strconv.Atoi(port)
	p.start(tb)
	tb.Cleanup(func() { p.stop(tb, syscall.SIGINT) })
	return p
}

// URL returns the URL of database db on the cluster.
func (p *privatePostgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, db)
}

// start runs the postmaster and waits until it accepts connections.
func (p *privatePostgres) start(tb testing.TB) {
	tb.Helper()
	p.mu.Lock()
	// fsync stays on: a restart in immediate mode is a crash of the
	// server, and committed mail must survive it.
	p.cmd = exec.Command(filepath.Join(p.bin, "postgres"), "-D", p.dir, "-p", strconv.Itoa(p.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+filepath.Dir(p.dir),
		"-c", "max_connections=100", "-c", "shared_buffers=32MB")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGQUIT}
	p.log = &syncBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.mu.Unlock()
		tb.Fatalf("start postgres: %v", err)
	}
	cmd, exited := p.cmd, make(chan struct{})
	p.exited = exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return
		}
		select {
		case <-exited:
			tb.Fatalf("postgres exited at start: %v\n%s", err, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("postgres not accepting connections within 60s: %v\n%s", err, p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop shuts the postmaster down, SIGINT for PostgreSQL's fast shutdown
// (what pg_ctl and pg_ctlcluster restart use) or SIGQUIT for immediate
// (a crash: the next start replays the WAL), and waits until it exited.
func (p *privatePostgres) stop(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		tb.Errorf("postgres did not stop within 60s of %v", sig)
	}
}

// createDatabase creates database name on the cluster.
func (p *privatePostgres) createDatabase(tb testing.TB, name string) string {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatal(err)
	}
	return p.URL(name)
}
