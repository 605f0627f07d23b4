package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/faultproxy"
	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// Goroutine bounds of TestScale_AHundredAccountsOnOneServe: what one
// account may keep running between polls (polled: its worker; pushed:
// also its watch, whose connection has a reader and a watchdog; one spare
// each), and what one poll in flight may add (its connection's reader and
// watchdog, one spare).
const (
	goroutinesPerPolledAccount = 2
	goroutinesPerPushedAccount = 5
	goroutinesPerPoll          = 3
	// goroutinesSlack covers the test's own HTTP connections and helpers.
	goroutinesSlack = 60
)

// scaleRig is a test Dovecot sized for many mailboxes, one user each
// (mbx0000, mbx0001, ... with password pw), for serves on PostgreSQL.
type scaleRig struct {
	tb    testing.TB
	dv    *dovecottest.Server
	users []string
	host  string
	port  int
}

func newScaleRig(tb testing.TB, accounts int) *scaleRig {
	tb.Helper()
	// Room for an IDLE connection per account and a poll per poll slot.
	dv := dovecottest.StartWith(tb, dovecottest.Options{MaxConnections: accounts + ingest.DefaultMaxConcurrentPolls + 100})
	r := &scaleRig{tb: tb, dv: dv}
	for i := range accounts {
		u := fmt.Sprintf("mbx%04d", i)
		dv.AddUser(tb, u, "pw")
		r.users = append(r.users, u)
	}
	h, p, _ := net.SplitHostPort(dv.IMAPAddr)
	r.host = h
	r.port, _ = strconv.Atoi(p)
	return r
}

// scaleServe is one serve the rig talks to; pid is 0 when it runs in
// this process.
type scaleServe struct {
	api  apiClient
	pid  int
	stop func()
	log  func() string
}

func scaleEnv(tb testing.TB) map[string]string {
	return map[string]string{envDataDir: tb.TempDir(), envDatabaseURL: pgtest.NewDatabase(tb),
		envSecretKey: strings.Repeat("ab", 32), envAdminToken: e2eToken}
}

func startScaleServeInProcess(tb testing.TB) *scaleServe {
	tb.Helper()
	srv := startServe(tb, scaleEnv(tb))
	return &scaleServe{api: apiClient{tb: tb, base: srv.URL}, stop: func() { srv.Stop(tb) }, log: srv.Log.String}
}

// startScaleServeChild runs `ledgerdesk serve` with env (scaleEnv) as a
// child process, whose memory and CPU time can be read from /proc.
func startScaleServeChild(tb testing.TB, env map[string]string) *scaleServe {
	tb.Helper()
	addr := freeAddr(tb)
	var vars []string
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	vars = append(vars, envHTTPAddr+"="+addr, envLogFormat+"=json")
	c := startChild(tb, ledgerdeskBinary(tb), vars)
	base := "http://" + addr
	waitReady(tb, base, c)
	s := &scaleServe{api: apiClient{tb: tb, base: base}, pid: c.cmd.Process.Pid, log: c.log.String}
	var once sync.Once
	s.stop = func() { once.Do(func() { c.stop(tb) }) }
	tb.Cleanup(s.stop)
	return s
}

// pushSupported says whether this build's inbound accounts have the push
// option (IMAP IDLE), from the API's own description.
func (s *scaleServe) pushSupported() bool {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	_ = json.Unmarshal(s.api.must(http.MethodGet, "/api/v1/openapi.json", nil), &doc)
	for name, schema := range doc.Components.Schemas {
		if strings.Contains(strings.ToLower(name), "inbound") {
			if _, ok := schema.Properties["push"]; ok {
				return true
			}
		}
	}
	return false
}

// createAccounts adds an IMAP account for each user on addr (host:port)
// and returns their ids in the order of users; push is sent only when not
// nil. One request at a time: every account goes into one registry stream,
// and concurrent writes to it answer 409.
func (s *scaleServe) createAccounts(users []string, addr string, interval int, push *bool) []string {
	s.api.tb.Helper()
	host, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	ids := make([]string, len(users))
	for i, u := range users {
		body := map[string]any{"name": u, "protocol": "imap", "host": host, "port": port, "security": "none",
			"allow_plaintext_auth": true, "username": u, "password": "pw", "poll_interval_seconds": interval,
			"after_import": "delete", "enabled": true, "account_address": u + "@desk.example"}
		if push != nil {
			body["push"] = *push
		}
		var created struct{ ID string }
		if err := json.Unmarshal(s.api.must(http.MethodPost, "/api/v1/inbound-accounts", body), &created); err != nil || created.ID == "" {
			s.api.tb.Fatalf("create account %s: no id (%v)", u, err)
		}
		ids[i] = created.ID
	}
	return ids
}

// pollNow asks for a poll of each account, retrying while the scheduler
// does not run the account yet (409).
func (s *scaleServe) pollNow(ids []string) {
	s.api.tb.Helper()
	for _, id := range ids {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			code, raw := s.api.do(http.MethodPost, "/api/v1/inbound-accounts/"+id+"/poll", nil)
			if code < 300 {
				break
			}
			if code != http.StatusConflict || time.Now().After(deadline) {
				s.api.tb.Fatalf("poll now %s = %d %s", id, code, raw)
			}
		}
	}
}

