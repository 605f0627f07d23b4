package imapsource

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// knownChunk bounds how many keys one Sink.Known call carries.
const knownChunk = 1000

// SourceKey is the idempotency key of a mail: it survives restarts and a
// folder recreated with reused UIDs gets a new UIDVALIDITY, hence new keys.
func SourceKey(folder string, uidValidity uint32, uid imap.UID) string {
	return "imap/" + folder + "/" + strconv.FormatUint(uint64(uidValidity), 10) + "/" + strconv.FormatUint(uint64(uid), 10)
}

// listed is one mail as the folder listing shows it.
type listed struct {
	uid     imap.UID
	size    int64 // RFC822.SIZE; -1 when not asked for
	deleted bool  // flagged \Deleted (by us without UIDPLUS, or by someone else)
	key     string
}

func (s *session) pollFolder(ctx context.Context, sink mailsource.Sink, folder string, res *mailsource.PollResult) error {
	log := s.f.log.With("folder", folder)
	if f, ok := sink.(mailsource.Fenced); ok {
		s.stillHeld = func() error { return f.StillHeld(ctx) }
	}
	sel, err := s.c.Select(folder, nil).Wait()
	if err != nil {
		return serverError("select "+folder, err)
	}
	if sel.UIDValidity == 0 {
		return fmt.Errorf("imapsource: select %q: server sent no UIDVALIDITY", folder)
	}
	s.f.noteUIDValidity(folder, sel.UIDValidity)
	if sel.NumMessages == 0 {
		return nil
	}
	mails, err := s.list(folder, sel.UIDValidity)
	if err != nil {
		return err
	}
	known, err := s.known(ctx, sink, mails)
	if err != nil {
		return err
	}

	// Finish what an earlier poll committed but did not delete/move, then
	// import the new mails batch by batch.
	var done, failed []imap.UID
	var fresh []listed
	ignored := 0
	for _, m := range mails {
		switch known[m.key] {
		case mailsource.StatusReceived:
			if s.f.cfg.AfterImport == mailsource.AfterImportKeep {
				continue // imported before and meant to stay
			}
			if m.deleted && !s.canUIDExpunge() {
				continue // flagged by us before; nothing more we may do
			}
			done = append(done, m.uid)
		case mailsource.StatusFailed:
			if m.deleted && !s.canUIDExpunge() {
				continue
			}
			failed = append(failed, m.uid)
		default:
			if m.deleted {
				ignored++ // someone else's mail, about to be expunged
				continue
			}
			fresh = append(fresh, m)
		}
	}
	if ignored > 0 {
		log.Info("imap mails flagged \\Deleted by someone else are not imported", "count", ignored)
	}
	// In sets of BatchSize, so that no command line grows without bound. A
	// step the server refuses is retried on the next poll and does not keep
	// the new mails below from being imported.
	for chunk := range slices.Chunk(done, s.f.cfg.BatchSize) {
		finished, err := s.step(s.afterImport(imap.UIDSetNum(chunk...), res))
		if err != nil {
			return err
		}
		if finished {
			res.Skipped += len(chunk)
		}
	}
	for chunk := range slices.Chunk(failed, s.f.cfg.BatchSize) {
		finished, err := s.step(s.toErrorFolder(imap.UIDSetNum(chunk...), res))
		if err != nil {
			return err
		}
		if finished {
			res.Skipped += len(chunk)
		}
	}
	// Each batch's commit runs while the next batch downloads (when the sink
	// can do that); a batch is deleted or moved only after its commit.
	var prev *pendingBatch
	for batch := range slices.Chunk(fresh, s.f.cfg.BatchSize) {
		cur, err := s.receiveBatch(ctx, sink, batch)
		if prev != nil {
			if ferr := s.finishBatch(prev, res); ferr != nil && err == nil {
				err = ferr
			}
		}
		if err != nil {
			if cur != nil && cur.wait != nil {
				_ = cur.wait() // never leave a commit running behind a failed poll
			}
			return err
		}
		prev = cur
	}
	if prev != nil {
		return s.finishBatch(prev, res)
	}
	return nil
}

// pendingBatch is a received batch whose commit may still be running.
type pendingBatch struct {
	wait                          func() error
	received, failed, oversize    imap.UIDSet
	nReceived, nFailed, nOversize int
}

