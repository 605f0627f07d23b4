package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/faultproxy"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

var (
	buildOnce sync.Once
	builtBin  string
	errBuild  error
)

// ledgerdeskBinary builds the real binary once per test run: the crash tests
// SIGKILL a child process, which an in-process server cannot stand in for.
func ledgerdeskBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ledgerdesk-bin-")
		if err != nil {
			errBuild = err
			return
		}
		builtBin = filepath.Join(dir, "ledgerdesk")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			errBuild = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if errBuild != nil {
		tb.Fatal(errBuild)
	}
	return builtBin
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// crashDeadline bounds how long the last child may take to empty the mailbox.
var crashDeadline = 3 * time.Minute

const crashAdminToken = "crash-test-admin-token-0123456789"

// child is one `ledgerdesk serve` process.
type child struct {
	cmd *exec.Cmd
	log *syncBuffer
}

func startChild(tb testing.TB, bin string, env []string) *child {
	tb.Helper()
	c := &child{cmd: exec.Command(bin, "serve"), log: &syncBuffer{}}
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout = c.log
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		tb.Fatalf("start serve: %v", err)
	}
	return c
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

func (c *child) stop(tb testing.TB) {
	tb.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			tb.Errorf("serve exited with %v after SIGTERM; log tail:\n%s", err, tail(c.log.String(), 3000))
		}
	case <-time.After(30 * time.Second):
		c.kill()
		tb.Errorf("serve did not stop within 30s of SIGTERM")
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func waitReady(tb testing.TB, base string, c *child) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	tb.Fatalf("serve not ready within 60s; log tail:\n%s", tail(c.log.String(), 3000))
}

func apiPost(tb testing.TB, url string, body any) map[string]any {
	tb.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+crashAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		tb.Fatalf("POST %s = %d %s", url, resp.StatusCode, raw)
	}
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return out
}

// crashMail is a small, unique mail; its Message-ID names its number.
func crashMail(n int) []byte {
	return fmt.Appendf(nil, "From: Customer %d <customer%d@example.com>\r\nTo: support@example.org\r\n"+
		"Subject: crash test mail %d\r\nMessage-ID: <crash-%d@example.com>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"+
		"\r\n%s\r\n", n, n%50, n, n, strings.Repeat(fmt.Sprintf("line %d of a body to give it some size\r\n", n), 80))
}

type crashSetup struct {
	protocol string
	addr     func(*dovecottest.Server) string
	postgres bool
	// afterImport is the account's after_import ["delete"]; every mode
	// but keep empties the INBOX into its folder (crashFolders).
	afterImport string
	// waves and perWave size the run [10, 200].
	waves, perWave int
	// calibrate times an unkilled first wave and kills within that span.
	calibrate bool
	// killOn, when set, puts a proxy between serve and Dovecot that holds
	// the IMAP command carrying it, and kills serve right then: with "UID
	// MOVE" every kill lands after a batch's commit and before its move.
	killOn string
}

// crashFolders are where move and trash put the imported mails; the
// Dovecot of a trash run marks crashTrash \Trash.
const (
	crashMoveFolder = "Imported"
	crashTrash      = "Trash"
)

// TestCrashSafety_ImportsEveryMailExactlyOnce runs `ledgerdesk serve` as a
// child process, delivers 2,000 mails into a real Dovecot in waves and kills
// the process with SIGKILL at a random moment of each wave, ten times or
// more; then lets it finish. Every mail must have exactly one MailReceived
// and the mailbox must be empty.
func TestCrashSafety_ImportsEveryMailExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a child process and Dovecot")
	}
	t.Parallel()
	for _, tc := range []crashSetup{
		{protocol: "imap", addr: func(d *dovecottest.Server) string { return d.IMAPAddr }, postgres: true},
		{protocol: "pop3", addr: func(d *dovecottest.Server) string { return d.POP3Addr }, postgres: false},
	} {
		name := tc.protocol + "/embedded"
		if tc.postgres {
			name = tc.protocol + "/postgres"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runCrashScenario(t, tc, false)
		})
	}
}

// TestCrashSafety_ConnectionCutMidDownload puts a TCP proxy between serve
// and Dovecot that drops connections in the middle of mails.
func TestCrashSafety_ConnectionCutMidDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a child process and Dovecot")
	}
	t.Parallel()
	for _, tc := range []crashSetup{
		{protocol: "imap", addr: func(d *dovecottest.Server) string { return d.IMAPAddr }, postgres: false},
		{protocol: "pop3", addr: func(d *dovecottest.Server) string { return d.POP3Addr }, postgres: true},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			t.Parallel()
			runCrashScenario(t, tc, true)
		})
	}
}