// mailboxes returns the mailbox-status rows by account id.
func (s *scaleServe) mailboxes() map[string]map[string]any {
	var page struct {
		Items []map[string]any `json:"items"`
	}
	_ = json.Unmarshal(s.api.must(http.MethodGet, "/api/v1/mailboxes", nil), &page)
	out := make(map[string]map[string]any, len(page.Items))
	for _, it := range page.Items {
		if id, ok := it["account_id"].(string); ok {
			out[id] = it
		}
	}
	return out
}

// waitMailboxes waits up to limit until every account in ids satisfies ok.
func (s *scaleServe) waitMailboxes(ids []string, limit time.Duration, what string, ok func(row map[string]any) bool) {
	s.api.tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		rows := s.mailboxes()
		waiting := 0
		for _, id := range ids {
			if row, found := rows[id]; !found || !ok(row) {
				waiting++
			}
		}
		if waiting == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.api.tb.Fatalf("%d of %d accounts not %s after %s", waiting, len(ids), what, limit)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ticketWatch reads GET /api/v1/tickets (newest first) every few
// milliseconds, as a front-end would, and notes when each subject first
// shows there.
type ticketWatch struct {
	base string
	mu   sync.Mutex
	seen map[string]time.Time
	errs int
	stop chan struct{}
	done chan struct{}
}

func watchTickets(base string) *ticketWatch {
	w := &ticketWatch{base: base, seen: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			w.read()
		}
	}()
	return w
}