// list returns UID, size and \Deleted of every mail in the selected folder,
// with one UID FETCH 1:* (no SEARCH, so no CHARSET that Exchange could
// answer with BADCHARSET). RFC822.SIZE is asked for only when MaxMailSize
// needs it: on freshly delivered Maildir mail Dovecot reads every file to
// compute it, which costs as much as the download (size is then -1 and the
// literal's length is passed to the sink instead).
func (s *session) list(folder string, uidValidity uint32) ([]listed, error) {
	withSize := s.f.cfg.MaxMailSize > 0
	fc := s.c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, RFC822Size: withSize, Flags: true})
	var mails []listed
	for msg := fc.Next(); msg != nil; msg = fc.Next() {
		buf, err := msg.Collect()
		if err != nil {
			_ = fc.Close()
			return nil, fmt.Errorf("imapsource: list %q: %w", folder, err)
		}
		if buf.UID == 0 {
			continue
		}
		size := int64(-1)
		if withSize {
			size = buf.RFC822Size
		}
		mails = append(mails, listed{
			uid:     buf.UID,
			size:    size,
			deleted: slices.Contains(buf.Flags, imap.FlagDeleted),
			key:     SourceKey(folder, uidValidity, buf.UID),
		})
	}
	if err := fc.Close(); err != nil {
		return nil, serverError("UID FETCH 1:* (UID FLAGS) in "+folder, err)
	}
	slices.SortFunc(mails, func(a, b listed) int { return cmp.Compare(a.uid, b.uid) })
	return mails, nil
}

func (s *session) known(ctx context.Context, sink mailsource.Sink, mails []listed) (map[string]mailsource.Status, error) {
	known := make(map[string]mailsource.Status)
	resume := s.wd.pause()
	defer resume()
	for chunk := range slices.Chunk(mails, knownChunk) {
		keys := make([]string, len(chunk))
		for i, m := range chunk {
			keys[i] = m.key
		}
		got, err := sink.Known(ctx, keys)
		if err != nil {
			return nil, fmt.Errorf("imapsource: ask sink for known keys: %w", err)
		}
		for k, st := range got {
			known[k] = st
		}
	}
	return known, nil
}

// importBatch stages one batch (oversize ones without download), commits
// it and only then applies after_import and the error folder to it.
// receiveBatch downloads a batch into the sink and starts its commit.
func (s *session) receiveBatch(ctx context.Context, sink mailsource.Sink, batch []listed) (*pendingBatch, error) {
	maxSize := s.f.cfg.MaxMailSize
	var fetch, oversize imap.UIDSet
	byUID := make(map[imap.UID]listed, len(batch))
	nOversize := 0
	for _, m := range batch {
		if maxSize > 0 && m.size > maxSize {
			resume := s.wd.pause()
			err := sink.Oversize(ctx, m.key, m.size)
			resume()
			if err != nil {
				return nil, fmt.Errorf("imapsource: stage oversize %s: %w", m.key, err)
			}
			oversize.AddNum(m.uid)
			nOversize++
			continue
		}
		fetch.AddNum(m.uid)
		byUID[m.uid] = m
	}

	var received, failed imap.UIDSet
	nReceived, nFailed := 0, 0
	if len(fetch) > 0 {
		fc := s.c.Fetch(fetch, &imap.FetchOptions{
			UID:         true,
			BodySection: []*imap.FetchItemBodySection{{Peek: true}}, // BODY.PEEK[]: leaves \Seen alone
		})
		stage := func(uid imap.UID, out mailsource.Outcome) {
			if out.Status == mailsource.StatusFailed {
				failed.AddNum(uid)
				nFailed++
				return
			}
			received.AddNum(uid)
			nReceived++
		}
		err := s.receive(ctx, sink, fc, byUID, stage)
		if err != nil {
			s.unrouted.drop()
			s.abandon(fc)
			return nil, err
		}
		closeErr := fc.Close()
		var ie *imap.Error
		if closeErr != nil && !errors.As(closeErr, &ie) {
			s.unrouted.drop()
			return nil, fmt.Errorf("imapsource: UID FETCH BODY.PEEK[]: %w", closeErr)
		}
		seen := func(uid imap.UID) bool { return received.Contains(uid) || failed.Contains(uid) }
		if err := s.receiveUnrouted(ctx, sink, byUID, seen, stage); err != nil {
			return nil, err
		}
		if closeErr != nil {
			// The server refused some mails but sent the others whole: commit
			// those, so that one mail the server cannot read never holds up
			// the rest. The refused ones stay and are reported with the
			// server's words on every poll.
			missing := unreceived(fetch, received, failed)
			s.f.log.Warn("imap server refused to send some mails; the others are imported",
				"reply", replyText(ie), "uids", missing.String())
			s.refused = append(s.refused, serverError("UID FETCH "+missing.String()+" BODY.PEEK[]", closeErr))
		}
	}

	p := &pendingBatch{received: received, failed: failed, oversize: oversize,
		nReceived: nReceived, nFailed: nFailed, nOversize: nOversize}
	if ac, ok := sink.(mailsource.AsyncCommitter); ok {
		p.wait = ac.StartCommit(ctx)
		return p, nil
	}
	resume := s.wd.pause()
	err := sink.Commit(ctx)
	resume()
	p.wait = func() error { return err }
	return p, nil
}

