package imapsource

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// IDLE renewal: RFC 2177 section 3 lets a server log out a client that
// idled 30 minutes, so a client re-issues IDLE at least every 29.
const (
	DefaultIdleRenewal = 25 * time.Minute
	MaxIdleRenewal     = 29 * time.Minute
)

var _ mailsource.Watcher = (*Fetcher)(nil)

// WatchFolders implements mailsource.Watcher: the configured folders. The
// folders IncludeSubfolders finds below them are read by each poll but not
// watched: a tree of unknown size would take a connection per folder.
func (f *Fetcher) WatchFolders() []string { return append([]string(nil), f.cfg.Folders...) }

// Watch implements mailsource.Watcher with IMAP IDLE (RFC 2177, RFC 9051
// section 6.3.13) on a connection of its own, logged in as Poll logs in
// (password or XOAUTH2). The folder is EXAMINEd (read-only: the watch
// never changes a flag); an EXISTS that raises the folder's count calls
// o.NewMail. The IDLE is ended with DONE and issued again every o.Renew
// (default DefaultIdleRenewal, at most MaxIdleRenewal). While idle the
// stall watchdog rests (a quiet mailbox is no stalled server); DONE and
// its answer are watched again, so a server gone silent is noticed at the
// next renewal at the latest, a closed connection at once.
func (f *Fetcher) Watch(ctx context.Context, folder string, o mailsource.WatchOptions) error {
	renew := o.Renew
	if renew <= 0 || renew > MaxIdleRenewal {
		renew = DefaultIdleRenewal
	}
	newMail := o.NewMail
	if newMail == nil {
		newMail = func() {}
	}
	notices := &mailboxNotices{newMail: newMail}
	s, err := f.dialNotified(ctx, notices)
	if err != nil {
		return err
	}
	defer s.close()
	if caps := s.c.Caps(); !caps.Has(imap.CapIdle) && !caps.Has(imap.CapIMAP4rev2) {
		return fmt.Errorf("%w: %s:%d", mailsource.ErrPushUnsupported, f.cfg.Host, f.cfg.Port)
	}
	sel, err := s.c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return s.wrap(serverError("examine "+folder, err))
	}
	notices.count.Store(int64(sel.NumMessages))
	if f.noteUIDNext(folder, sel.UIDValidity, sel.UIDNext) && sel.NumMessages > 0 {
		// Mail may have come while nobody watched (before the first watch,
		// or while the connection was down): let the poll look.
		newMail()
	}
	for first := true; ; first = false {
		idle, err := s.c.Idle()
		if err != nil {
			return s.wrap(serverError("IDLE in "+folder, err))
		}
		if first && o.Established != nil {
			o.Established()
		}
		resume := s.wd.pause()
		timer := time.NewTimer(renew)
		select {
		case <-ctx.Done():
		case <-s.c.Closed():
		case <-timer.C:
		}
		timer.Stop()
		resume()
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-s.c.Closed():
			return s.wrap(fmt.Errorf("imapsource: IDLE in %q: %w", folder, errConnectionClosed))
		default:
		}
		if err := idle.Close(); err != nil {
			return s.wrap(fmt.Errorf("imapsource: end IDLE in %q: %w", folder, err))
		}
		if err := idle.Wait(); err != nil {
			return s.wrap(serverError("IDLE in "+folder, err))
		}
	}
}

// errConnectionClosed: the server closed the connection (a BYE, a
// restart, an administrator's kick) while we idled.
var errConnectionClosed = errors.New("connection closed by the server")

// noteUIDNext remembers the folder's UIDNEXT as the last watch saw it and
// says whether mail may have arrived since: always on the first watch of
// the folder, else when UIDVALIDITY or UIDNEXT moved (or the server sent
// no UIDNEXT).
func (f *Fetcher) noteUIDNext(folder string, uidValidity uint32, uidNext imap.UID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.watched == nil {
		f.watched = map[string]watchedFolder{}
	}
	prev, seen := f.watched[folder]
	cur := watchedFolder{uidValidity: uidValidity, uidNext: uidNext}
	f.watched[folder] = cur
	return !seen || uidNext == 0 || prev != cur
}

// watchedFolder is where a folder stood when its last watch began.
type watchedFolder struct {
	uidValidity uint32
	uidNext     imap.UID
}

// mailboxNotices follows the selected folder's message count through the
// server's unsolicited EXISTS and EXPUNGE and calls newMail when it grows.
// go-imap calls it on its reader goroutine, one response at a time.
type mailboxNotices struct {
	count   atomic.Int64
	newMail func()
}

func (n *mailboxNotices) mailbox(d *imapclient.UnilateralDataMailbox) {
	if d.NumMessages == nil {
		return
	}
	exists := int64(*d.NumMessages)
	if prev := n.count.Swap(exists); exists > prev {
		n.newMail()
	}
}

func (n *mailboxNotices) expunge(uint32) { n.count.Add(-1) }