// TestCrashSafety_EveryAfterImport is the SIGKILL run for after_import
// move, trash and keep (delete is the run above), smaller: every mail must
// be imported once and end in the mode's folder (keep: the INBOX).
func TestCrashSafety_EveryAfterImport(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a child process and Dovecot")
	}
	t.Parallel()
	imap := func(d *dovecottest.Server) string { return d.IMAPAddr }
	for _, tc := range []crashSetup{
		{protocol: "imap", addr: imap, afterImport: "move", postgres: false, killOn: "UID MOVE"},
		{protocol: "imap", addr: imap, afterImport: "trash", postgres: true, killOn: "UID MOVE"},
		{protocol: "imap", addr: imap, afterImport: "keep", postgres: false, calibrate: true},
	} {
		tc.waves, tc.perWave = 6, 60
		t.Run(tc.afterImport, func(t *testing.T) {
			t.Parallel()
			runCrashScenario(t, tc, false)
		})
	}
}

func runCrashScenario(t *testing.T, tc crashSetup, cutConnections bool) {
	waves, perWave := cmp.Or(tc.waves, 10), cmp.Or(tc.perWave, 200)
	afterImport := cmp.Or(tc.afterImport, "delete")
	bin := ledgerdeskBinary(t)
	var dv *dovecottest.Server
	if afterImport == "trash" {
		dv = dovecottest.StartWith(t, dovecottest.Options{TrashFolder: crashTrash})
	} else {
		dv = dovecottest.Start(t)
	}
	dv.AddUser(t, "support", "s3cret")
	if afterImport == "trash" {
		dv.CreateFolder(t, "support", crashTrash)
	}

	mailAddr := tc.addr(dv)
	var proxy *faultproxy.Proxy
	if cutConnections || tc.killOn != "" {
		proxy = faultproxy.Start(t, mailAddr)
		mailAddr = proxy.Addr()
	}
	host, port, _ := net.SplitHostPort(mailAddr)

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	env := []string{"LEDGERDESK_HTTP_ADDR=" + httpAddr, "LEDGERDESK_DATA_DIR=" + dataDir,
		"LEDGERDESK_ADMIN_TOKEN=" + crashAdminToken, "LEDGERDESK_LOG_FORMAT=json"}
	var dbURL string
	if tc.postgres {
		dbURL = pgtest.NewDatabase(t)
		env = append(env, "LEDGERDESK_DATABASE_URL="+dbURL, "LEDGERDESK_SECRET_KEY="+strings.Repeat("cd", 32))
	}

	c := startChild(t, bin, env)
	waitReady(t, base, c)
	var portNum int
	_, _ = fmt.Sscanf(port, "%d", &portNum)
	account := map[string]any{
		"name": "support", "protocol": tc.protocol, "host": host, "port": portNum, "security": "none",
		"allow_plaintext_auth": true, "username": "support", "password": "s3cret", "poll_interval_seconds": 1,
		"after_import": afterImport, "enabled": true,
	}
	if afterImport == "move" {
		account["move_folder"] = crashMoveFolder
	}
	apiPost(t, base+"/api/v1/inbound-accounts", account)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	next := 0
	// Pending: mails still in the INBOX, or with keep not yet imported.
	pending := func() int { return dv.Count(t, "support") }
	if afterImport == "keep" {
		pending = func() int { return next - countEvents(t, base, "MailReceived") }
	}
	// A calibrated run imports its first wave whole and times it; every
	// later kill lands at a random moment of that span, so that kills hit
	// the download, the commit and the after-import step alike.
	var waveTime time.Duration
	for wave := range waves {
		raws := make([][]byte, perWave)
		for i := range raws {
			raws[i] = crashMail(next)
			next++
		}
		dv.DeliverMany(t, "support", raws)
		if cutConnections {
			// Cut somewhere inside the first mails of the next download.
			proxy.CutAfterBytes(int64(2000 + rng.IntN(400_000)))
			time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
			proxy.Reset()
			continue
		}
		if tc.killOn != "" {
			proxy.HoldOn([]byte(tc.killOn))
			select {
			case <-proxy.Held():
			case <-time.After(time.Minute):
				t.Fatalf("wave %d: serve never sent %q; log tail:\n%s", wave+1, tc.killOn, tail(c.log.String(), 3000))
			}
			c.kill()
			proxy.Reset()
			t.Logf("wave %d: killed serve as it sent %q, with %d mails in the INBOX", wave+1, tc.killOn, dv.Count(t, "support"))
			c = startChild(t, bin, env)
			waitReady(t, base, c)
			continue
		}
		if tc.calibrate && wave == 0 {
			start := time.Now()
			for pending() > 0 && time.Since(start) < time.Minute {
				time.Sleep(10 * time.Millisecond)
			}
			waveTime = time.Since(start)
			t.Logf("wave 1: %d mails imported in %s without a kill", perWave, waveTime.Round(time.Millisecond))
			continue
		}
		delay := time.Duration(rng.IntN(1200)) * time.Millisecond
		if waveTime > 0 {
			delay = time.Duration(rng.Int64N(int64(waveTime)))
		}
		time.Sleep(delay)
		left := -1
		if tc.calibrate {
			left = pending() // asked before the kill: keep asks the API
		}
		c.kill()
		if left < 0 {
			left = dv.Count(t, "support")
		}
		t.Logf("wave %d: killed serve after %s with %d mails pending", wave+1, delay.Round(time.Millisecond), left)
		c = startChild(t, bin, env)
		waitReady(t, base, c)
	}

	deadline := time.Now().Add(crashDeadline)
	for pending() > 0 {
		if time.Now().After(deadline) {
			// SIGQUIT makes the Go runtime print every goroutine: the log then
			// shows where the child is stuck.
			_ = c.cmd.Process.Signal(syscall.SIGQUIT)
			_ = c.cmd.Wait()
			t.Fatalf("%d mails still pending after 3 minutes; log tail:\n%s", pending(), tail(c.log.String(), 30000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The mailbox status counts the events of record, not the polls' own
	// tallies, which die with a killed poll.
	status := waitMailboxCounts(t, base, next)
	c.stop(t)
	if status.Fetched != int64(next) || status.Failed != 0 || status.Oversize != 0 || status.Skipped != 0 {
		t.Errorf("mailbox status counts fetched %d, failed %d, oversize %d, skipped %d; the log holds %d MailReceived and nothing failed or skipped",
			status.Fetched, status.Failed, status.Oversize, status.Skipped, next)
	}

	// The right folder holds every mail, and no other folder any.
	want := map[string]int{"INBOX": 0, crashMoveFolder: 0, crashTrash: 0, "HD Error Messages": 0}
	switch afterImport {
	case "move":
		want[crashMoveFolder] = next
	case "trash":
		want[crashTrash] = next
	case "keep":
		want["INBOX"] = next
	}
	for folder, n := range want {
		if got := dv.FolderCount(t, "support", folder); got != n {
			t.Errorf("after_import %s: %s holds %d mails, want %d", afterImport, folder, got, n)
		}
	}

	counts := receivedPerMessageID(t, dbURL, filepath.Join(dataDir, "ledgerdesk.db"))
	if len(counts) != next {
		t.Errorf("%d distinct mails have a MailReceived, want %d", len(counts), next)
	}
	for i := range next {
		id := fmt.Sprintf("crash-%d@example.com", i)
		if counts[id] != 1 {
			t.Errorf("mail %s has %d MailReceived events, want exactly 1", id, counts[id])
		}
	}
}

// countEvents counts the events of type typ in the log of the serve at
// base, through GET /api/v1/events.
func countEvents(t *testing.T, base, typ string) int {
	t.Helper()
	n, cursor := 0, ""
	for {
		url := base + "/api/v1/events?limit=500&type=" + typ
		if cursor != "" {
			url += "&after=" + cursor
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+crashAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET events: %v", err)
		}
		var page struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor string            `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET events = %d, %v", resp.StatusCode, err)
		}
		n += len(page.Items)
		if page.NextCursor == "" || len(page.Items) == 0 {
			return n
		}
		cursor = page.NextCursor
	}
}

// mailboxCounts is the part of a GET /api/v1/mailboxes row the crash
// tests check.
type mailboxCounts struct {
	Fetched, Failed, Oversize, Skipped int64
}

// waitMailboxCounts reads the only account's row of GET /api/v1/mailboxes
// until it counts fetched mails, for at most 30 seconds (the view follows
// the log), and returns the last row read.
func waitMailboxCounts(t *testing.T, base string, fetched int) mailboxCounts {
	t.Helper()
	var row mailboxCounts
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/mailboxes", nil)
		req.Header.Set("Authorization", "Bearer "+crashAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET /api/v1/mailboxes: %v", err)
		}
		var page struct {
			Items []mailboxCounts `json:"items"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		_ = resp.Body.Close()
		if err != nil || len(page.Items) != 1 {
			t.Fatalf("GET /api/v1/mailboxes = %d, %d rows, %v; want one row", resp.StatusCode, len(page.Items), err)
		}
		if row = page.Items[0]; row.Fetched == int64(fetched) {
			break
		}
	}
	return row
}

// receivedPerMessageID opens the store the child used and counts the
// MailReceived events per Message-ID, reading the whole global log.
func receivedPerMessageID(t *testing.T, pgURL, sqlitePath string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	withStore(t, pgURL, sqlitePath, func(ctx context.Context, store eventstore.Store) {
		var after int64
		for {
			evs, err := store.ReadAll(ctx, after, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				return
			}
			for _, e := range evs {
				if e.Type == "MailReceived" {
					var p struct {
						MessageID string `json:"message_id"`
					}
					if err := json.Unmarshal(e.Payload, &p); err != nil {
						t.Fatal(err)
					}
					counts[p.MessageID]++
				}
			}
			after = evs[len(evs)-1].Position
		}
	})
	return counts
}