// finishBatch waits for a batch's commit and only then deletes or moves its
// mails on the server.
func (s *session) finishBatch(p *pendingBatch, res *mailsource.PollResult) error {
	resume := s.wd.pause()
	err := p.wait()
	resume()
	if err != nil {
		return fmt.Errorf("imapsource: commit batch of %d mails: %w", p.nReceived+p.nFailed+p.nOversize, err)
	}
	res.Fetched += p.nReceived
	res.Failed += p.nFailed
	res.Oversize += p.nOversize

	if _, err := s.step(s.afterImport(p.received, res)); err != nil {
		return err
	}
	failed := p.failed
	failed.AddSet(p.oversize)
	_, err = s.step(s.toErrorFolder(failed, res))
	return err
}

// step takes the result of an after-import step (delete, move, the error
// folder) and says whether the step finished. When the server refused it
// (NO or BAD: no right to create the folder, quota exceeded), the mails
// stay where they are, committed: the refusal is kept for the poll's
// error and the poll goes on with new mail; the next poll finds the mails
// committed and tries the step again. Any other error (the connection
// broke) is returned and ends the poll.
func (s *session) step(err error) (finished bool, _ error) {
	if err == nil {
		return true, nil
	}
	if errors.Is(err, ErrNoTrash) {
		s.f.log.Warn("imap mails imported but not moved to trash; they stay and are retried on the next poll", "err", err)
		s.refused = append(s.refused, err)
		return false, nil
	}
	var se *mailsource.ServerError
	if !errors.As(err, &se) || !errors.Is(err, ErrRefused) {
		return false, err
	}
	s.f.log.Warn("imap server refused to delete or move imported mails; they stay and are retried on the next poll",
		"op", se.Op, "reply", se.Reply)
	s.refused = append(s.refused, err)
	return false, nil
}

// receive streams each fetched literal into the sink; the literal is read
// to its end before the next one (go-imap's reader waits for that).
func (s *session) receive(ctx context.Context, sink mailsource.Sink, fc *imapclient.FetchCommand, byUID map[imap.UID]listed, staged func(imap.UID, mailsource.Outcome)) error {
	seen := make(map[imap.UID]bool, len(byUID))
	for msg := fc.Next(); msg != nil; msg = fc.Next() {
		var uid imap.UID
		for item := msg.Next(); item != nil; item = msg.Next() {
			switch it := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = it.UID
			case imapclient.FetchItemDataBodySection:
				m, ok := byUID[uid]
				if !ok || seen[uid] || it.Literal == nil {
					continue // msg.Next drains it
				}
				seen[uid] = true
				size := m.size
				if size < 0 {
					size = it.Literal.Size()
				}
				lit := &literalGuard{r: it.Literal}
				out, err := sink.Receive(ctx, m.key, size, lit)
				if err != nil && lit.err == nil {
					s.wd.abort() // do not download the rest of the mail just to drain it
				}
				if lit.err == nil {
					_, _ = io.Copy(io.Discard, lit) // whatever the sink left unread
				}
				if lit.err != io.EOF { //nolint:errorlint // literalGuard passes a whole literal's io.EOF unwrapped
					// The literal broke (or we broke it): go-imap must not read
					// it again while its reader goroutine runs, see abandon.
					s.literalBroken = true
					if err == nil {
						err = lit.err
					}
				}
				if err != nil {
					return fmt.Errorf("imapsource: receive %s: %w", m.key, s.wrap(err))
				}
				staged(uid, out)
			}
		}
	}
	return nil
}

