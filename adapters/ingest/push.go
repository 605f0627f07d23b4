package ingest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// pushStable is how long a watch must have run before its end counts as
// a new failure streak: a server that drops IDLE every few seconds is
// retried with a growing pause, one that dropped it after hours at once.
const pushStable = time.Minute

// startPush starts one watch per folder of a pushed account, each on its
// own goroutine (and connection) beside the poll's, and records the
// account's delivery mode: polled when push is off or impossible, pushed
// once every folder's watch runs. The watches end with ctx; watches.Wait
// waits for them.
func (s *Scheduler) startPush(ctx context.Context, a Account, newMail chan<- struct{}, watches *sync.WaitGroup) {
	watcher, ok := a.Fetcher.(mailsource.Watcher)
	if !a.Push || !ok {
		s.noteDelivery(ctx, a.ID, domain.DeliveryPolled, "")
		return
	}
	folders := watcher.WatchFolders()
	p := &accountPush{s: s, accountID: a.ID, folders: len(folders), up: map[string]bool{}}
	// Coalesced: one poll pending at most, however many mails come.
	poke := func() {
		select {
		case newMail <- struct{}{}:
		default:
		}
	}
	for _, folder := range folders {
		watches.Add(1)
		go func() {
			defer watches.Done()
			s.watchFolder(ctx, a, watcher, folder, p, poke)
		}()
	}
}

// watchFolder keeps a watch on one folder until ctx ends, establishing it
// again after every failure with a bounded, jittered back-off; the poll
// goes on meanwhile.
func (s *Scheduler) watchFolder(ctx context.Context, a Account, w mailsource.Watcher, folder string, p *accountPush, poke func()) {
	failures := 0
	outer := ctx
	for {
		// With several instances, only the holder of the account's lease
		// watches it, and stops when the lease passes on.
		ctx, leaseDone, held := s.holdForWatch(outer, a.ID)
		if !held {
			return
		}
		// Connecting and logging in takes a poll slot, given back once the
		// watch waits: a thousand watches starting together (or coming back
		// after their server restarted) queue like polls instead of
		// hitting the server at once, and a server that never answers holds
		// only its share of the slots.
		release, err := s.slots.acquire(ctx, serverKey(a))
		if err != nil {
			leaseDone()
			if outer.Err() != nil {
				return
			}
			continue // the lease passed on: wait for it again
		}
		var once sync.Once
		started := time.Now()
		err = s.watchRecovered(ctx, w, folder, mailsource.WatchOptions{
			Renew: s.cfg.IdleRenewal, NewMail: poke,
			Established: func() {
				once.Do(release)
				p.established(ctx, folder)
			},
		})
		once.Do(release)
		leaseDone()
		if outer.Err() != nil {
			return
		}
		if ctx.Err() != nil {
			continue // the lease passed on: another instance watches now
		}
		if err == nil {
			err = errors.New("ingest: watch ended without a reason")
		}
		p.lost(ctx, folder, err)
		if time.Since(started) >= pushStable {
			failures = 0
		}
		failures++
		wait := pushRetry(failures, s.cfg.PushRetry, s.cfg.PushRetryMax)
		if errors.Is(err, mailsource.ErrPushUnsupported) {
			wait = s.cfg.MaxBackoff
		}
		s.cfg.Logger.Warn("push watch ended; the account is polled until it is back", "account", a.ID, "folder", folder,
			"failures", failures, "retry_in", wait, "err", err, "server_reply", mailsource.ServerReply(err))
		timer := time.NewTimer(wait)
		select {
		case <-outer.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// holdForWatch waits until this instance holds the account's lease (at
// once without Leases) and returns a context that ends when the lease is
// lost or is to be handed over, and done to call when the watch is over.
// false when ctx ended first.
func (s *Scheduler) holdForWatch(ctx context.Context, accountID string) (context.Context, func(), bool) {
	if s.cfg.Leases == nil {
		return ctx, func() {}, ctx.Err() == nil
	}
	for {
		changed := s.cfg.Leases.Changed()
		l, ok := s.cfg.Leases.Hold(accountID)
		if ok {
			wctx, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(l.Context(), cancel)
			go func() { // a lease to be handed over refuses Hold: end the watch
				for {
					ch := s.cfg.Leases.Changed()
					if again, ok := s.cfg.Leases.Hold(accountID); ok {
						again.Done()
					} else {
						cancel()
						return
					}
					select {
					case <-wctx.Done():
						return
					case <-ch:
					}
				}
			}()
			return wctx, func() { cancel(); stop(); l.Done() }, true
		}
		select {
		case <-ctx.Done():
			return nil, nil, false
		case <-changed:
		}
	}
}

// watchRecovered is one Watch with a panic turned into its error, as
// pollRecovered does for polls.
func (s *Scheduler) watchRecovered(ctx context.Context, w mailsource.Watcher, folder string, o mailsource.WatchOptions) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.cfg.Logger.Error("push watch panicked; counted as a failed watch", "folder", folder, "panic", v)
			err = errors.New("ingest: push watch panicked")
		}
	}()
	return w.Watch(ctx, folder, o)
}

