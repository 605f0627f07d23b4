package main

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// TestCrashSafety_GraphImportsEveryMailExactlyOnce is the crash test of
// IMAP and POP3 for Microsoft Graph: `ledgerdesk serve` runs as a child
// process with an app-only Microsoft 365 connection whose login and Graph
// base URLs point at a fake identity provider and a fake Graph in this
// process. 2,000 mails arrive in ten waves, and the child is SIGKILLed at
// a random moment of each wave; then it may finish. Every mail must have
// exactly one MailReceived, the Inbox must be empty, and every mail must
// have been deleted (to Deleted Items) exactly once.
func TestCrashSafety_GraphImportsEveryMailExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a child process")
	}
	t.Parallel()
	for _, store := range []string{"embedded", "postgres"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			runGraphCrashScenario(t, store == "postgres")
		})
	}
}

func runGraphCrashScenario(t *testing.T, postgres bool) {
	const waves, perWave, mailbox = 10, 200, "support@example.org"
	bin := ledgerdeskBinary(t)
	idp := oauthtest.Start(t, oauthtest.Options{})
	// A little latency per request, so that a kill lands inside an import
	// more often than between two.
	graph := graphtest.Start(t, graphtest.Options{CheckToken: graphtest.Introspection(idp.URL + "/introspect"),
		Latency: time.Millisecond})
	graph.AddMailbox(mailbox)

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	env := []string{"LEDGERDESK_HTTP_ADDR=" + httpAddr, "LEDGERDESK_DATA_DIR=" + dataDir,
		"LEDGERDESK_ADMIN_TOKEN=" + crashAdminToken, "LEDGERDESK_LOG_FORMAT=json"}
	var dbURL string
	if postgres {
		dbURL = pgtest.NewDatabase(t)
		env = append(env, "LEDGERDESK_DATABASE_URL="+dbURL, "LEDGERDESK_SECRET_KEY="+strings.Repeat("ef", 32))
	}

	c := startChild(t, bin, env)
	waitReady(t, base, c)
	conn := apiPost(t, base+"/api/v1/oauth-connections", map[string]any{
		"name": "Contoso 365", "provider": "microsoft365", "flow": "app_only", "tenant_id": "contoso.example",
		"login_base_url": idp.URL, "graph_base_url": graph.URL,
		"client_id": oauthtest.DefaultClientID, "client_secret": oauthtest.DefaultClientSecret,
	})
	created, _ := conn["connection"].(map[string]any)
	connID, _ := created["id"].(string)
	if connID == "" {
		t.Fatalf("connection created without an id: %v", conn)
	}
	apiPost(t, base+"/api/v1/inbound-accounts", map[string]any{
		"name": "support", "protocol": "graph", "mailbox": mailbox, "oauth_connection_id": connID,
		"poll_interval_seconds": 1, "after_import": "delete", "enabled": true,
	})

	var downloads atomic.Int64
	graph.OnRequest(func(r graphtest.Request) {
		if r.Download() {
			downloads.Add(1)
		}
	})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	next, inImport := 0, 0
	for wave := range waves {
		raws := make([][]byte, perWave)
		for i := range raws {
			raws[i] = crashMail(next)
			next++
		}
		before := downloads.Load()
		graph.AddMessages(mailbox, "Inbox", raws)
		if wave%2 == 0 {
			// At any moment, as for IMAP: before, during or after the import.
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		} else {
			// Inside the import: once its downloads have begun, up to 300 ms
			// into downloading, committing and deleting.
			for wait := time.Now().Add(30 * time.Second); downloads.Load() == before && time.Now().Before(wait); {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
		c.kill()
		left := graph.Count(mailbox, "Inbox")
		if downloads.Load() > before && left > 0 {
			inImport++
		}
		t.Logf("wave %d: killed serve after %d downloads of the wave, with %d mails left in the Inbox, %d in Deleted Items",
			wave+1, downloads.Load()-before, left, graph.Count(mailbox, "deleteditems"))
		// The killed process's requests stay in flight at the fake until
		// their handlers notice; the next process must not be counted
		// against them (Graph would answer it 429, which it honours).
		for wait := time.Now().Add(5 * time.Second); graph.InFlight(mailbox) > 0 && time.Now().Before(wait); {
			time.Sleep(time.Millisecond)
		}
		c = startChild(t, bin, env)
		waitReady(t, base, c)
	}

	deadline := time.Now().Add(crashDeadline)
	for graph.Count(mailbox, "Inbox") > 0 {
		if time.Now().After(deadline) {
			_ = c.cmd.Process.Signal(syscall.SIGQUIT)
			_ = c.cmd.Wait()
			t.Fatalf("Inbox still holds %d mails after %v; log tail:\n%s", graph.Count(mailbox, "Inbox"), crashDeadline,
				tail(c.log.String(), 30000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.stop(t)

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
	if d, p := graph.Count(mailbox, "deleteditems"), graph.Purged(mailbox); d != next || p != 0 {
		t.Errorf("Deleted Items holds %d and %d were purged, want %d and 0 (each mail deleted once)", d, p, next)
	}
	if n := len(graph.WithoutImmutableID()); n != 0 {
		t.Errorf("%d requests without Prefer: IdType=\"ImmutableId\"", n)
	}
	var throttled, requests, operations int
	for _, r := range graph.Requests() {
		if r.Status == 429 {
			throttled++
		}
		if r.Batch == "" {
			requests++ // over HTTP: listings, downloads, batches
		}
		if r.Path != "/v1.0/$batch" {
			operations++ // as Graph counts them: a batch's requests one by one
		}
	}
	t.Logf("%d kills, %d of them inside an import; %d HTTP requests (%.2f a mail) and %d Graph operations (%.2f a mail) for %d mails, "+
		"peak concurrency %d, %d answered 429", waves, inImport, requests, float64(requests)/float64(next), operations,
		float64(operations)/float64(next), next, graph.PeakConcurrency(mailbox), throttled)
	if graph.PeakConcurrency(mailbox) > 4 {
		t.Errorf("peak concurrency %d, want at most 4", graph.PeakConcurrency(mailbox))
	}
}