// receiveUnrouted hands the sink the mails of the finished fetch whose
// BODY[] came before their UID (see unrouted), in the order they came.
func (s *session) receiveUnrouted(ctx context.Context, sink mailsource.Sink, byUID map[imap.UID]listed, seen func(imap.UID) bool,
	staged func(imap.UID, mailsource.Outcome)) error {
	mails := s.unrouted.take()
	defer func() {
		for _, m := range mails {
			m.sp.close()
		}
	}()
	for _, um := range mails {
		if um.err != nil {
			return fmt.Errorf("imapsource: receive message %d: %w", um.seq, s.wrap(um.err))
		}
		m, ok := byUID[um.uid]
		switch {
		case um.uid == 0:
			s.refused = append(s.refused, fmt.Errorf("%w: message %d stays on the server", ErrNoUID, um.seq))
			continue
		case !ok || seen(um.uid):
			continue // not asked for in this batch, or sent twice
		}
		size := m.size
		if size < 0 {
			size = um.sp.size
		}
		r, err := um.sp.reader()
		if err != nil {
			return err
		}
		resume := s.wd.pause() // the connection is idle meanwhile
		out, err := sink.Receive(ctx, m.key, size, r)
		resume()
		if err != nil {
			return fmt.Errorf("imapsource: receive %s: %w", m.key, err)
		}
		staged(um.uid, out)
	}
	return nil
}

// canUIDExpunge says whether UID EXPUNGE exists (RFC 4315, or IMAP4rev2).
func (s *session) canUIDExpunge() bool {
	return s.c.Caps().Has(imap.CapUIDPlus)
}

// afterImport applies Config.AfterImport to committed mails.
func (s *session) afterImport(uids imap.UIDSet, res *mailsource.PollResult) error {
	if len(uids) == 0 || s.f.cfg.AfterImport == mailsource.AfterImportKeep {
		return nil
	}
	if err := s.leaseHeld(); err != nil {
		return err
	}
	switch s.f.cfg.AfterImport {
	case mailsource.AfterImportDelete:
		return s.deleteUIDs(uids, res)
	case mailsource.AfterImportMove:
		return s.moveUIDs(uids, s.f.cfg.MoveFolder, res)
	case mailsource.AfterImportTrash:
		trash, err := s.trashFolder()
		if err != nil {
			return err
		}
		return s.moveUIDs(uids, trash, res)
	default:
		return nil // keep: the sink remembers the keys
	}
}

// leaseHeld fails when the poll's mailbox lease passed to another
// instance: then nothing is deleted or moved.
func (s *session) leaseHeld() error {
	if s.stillHeld == nil {
		return nil
	}
	if err := s.stillHeld(); err != nil {
		return fmt.Errorf("imapsource: before deleting or moving mail: %w", err)
	}
	return nil
}

// toErrorFolder moves committed failures to Config.ErrorFolder.
func (s *session) toErrorFolder(uids imap.UIDSet, res *mailsource.PollResult) error {
	if len(uids) == 0 {
		return nil
	}
	if err := s.leaseHeld(); err != nil {
		return err
	}
	return s.moveUIDs(uids, s.f.cfg.ErrorFolder, res)
}

// deleteUIDs flags the mails \Deleted and expunges exactly them with UID
// EXPUNGE. Without UIDPLUS it only flags them: a plain EXPUNGE would take
// other clients' \Deleted mail with it.
func (s *session) deleteUIDs(uids imap.UIDSet, res *mailsource.PollResult) error {
	store := s.c.Store(uids, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil)
	if !s.canUIDExpunge() {
		if err := store.Close(); err != nil {
			return serverError("UID STORE +FLAGS.SILENT (\\Deleted)", err)
		}
		s.f.log.Warn("imap server lacks UIDPLUS: mails flagged \\Deleted but not expunged (a plain EXPUNGE would remove other clients' mail too)",
			"uids", uids.String())
		return nil
	}
	// Not pipelined: go-imap beta.8 hands untagged EXPUNGE responses to the
	// expunge command over an unbuffered channel, so waiting for the STORE
	// while the server already answers the UID EXPUNGE deadlocks the reader
	// (seen against Dovecot after a crashed session). One round trip more
	// per batch is cheap.
	if err := store.Close(); err != nil {
		return serverError("UID STORE +FLAGS.SILENT (\\Deleted)", err)
	}
	seqs, expungeErr := s.c.UIDExpunge(uids).Collect()
	if expungeErr != nil {
		return serverError("UID EXPUNGE", expungeErr)
	}
	res.Deleted += len(seqs)
	return nil
}

