package ticketing

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/smtptest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// TestOutbound_RecoveryTakesBackOnlyTheClaimsOfGoneOwners: instance "a"
// dies after the server accepted a mail and before recording it. The saga
// of instance "b" leaves that claim alone while "a" counts as alive, even
// with the claim expired (a rolling deploy's old instance may still be
// sending it); once "a" is gone it sends the mail again, with the same
// Message-ID: the documented window, and the only second copy.
func TestOutbound_RecoveryTakesBackOnlyTheClaimsOfGoneOwners(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		var aAlive atomic.Bool
		aAlive.Store(true)
		base := time.Now()
		clock := func() time.Time { return t0.Add(24*time.Hour + time.Since(base)) }
		instance := func(id string) func(*OutboundOptions) {
			return func(o *OutboundOptions) {
				o.Workers, o.Instance, o.Now, o.ClaimTTL = 1, id, clock, 50*time.Millisecond
				o.OwnersGone = func(_ context.Context, owners []string) (map[string]bool, error) {
					gone := map[string]bool{}
					for _, o := range owners {
						gone[o] = o != "b" && (o != "a" || !aAlive.Load())
					}
					return gone, nil
				}
			}
		}
		a := newHarness(t, store, smtptest.Options{}, instance("a"))
		var crashed atomic.Bool
		a.saga.crashAfterAccept = func(string) bool { return !crashed.Swap(true) }
		m := mail(1, "claimed by a", nil)
		appendMails(t, store, []domain.MailReceived{m})
		a.waitStates(map[string]int{"sending": 1})
		a.srv.WaitCount(1, 10*time.Second)
		a.stop()

		b := startHarness(t, store, a.srv, instance("b"))
		time.Sleep(recoverEvery + recoverEvery/2) // the start's recovery and a periodic one
		if got := b.waitStates(map[string]int{"sending": 1}); got["sending"] != 1 {
			t.Fatalf("states = %v", got)
		}
		if n := len(a.srv.Received()); n != 1 {
			t.Fatalf("the server got %d copies while the owner lived, want 1", n)
		}

		aAlive.Store(false)
		b.waitStates(map[string]int{"sent": 1})
		got := a.srv.Received()
		if len(got) != 2 {
			t.Fatalf("received %d copies, want 2 (the at-least-once window)", len(got))
		}
		h1, _ := parseMail(t, got[0].Data)
		h2, _ := parseMail(t, got[1].Data)
		if x, y := h1.Get("Message-Id"), h2.Get("Message-Id"); x != y || x == "" {
			t.Errorf("Message-IDs %q and %q differ", x, y)
		}
	})
}