// read pages from the newest ticket back to the first one seen before.
func (w *ticketWatch) read() {
	cursor := ""
	for range 50 {
		q := url.Values{"limit": {"200"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		req, _ := http.NewRequest(http.MethodGet, w.base+"/api/v1/tickets?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+e2eToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			w.mu.Lock()
			w.errs++
			w.mu.Unlock()
			return
		}
		var page struct {
			Items []struct {
				Subject string `json:"subject"`
			} `json:"items"`
			NextCursor string `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		_ = resp.Body.Close()
		now := time.Now()
		if err != nil {
			return
		}
		w.mu.Lock()
		known := false
		for _, it := range page.Items {
			if _, ok := w.seen[it.Subject]; ok {
				known = true
				continue
			}
			w.seen[it.Subject] = now
		}
		w.mu.Unlock()
		if known || page.NextCursor == "" {
			return
		}
		cursor = page.NextCursor
	}
}

func (w *ticketWatch) close() {
	close(w.stop)
	<-w.done
}

func (w *ticketWatch) firstSeen(subject string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.seen[subject]
	return at, ok
}

// delivery is one mail moved into a user's Maildir/new.
type delivery struct {
	subject string
	at      time.Time
}

// deliverSteady delivers n mails at rate mails per second, mail i to
// users[i % len(users)], each with a subject of its own; at is taken
// just before the mail is written, so the latency includes the write.
func (r *scaleRig) deliverSteady(tag string, n int, rate float64) []delivery {
	r.tb.Helper()
	out := make([]delivery, 0, n)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		time.Sleep(time.Until(due))
		user := r.users[i%len(r.users)]
		subject := fmt.Sprintf("scale %s %d for %s", tag, i, user)
		raw := e2eMail(fmt.Sprintf("Customer %d <customer%d@example.com>", i, i), user+"@desk.example", subject,
			fmt.Sprintf("scale-%s-%d@example.com", tag, i))
		at := time.Now()
		r.dv.Deliver(r.tb, user, raw)
		out = append(out, delivery{subject: subject, at: at})
	}
	return out
}

// waitSeen waits up to limit until seen knows every delivered subject and
// returns the latencies, sorted, and the subjects never seen.
func waitSeen(deliveries []delivery, seen func(string) (time.Time, bool), limit time.Duration) (lat []time.Duration, missing []string) {
	deadline := time.Now().Add(limit)
	for {
		lat, missing = lat[:0], missing[:0]
		for _, d := range deliveries {
			if at, ok := seen(d.subject); ok {
				lat = append(lat, at.Sub(d.at))
			} else {
				missing = append(missing, d.subject)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			slices.Sort(lat)
			return lat, missing
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// goroutinePeak samples runtime.NumGoroutine until stopped.
type goroutinePeak struct {
	mu   sync.Mutex
	peak int
	stop chan struct{}
	done chan struct{}
}

func sampleGoroutines() *goroutinePeak {
	g := &goroutinePeak{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		for {
			n := runtime.NumGoroutine()
			g.mu.Lock()
			g.peak = max(g.peak, n)
			g.mu.Unlock()
			select {
			case <-g.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return g
}

func (g *goroutinePeak) close() int {
	close(g.stop)
	<-g.done
	return g.peak
}

// TestScale_AHundredAccountsOnOneServe is the CI-sized run of a thousand
// mailboxes on one serve (BenchmarkScale is the full one): 100 IMAP
// accounts on a real Dovecot receive 200 mails at a steady rate while 40
// accounts sit on a server that accepts and never answers. Every mail must
// become a ticket, every account must have been served, the dead server
// must hold no more than its share of the poll slots, and the goroutines
// of the process must stay within a per-account bound. Latencies are
// logged, not asserted (BenchmarkScale reports them).
//
// Not parallel: it counts the goroutines of the whole test process.
func TestScale_AHundredAccountsOnOneServe(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot and PostgreSQL")
	}
	const accounts, dead, interval = 100, 40, 2
	rig := newScaleRig(t, accounts)
	hole := faultproxy.StartBlackhole(t)
	srv := startScaleServeInProcess(t)
	// Accounts are pushed by default where the build has push (Dovecot
	// offers IDLE), the dead server's included.
	pushed := srv.pushSupported()
	base := runtime.NumGoroutine()
	peak := sampleGoroutines()

	// The dead server's accounts come first, so that without the
	// per-server limit their hanging polls would hold every slot.
	deadUsers := make([]string, dead)
	for i := range deadUsers {
		deadUsers[i] = fmt.Sprintf("dead%02d", i)
	}
	// Accounts the scheduler finds at its first look spread their first
	// poll over the interval, an hour here: ask for it now.
	srv.pollNow(srv.createAccounts(deadUsers, hole.Addr(), 3600, nil))
	perServer := ingest.DefaultMaxConcurrentPolls / 2
	deadline := time.Now().Add(30 * time.Second)
	for open, _ := hole.Counts(); open < perServer; open, _ = hole.Counts() {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to the dead server after 30 s, want %d; serve's log:\n%s", open, perServer, tail(srv.log(), 8000))
		}
		time.Sleep(20 * time.Millisecond)
	}

	ids := srv.createAccounts(rig.users, rig.dv.IMAPAddr, interval, nil)
	srv.waitMailboxes(ids, 30*time.Second, "polled once", func(row map[string]any) bool { return row["last_checked_at"] != nil })
	watch := watchTickets(srv.api.base)
	deliveries := rig.deliverSteady("ci", 2*accounts, 50)
	lat, missing := waitSeen(deliveries, watch.firstSeen, 60*time.Second)
	watch.close()
	maxGoroutines := peak.close()

	if len(missing) > 0 {
		t.Fatalf("%d of %d mails are no ticket after 60 s, e.g. %q", len(missing), len(deliveries), missing[0])
	}
	for _, u := range rig.users {
		if n := rig.dv.Count(t, u); n != 0 {
			t.Errorf("%s still holds %d mails", u, n)
		}
	}
	if _, maxOpen := hole.Counts(); maxOpen != perServer {
		t.Errorf("the dead server had up to %d connections at once, want its share of the poll slots, %d", maxOpen, perServer)
	}
	perAccount := goroutinesPerPolledAccount
	if pushed {
		perAccount = goroutinesPerPushedAccount
	}
	bound := base + perAccount*(accounts+dead) + goroutinesPerPoll*ingest.DefaultMaxConcurrentPolls + goroutinesSlack
	if maxGoroutines > bound {
		t.Errorf("up to %d goroutines, want at most %d (%d at start, %d per account, %d per poll slot)",
			maxGoroutines, bound, base, perAccount, goroutinesPerPoll)
	}
	t.Logf("%d accounts (pushed: %t; +%d on a dead server), %d mails: delivered → ticket p50 %s, p99 %s, max %s (poll interval %d s); "+
		"goroutines %d at start, peak %d (%.1f per account)", accounts, pushed, dead, len(deliveries), percentile(lat, 50),
		percentile(lat, 99), percentile(lat, 100), interval, base, maxGoroutines, float64(maxGoroutines-base)/float64(accounts+dead))
}

// procFootprint reads the resident memory (VmRSS) and the CPU time (user
// plus system) of process pid from /proc.
func procFootprint(tb testing.TB, pid int) (rssBytes int64, cpu time.Duration) {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rssBytes = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: utime and stime are the 12th and 13th, in clock ticks of
	// 1/100 s (USER_HZ on Linux).
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	fields := strings.Fields(rest)
	if len(fields) < 13 {
		tb.Fatalf("unexpected /proc/%d/stat: %q", pid, stat)
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return rssBytes, time.Duration(utime+stime) * 10 * time.Millisecond
}

// idleFootprint lets the serve idle for the given time and returns its
// resident memory at the end and its CPU time per idle hour, scaled from
// the CPU time it used meanwhile.
func idleFootprint(tb testing.TB, s *scaleServe, idle time.Duration) (rssBytes int64, cpuPerHour time.Duration) {
	tb.Helper()
	_, cpu0 := procFootprint(tb, s.pid)
	time.Sleep(idle)
	rss, cpu1 := procFootprint(tb, s.pid)
	return rss, time.Duration(float64(cpu1-cpu0) * float64(time.Hour) / float64(idle))
}