// pushRetry is the wait before attempt failures+1: doubling from base up
// to maxWait, then a random point in its upper half, so that the watches
// of many accounts a server restart dropped do not all come back at the
// same instant.
func pushRetry(failures int, base, maxWait time.Duration) time.Duration {
	wait := backoff(base, failures, maxWait)
	half := wait / 2
	return half + rand.N(half+1) //nolint:gosec // jitter, not a secret
}

// accountPush follows which folders of one account are watched and
// records the account's delivery mode when it changes.
type accountPush struct {
	s         *Scheduler
	accountID string
	folders   int

	mu sync.Mutex
	up map[string]bool
}

func (p *accountPush) established(ctx context.Context, folder string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up[folder] = true
	if len(p.up) == p.folders {
		p.s.cfg.Observer.Mode(p.accountID, true)
		p.s.noteDelivery(ctx, p.accountID, domain.DeliveryPushed, "")
	}
}

func (p *accountPush) lost(ctx context.Context, folder string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.up, folder)
	p.s.cfg.Observer.Mode(p.accountID, false)
	p.s.noteDelivery(ctx, p.accountID, domain.DeliveryPolled, mailsource.Excerpt(folder+": "+err.Error(), maxReasonLen))
}

// noteDelivery records the account's delivery mode as a
// MailboxDeliveryChanged when it differs from the last one recorded in
// this process (or none was, so that a view a stopped process left at
// "pushed" is put right): a watch failing again the same way adds nothing
// to the log. The calls for one account never overlap (its watches report
// under accountPush's lock, its worker's start and stop around them), so
// the store is written outside the lock every account shares.
func (s *Scheduler) noteDelivery(ctx context.Context, accountID, delivery, reason string) {
	s.deliveryMu.Lock()
	prev, seen := s.delivery[accountID]
	s.deliveryMu.Unlock()
	if seen && prev.Delivery == delivery && prev.Reason == reason {
		return
	}
	ev := domain.MailboxDeliveryChanged{AccountID: accountID, Delivery: delivery, At: s.cfg.Now().UTC(), Reason: reason}
	if err := s.recordDelivery(ctx, ev); err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.Error("record delivery mode", "account", accountID, "delivery", delivery, "err", err)
		}
		return // tried again with the next change
	}
	s.deliveryMu.Lock()
	s.delivery[accountID] = ev
	s.deliveryMu.Unlock()
}

// DeliveryStream holds an account's delivery modes, beside its poll
// outcomes (MailboxStream).
func DeliveryStream(accountID string) string { return "mailbox-delivery-" + accountID }

// recordDelivery appends the delivery mode to the account's delivery stream.
func (s *Scheduler) recordDelivery(ctx context.Context, ev domain.MailboxDeliveryChanged) error {
	return s.recordMailboxEvent(ctx, DeliveryStream(ev.AccountID), ev.AccountID, ev, ev.At)
}

// recordMailboxEvent appends what the scheduler observed of an account to
// one of its streams, as the mailbox itself (actor "mailbox:<id>").
func (s *Scheduler) recordMailboxEvent(ctx context.Context, stream, accountID string, ev domain.Event, at time.Time) error {
	name, version, payload, err := domain.MarshalEvent(ev)
	if err != nil {
		return err
	}
	_, err = s.cfg.Store.Append(ctx, eventstore.AppendRequest{
		Stream: stream, ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{{Type: name, SchemaVersion: version, Payload: payload,
			Metadata: eventstore.Metadata{Actor: "mailbox:" + accountID, OccurredAt: at}}},
	})
	return err
}

// maxReasonLen bounds the reason of a MailboxDeliveryChanged: the watch's
// error, which quotes at most mailsource.MaxReplyLen of the server's words.
const maxReasonLen = 400
