package imapsource

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// ErrNoUID is joined into a poll's error when the server answered a UID
// FETCH with a mail but not its UID: it cannot be keyed, so it stays.
var ErrNoUID = errors.New("imapsource: server sent a mail without its UID")

// unrouted catches the FETCH responses that go-imap cannot hand to the UID
// FETCH that asked for them. The items of a response may come in any order
// (RFC 9051 section 7.5.2), but go-imap routes a response by its UID and
// must read a literal before the next item: a response with BODY[] before
// UID reaches its unilateral-data handler instead, and is lost unless the
// handler reads it. handle spools such a mail until its UID follows; the
// fetch takes the spooled mails once its command is done.
type unrouted struct {
	mu      sync.Mutex
	idle    *sync.Cond // signalled when busy drops to 0
	busy    int        // handlers running
	dropped bool       // the session gave up: spools are removed at once
	mails   []spooledMail
}

type spooledMail struct {
	seq uint32
	uid imap.UID
	sp  *spooled
	err error // the literal could not be read whole
}

func newUnrouted() *unrouted {
	u := &unrouted{}
	u.idle = sync.NewCond(&u.mu)
	return u
}

// handle is the client's UnilateralDataHandler.Fetch. go-imap starts it
// before it reads a literal of msg further, so by the time the tagged reply
// of the fetch arrives every handler that holds a mail has started.
func (u *unrouted) handle(msg *imapclient.FetchMessageData) {
	u.mu.Lock()
	u.busy++
	u.mu.Unlock()
	m := spooledMail{seq: msg.SeqNum}
	for item := msg.Next(); item != nil; item = msg.Next() {
		switch it := item.(type) {
		case imapclient.FetchItemDataUID:
			m.uid = it.UID
		case imapclient.FetchItemDataBodySection:
			if it.Literal == nil || m.sp != nil {
				continue // msg.Next drains it
			}
			lit := &literalGuard{r: it.Literal}
			m.sp, m.err = spool(lit)
			if m.err == nil && lit.err != io.EOF { //nolint:errorlint // literalGuard passes a whole literal's io.EOF unwrapped
				m.err = lit.err
			}
			if m.err != nil {
				// The connection broke; go-imap must not read this literal
				// again (see abandon), so stop here.
				m.sp.close()
				m.sp = nil
				u.finish(m)
				return
			}
		}
	}
	u.finish(m)
}

func (u *unrouted) finish(m spooledMail) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.busy--
	switch {
	case u.dropped:
		m.sp.close()
	case m.sp != nil || m.err != nil:
		u.mails = append(u.mails, m)
	}
	if u.busy == 0 {
		u.idle.Broadcast()
	}
}

// take waits for running handlers and returns the mails spooled so far;
// the caller closes their spools.
func (u *unrouted) take() []spooledMail {
	u.mu.Lock()
	defer u.mu.Unlock()
	for u.busy > 0 {
		u.idle.Wait()
	}
	out := u.mails
	u.mails = nil
	return out
}

// drop removes what was spooled without waiting for handlers still
// running; those remove their spools themselves.
func (u *unrouted) drop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.dropped = true
	for _, m := range u.mails {
		m.sp.close()
	}
	u.mails = nil
}

// spoolMemory is how much of a spooled mail is held in memory; a larger
// mail goes to a temporary file, so it is never held whole.
const spoolMemory = 1 << 20

// spooled holds a mail read off the connection before its key was known.
type spooled struct {
	mem  []byte
	file *os.File // the whole mail when it exceeds spoolMemory
	size int64
}

// spool reads r to its end.
func spool(r io.Reader) (*spooled, error) {
	head, err := io.ReadAll(io.LimitReader(r, spoolMemory+1))
	if err != nil {
		return nil, err
	}
	if len(head) <= spoolMemory {
		return &spooled{mem: head, size: int64(len(head))}, nil
	}
	f, err := os.CreateTemp("", "ledgerdesk-imap-*.eml")
	if err != nil {
		_, _ = io.Copy(io.Discard, r) // the literal must be read to its end all the same
		return nil, fmt.Errorf("imapsource: spool a mail: %w", err)
	}
	sp := &spooled{file: f}
	sp.size, err = io.Copy(f, io.MultiReader(bytes.NewReader(head), r))
	if err != nil {
		sp.close()
		return nil, err
	}
	return sp, nil
}

// reader returns the spooled bytes from the start.
func (sp *spooled) reader() (io.Reader, error) {
	if sp.file == nil {
		return bytes.NewReader(sp.mem), nil
	}
	if _, err := sp.file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("imapsource: read spooled mail: %w", err)
	}
	return io.LimitReader(sp.file, sp.size), nil
}

// close removes the temporary file, if any; a nil spool is fine.
func (sp *spooled) close() {
	if sp == nil || sp.file == nil {
		return
	}
	_ = sp.file.Close()
	_ = os.Remove(sp.file.Name())
	sp.file = nil
}