// moveUIDs moves the mails to folder (created when missing): MOVE where
// offered, else COPY and deleteUIDs.
func (s *session) moveUIDs(uids imap.UIDSet, folder string, res *mailsource.PollResult) error {
	if err := s.ensureFolder(folder); err != nil {
		return err
	}
	if s.c.Caps().Has(imap.CapMove) { // go-imap's Move falls back to a plain EXPUNGE otherwise
		if _, err := s.c.Move(uids, folder).Wait(); err != nil {
			return serverError("UID MOVE to "+folder, err)
		}
		res.Deleted += count(uids)
		return nil
	}
	if _, err := s.c.Copy(uids, folder).Wait(); err != nil {
		return serverError("UID COPY to "+folder, err)
	}
	return s.deleteUIDs(uids, res)
}

// ensureFolder creates folder unless LIST shows it.
func (s *session) ensureFolder(folder string) error {
	if s.existing[folder] {
		return nil
	}
	if err := s.uncreatable[folder]; err != nil {
		return err
	}
	boxes, err := s.c.List("", folder, nil).Collect()
	if err != nil {
		return serverError("LIST "+folder, err)
	}
	for _, b := range boxes {
		if b.Mailbox == folder || strings.EqualFold(folder, "INBOX") && strings.EqualFold(b.Mailbox, "INBOX") {
			if slices.Contains(b.Attrs, imap.MailboxAttrNonExistent) || slices.Contains(b.Attrs, imap.MailboxAttrNoSelect) {
				break
			}
			s.existing[folder] = true
			return nil
		}
	}
	if err := s.c.Create(folder, nil).Wait(); err != nil && responseCode(err) != imap.ResponseCodeAlreadyExists {
		err = serverError("CREATE "+folder, err)
		s.uncreatable[folder] = err // asked once per poll, not once per batch
		return err
	}
	s.f.log.Info("imap folder created", "folder", folder)
	s.existing[folder] = true
	return nil
}

func count(uids imap.UIDSet) int {
	n := 0
	for _, r := range uids {
		n += int(r.Stop-r.Start) + 1
	}
	return n
}

// literalGuard hands a FETCH literal to the sink. It remembers the first
// error (io.EOF included) and returns it for every later read without
// touching the literal again: after an error go-imap's reader goroutine is
// released and shares the literal's buffer. A connection that ends early
// makes go-imap report a plain io.EOF; the guard turns that into
// io.ErrUnexpectedEOF so no sink takes a truncated mail for a whole one.
type literalGuard struct {
	r    imap.LiteralReader
	read int64
	err  error
}

func (g *literalGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	g.read += int64(n)
	if errors.Is(err, io.EOF) && g.read < g.r.Size() {
		err = fmt.Errorf("imapsource: mail ended after %d of %d bytes: %w", g.read, g.r.Size(), io.ErrUnexpectedEOF)
	}
	if err != nil {
		g.err = err
	}
	return n, err
}

// abandon gives up a FETCH after an error. The connection is closed first,
// so draining costs nothing. When a literal broke mid-read, go-imap would
// read it once more while draining, racing its own reader goroutine; so
// the drain waits until that goroutine has ended (it does at once on the
// closed connection). If it does not end in time the client is left to
// the garbage collector rather than risk Close hanging.
func (s *session) abandon(fc *imapclient.FetchCommand) {
	s.wd.abort()
	if s.literalBroken {
		select {
		case <-s.c.Closed():
		case <-time.After(s.f.cfg.Timeout):
			s.leaked = true
			s.f.log.Error("imap client did not stop after its connection was closed; abandoning it")
			return
		}
	}
	_ = fc.Close()
}

// unreceived returns the UIDs of asked that are in neither got set.
func unreceived(asked, got1, got2 imap.UIDSet) imap.UIDSet {
	var out imap.UIDSet
	nums, _ := asked.Nums()
	for _, uid := range nums {
		if !got1.Contains(uid) && !got2.Contains(uid) {
			out.AddNum(uid)
		}
	}
	return out
}
