package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/imapsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// TestScheduler_PushedAccountsOnDovecot runs 20 pushed accounts of two
// folders each against a real Dovecot: each account holds exactly one IDLE
// connection per folder, new mail in a subfolder is imported with the
// hourly poll far off, and an account's goroutines stay within one for
// its worker plus four per watched folder (ours, and go-imap's reader,
// IDLE and our watchdog's for its connection). It logs the goroutines and
// heap per account.
func TestScheduler_PushedAccountsOnDovecot(t *testing.T) {
	// Not parallel: runtime.NumGoroutine counts the whole test binary, so a
	// test running beside this one would count as this one's goroutines.
	const accounts, folders = 20, 2
	dv := dovecottest.Start(t)
	host, port := hostPort(t, dv.IMAPAddr)
	var list []Account
	for i := range accounts {
		user := fmt.Sprintf("u%d", i)
		dv.AddUser(t, user, "pw")
		dv.CreateFolder(t, user, "Support")
		f, err := imapsource.New(imapsource.Config{Host: host, Port: port, Security: mailsource.SecurityNone, AllowPlaintextAuth: true,
			Username: user, Password: "pw", Folders: []string{"INBOX", "Support"}, Timeout: time.Minute}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, Account{ID: user, PollInterval: time.Hour, Fetcher: f, Push: true})
	}
	runtime.GC()
	goroutinesBefore := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	r := startPushRig(t, SchedulerConfig{}, list...)
	for _, a := range list {
		waitFor(t, func() bool {
			n, err := r.store.StreamVersion(context.Background(), MailboxStream(a.ID))
			return err == nil && n >= 1 && r.lastDelivery(t, a.ID).Delivery == domain.DeliveryPushed
		})
	}
	for _, a := range list {
		waitFor(t, func() bool { return dv.Connections(t, a.ID, "imap") == folders }) // the start polls' connections are gone
	}
	runtime.GC()
	added := runtime.NumGoroutine() - goroutinesBefore
	perAccount := float64(added) / accounts
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("figures: %d pushed accounts of %d folders: %.1f goroutines and %.0f KB of heap in use per account",
		accounts, folders, perAccount, float64(int64(after.HeapInuse)-int64(before.HeapInuse))/accounts/1024)
	// The scheduler's and the store's own few come on top, once.
	if limit := accounts*(1+4*folders) + 10; added > limit {
		t.Errorf("%d goroutines for %d pushed accounts of %d folders, want at most %d", added, accounts, folders, limit)
	}

	dv.DeliverManyTo(t, "u7", "Support", [][]byte{benchMail(7)})
	waitFor(t, func() bool { return dv.FolderCount(t, "u7", "Support") == 0 })
	if got := mailEvents(t, r.store)[domain.MailReceivedName]; len(got) != 1 {
		t.Errorf("%d MailReceived after one pushed mail, want 1", len(got))
	}
}
