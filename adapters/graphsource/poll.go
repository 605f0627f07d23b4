package graphsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// knownChunk bounds how many keys one Sink.Known call carries.
const knownChunk = 1000

// Downloads: a mail listed at most prefetchSize is fetched ahead into
// memory by the workers, up to prefetchWindow mails ahead of the sink (so
// at most prefetchWindow * prefetchCap bytes are held); a larger one, or
// one of unknown size, streams from Graph into the sink when its turn
// comes.
const (
	prefetchSize   = 256 << 10
	prefetchCap    = 2 * prefetchSize
	prefetchWindow = 4 * MaxConcurrency
)

// sizeProperty asks Graph for PidTagMessageSize (0x0E08, PtypInteger32),
// the message's size in bytes; message has no size field of its own.
const sizeProperty = "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')"

// sizePropertyID matches the property as Graph spells it back ("Integer
// 0xe08"), or its 64-bit twin.
var sizePropertyID = regexp.MustCompile(`(?i)^\s*(integer|long)\s+0x0*e08\s*$`)

// SourceKey is the idempotency key of a mail: its immutable id, which
// stays while the mail stays in the mailbox, moves included.
func SourceKey(immutableID string) string { return "graph/" + immutableID }

// listed is one mail as the folder listing shows it.
type listed struct {
	id   string
	size int64 // PidTagMessageSize; -1 when Graph did not say
	key  string
}

type listPage struct {
	Value []struct {
		ID    string `json:"id"`
		Props []struct {
			ID    string `json:"id"`
			Value string `json:"value"`
		} `json:"singleValueExtendedProperties"`
	} `json:"value"`
	NextLink string `json:"@odata.nextLink"`
}

func (s *session) pollFolder(ctx context.Context, sink mailsource.Sink, folder string, res *mailsource.PollResult) error {
	fid, err := s.folderID(ctx, folder, false)
	if err != nil {
		if errors.Is(err, ErrNoFolder) || isRefusal(err) {
			return &folderError{err}
		}
		return err
	}
	mails, err := s.list(ctx, folder, fid)
	if err != nil {
		return err
	}
	if len(mails) == 0 {
		return nil
	}
	known, err := s.known(ctx, sink, mails)
	if err != nil {
		return err
	}

	// Finish what an earlier poll committed but did not delete or move,
	// then import the new mails batch by batch.
	var done, failed []string
	var fresh []listed
	for _, m := range mails {
		switch known[m.key] {
		case mailsource.StatusReceived:
			if s.f.cfg.AfterImport != mailsource.AfterImportKeep {
				done = append(done, m.id)
			}
		case mailsource.StatusFailed:
			failed = append(failed, m.id)
		default:
			fresh = append(fresh, m)
		}
	}
	for chunk := range slices.Chunk(done, s.f.cfg.BatchSize) {
		n, err := s.afterImport(ctx, chunk, res)
		if err != nil {
			return err
		}
		res.Skipped += n
	}
	for chunk := range slices.Chunk(failed, s.f.cfg.BatchSize) {
		n, err := s.toErrorFolder(ctx, chunk, res)
		if err != nil {
			return err
		}
		res.Skipped += n
	}
	// Each batch's commit runs while the next batch downloads (when the sink
	// can do that); a batch is deleted or moved only after its commit.
	var prev *pendingBatch
	for batch := range slices.Chunk(fresh, s.f.cfg.BatchSize) {
		cur, err := s.receiveBatch(ctx, sink, batch)
		if prev != nil {
			if ferr := s.finishBatch(ctx, sink, prev, res); ferr != nil && err == nil {
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
		return s.finishBatch(ctx, sink, prev, res)
	}
	return nil
}

// list returns every mail of the folder with its size, following
// @odata.nextLink, oldest first. All pages are read before anything is
// deleted: Graph pages messages by offset, and deleting while paging would
// skip mails.
func (s *session) list(ctx context.Context, folder, fid string) ([]listed, error) {
	u := s.c.path(query("$select", "id,receivedDateTime", "$orderby", "receivedDateTime asc",
		"$top", strconv.Itoa(s.f.cfg.PageSize), "$expand", sizeProperty), "mailFolders", fid, "messages")
	var mails []listed
	seenIDs := map[string]bool{}
	seenLinks := map[string]bool{}
	for u != "" {
		var page listPage
		if err := s.c.getJSON(ctx, "list "+folder, u, &page); err != nil {
			return nil, err
		}
		for _, v := range page.Value {
			if v.ID == "" || seenIDs[v.ID] {
				continue // a mail that arrived while paging shifts the pages: the same mail twice
			}
			seenIDs[v.ID] = true
			size := int64(-1)
			for _, p := range v.Props {
				if sizePropertyID.MatchString(p.ID) {
					if n, err := strconv.ParseInt(p.Value, 10, 64); err == nil && n >= 0 {
						size = n
					}
				}
			}
			mails = append(mails, listed{id: v.ID, size: size, key: SourceKey(v.ID)})
		}
		next := page.NextLink
		switch {
		case next == "":
		case !s.c.sameOrigin(next):
			return nil, &mailsource.ServerError{Op: "list " + folder,
				Err: fmt.Errorf("%w: @odata.nextLink leads to another host (%.100s); the token is not sent there", ErrNotGraph, next)}
		case seenLinks[next]:
			return nil, &mailsource.ServerError{Op: "list " + folder, Err: fmt.Errorf("%w: @odata.nextLink repeats itself", ErrNotGraph)}
		}
		seenLinks[next] = true
		u = next
	}
	return mails, nil
}

func (s *session) known(ctx context.Context, sink mailsource.Sink, mails []listed) (map[string]mailsource.Status, error) {
	known := make(map[string]mailsource.Status)
	for chunk := range slices.Chunk(mails, knownChunk) {
		keys := make([]string, len(chunk))
		for i, m := range chunk {
			keys[i] = m.key
		}
		got, err := sink.Known(ctx, keys)
		if err != nil {
			return nil, fmt.Errorf("graphsource: ask sink for known keys: %w", err)
		}
		for k, st := range got {
			known[k] = st
		}
	}
	return known, nil
}

// pendingBatch is a received batch whose commit may still be running.
type pendingBatch struct {
	wait                          func() error
	received, failed              []string // ids; oversize ones are in failed
	nReceived, nFailed, nOversize int
}

// prefetched is a small mail downloaded ahead by a worker.
type prefetched struct {
	done   chan struct{}
	data   []byte
	gone   bool // deleted on the server since the listing
	tooBig bool // larger than listed: streamed in turn instead
	err    error
}

// receiveBatch downloads a batch into the sink in listing order and starts
// its commit. Oversize mails are staged without a download; a mail gone
// since the listing is skipped.
func (s *session) receiveBatch(ctx context.Context, sink mailsource.Sink, batch []listed) (*pendingBatch, error) {
	maxSize := s.f.cfg.MaxMailSize
	oversize := func(m listed) bool { return maxSize > 0 && m.size > maxSize }
	ahead := make([]*prefetched, len(batch))
	var jobs []int
	for i, m := range batch {
		if !oversize(m) && m.size >= 0 && m.size <= prefetchSize {
			ahead[i] = &prefetched{done: make(chan struct{})}
			jobs = append(jobs, i)
		}
	}
	wctx, stop := context.WithCancel(ctx)
	window := make(chan struct{}, prefetchWindow)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	queue := make(chan int)
	wg.Add(1)
	go func() { // hands out work in listing order, at most prefetchWindow ahead of the sink
		defer wg.Done()
		defer close(queue)
		for _, i := range jobs {
			select {
			case window <- struct{}{}:
			case <-wctx.Done():
				return
			}
			select {
			case queue <- i:
			case <-wctx.Done():
				return
			}
		}
	}()
	for range s.f.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range queue {
				s.prefetch(wctx, batch[i], ahead[i])
			}
		}()
	}

	p := &pendingBatch{}
	for i, m := range batch {
		if oversize(m) {
			if err := sink.Oversize(ctx, m.key, m.size); err != nil {
				return nil, fmt.Errorf("graphsource: stage oversize %s: %w", m.key, err)
			}
			p.failed = append(p.failed, m.id)
			p.nOversize++
			continue
		}
		if pf := ahead[i]; pf != nil {
			select {
			case <-pf.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("graphsource: receive %s: %w", m.key, ctx.Err())
			}
			<-window
		}
		out, kind, err := s.take(ctx, sink, m, ahead[i])
		if err != nil {
			return nil, err
		}
		switch {
		case kind == tookOversize:
			p.failed = append(p.failed, m.id)
			p.nOversize++
		case kind == tookNothing:
		case out.Status == mailsource.StatusFailed:
			p.failed = append(p.failed, m.id)
			p.nFailed++
		default:
			p.received = append(p.received, m.id)
			p.nReceived++
		}
	}
	if ac, ok := sink.(mailsource.AsyncCommitter); ok {
		p.wait = ac.StartCommit(ctx)
		return p, nil
	}
	commitErr := sink.Commit(ctx)
	p.wait = func() error { return commitErr }
	return p, nil
}

// download asks for a mail's raw MIME; gone reports a mail deleted since
// the listing (404 ErrorItemNotFound).
func (s *session) download(ctx context.Context, m listed) (_ *http.Response, gone bool, _ error) {
	resp, err := s.c.do(ctx, request{op: "download mail", method: http.MethodGet, url: s.c.path("", "messages", m.id, "$value")})
	if isNotFound(err) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("graphsource: download %s: %w", m.key, err)
	}
	return resp, false, nil
}

// prefetch downloads a small mail into memory.
func (s *session) prefetch(ctx context.Context, m listed, pf *prefetched) {
	defer close(pf.done)
	resp, gone, err := s.download(ctx, m)
	if err != nil || gone {
		pf.err, pf.gone = err, gone
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, prefetchCap+1))
	switch {
	case err != nil:
		pf.err = fmt.Errorf("graphsource: download %s: %w", m.key, err)
	case len(data) > prefetchCap:
		pf.tooBig = true
	default:
		pf.data = data
	}
}

// took says what became of a mail handed to the sink.
type took int

const (
	tookStaged   took = iota // Receive staged it (received or failed)
	tookNothing              // gone since the listing, or refused by Graph
	tookOversize             // staged with Oversize
)

// take hands one mail to the sink: the bytes a worker fetched ahead (pf),
// or else a download streamed straight into the sink. A mail of unknown
// size is checked against MaxMailSize by the answer's Content-Length, when
// Graph sends one, before it is read.
func (s *session) take(ctx context.Context, sink mailsource.Sink, m listed, pf *prefetched) (mailsource.Outcome, took, error) {
	if pf != nil && !pf.tooBig {
		if pf.err != nil || pf.gone {
			return mailsource.Outcome{}, tookNothing, s.skip(m, pf.gone, pf.err)
		}
		out, err := sink.Receive(ctx, m.key, m.size, bytes.NewReader(pf.data))
		pf.data = nil
		if err != nil {
			return out, tookStaged, fmt.Errorf("graphsource: receive %s: %w", m.key, err)
		}
		return out, tookStaged, nil
	}
	resp, gone, err := s.download(ctx, m)
	if err != nil || gone {
		return mailsource.Outcome{}, tookNothing, s.skip(m, gone, err)
	}
	defer resp.Body.Close()
	size := m.size
	if size < 0 {
		size = resp.ContentLength // -1 when chunked
	}
	if maxSize := s.f.cfg.MaxMailSize; maxSize > 0 && size > maxSize {
		if err := sink.Oversize(ctx, m.key, size); err != nil {
			return mailsource.Outcome{}, tookOversize, fmt.Errorf("graphsource: stage oversize %s: %w", m.key, err)
		}
		return mailsource.Outcome{Status: mailsource.StatusFailed}, tookOversize, nil
	}
	out, err := sink.Receive(ctx, m.key, size, resp.Body)
	if err != nil {
		return out, tookStaged, fmt.Errorf("graphsource: receive %s: %w", m.key, err)
	}
	return out, tookStaged, nil
}

// skip decides about a mail that could not be downloaded: one deleted
// since the listing is skipped; one Graph refuses to send (a 4xx other
// than a refused token or throttling, such as corrupt item data) is left
// on the server and reported with Graph's words, so that one mail Graph
// cannot read never holds up the rest; any other error stops the poll.
func (s *session) skip(m listed, gone bool, err error) error {
	var ge *Error
	switch {
	case gone:
		s.f.log.Info("graph mail deleted on the server since the listing; skipped", "id", m.id)
		return nil
	case errors.As(err, &ge) && ge.Status >= 400 && ge.Status < 500 &&
		ge.Status != http.StatusUnauthorized && ge.Status != http.StatusTooManyRequests:
		s.f.log.Warn("graph refused to send a mail; it stays on the server and is tried again next poll",
			"id", m.id, "reply", mailsource.ServerReply(err))
		s.refused = append(s.refused, err)
		return nil
	}
	return err
}

// finishBatch waits for a batch's commit and only then deletes or moves its
// mails on the server.
func (s *session) finishBatch(ctx context.Context, sink mailsource.Sink, p *pendingBatch, res *mailsource.PollResult) error {
	if err := p.wait(); err != nil {
		return fmt.Errorf("graphsource: commit batch of %d mails: %w", p.nReceived+p.nFailed+p.nOversize, err)
	}
	res.Fetched += p.nReceived
	res.Failed += p.nFailed
	res.Oversize += p.nOversize
	if f, ok := sink.(mailsource.Fenced); ok {
		// Another instance may poll the mailbox now: delete or move nothing.
		if err := f.StillHeld(ctx); err != nil {
			return fmt.Errorf("graphsource: before deleting or moving mail: %w", err)
		}
	}
	if _, err := s.afterImport(ctx, p.received, res); err != nil {
		return err
	}
	_, err := s.toErrorFolder(ctx, p.failed, res)
	return err
}

// afterImport applies Config.AfterImport to committed mails and returns
// how many it finished.
func (s *session) afterImport(ctx context.Context, ids []string, res *mailsource.PollResult) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	switch s.f.cfg.AfterImport {
	case mailsource.AfterImportDelete:
		if s.f.cfg.PermanentDelete {
			return s.each(ctx, "delete imported mails for good", ids, res, func(id string) request {
				return request{op: "delete imported mail for good", method: http.MethodPost, url: s.c.path("", "messages", id, "permanentDelete")}
			}, nil)
		}
		return s.each(ctx, "delete imported mails", ids, res, func(id string) request {
			return request{op: "delete imported mail", method: http.MethodDelete, url: s.c.path("", "messages", id)}
		}, nil)
	case mailsource.AfterImportMove:
		return s.moveAll(ctx, ids, s.f.cfg.MoveFolder, "move imported mail to ", res)
	default:
		return len(ids), nil // keep: the sink remembers the keys
	}
}

// toErrorFolder moves committed failures to Config.ErrorFolder.
func (s *session) toErrorFolder(ctx context.Context, ids []string, res *mailsource.PollResult) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	return s.moveAll(ctx, ids, s.f.cfg.ErrorFolder, "move failed mail to ", res)
}

// moveAll moves mails to the folder at path, created when missing.
func (s *session) moveAll(ctx context.Context, ids []string, path, op string, res *mailsource.PollResult) (int, error) {
	dest, err := s.folderID(ctx, path, true)
	if err != nil {
		if isRefusal(err) || errors.Is(err, ErrNoFolder) {
			s.refuse(err)
			return 0, nil
		}
		return 0, err
	}
	body, err := json.Marshal(map[string]string{"destinationId": dest})
	if err != nil {
		return 0, fmt.Errorf("graphsource: %s%s: %w", op, path, err)
	}
	build := func(id string) request {
		return request{op: op + path, method: http.MethodPost, url: s.c.path("", "messages", id, "move"), body: body}
	}
	check := func(id string, answer json.RawMessage) {
		var moved struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(answer, &moved) == nil && moved.ID != "" && moved.ID != id {
			s.f.log.Error("graph gave a moved mail a new id: the immutable id was not honoured", "old", id, "new", moved.ID)
		}
	}
	return s.each(ctx, op+path, ids, res, build, check)
}

// each sends build(id) for every id, in JSON batches of batchMax,
// Concurrency batches at a time, and returns how many finished; check,
// when set, sees each success's answer. A mail gone from the server counts
// as finished (someone else removed it). A step Graph refuses (a 4xx: no
// right, quota) stops the rest, which stay committed where they are; the
// refusal is kept for the poll's error, and the next poll tries again.
// Any other error ends the poll.
func (s *session) each(parent context.Context, op string, ids []string, res *mailsource.PollResult,
	build func(id string) request, check func(id string, answer json.RawMessage)) (int, error) {
	ctx, stop := context.WithCancel(parent)
	defer stop()
	var (
		mu       sync.Mutex
		finished int
		moved    int
		firstErr error
		refusal  error
	)
	note := func(id string, o batchOutcome) {
		switch err := o.err; {
		case err == nil:
			finished++
			moved++
			if check != nil {
				check(id, o.body)
			}
		case isNotFound(err):
			finished++
		case isRefusal(err):
			if refusal == nil {
				refusal = err
			}
			stop()
		default:
			if firstErr == nil && ctx.Err() == nil {
				firstErr = err
			}
			stop()
		}
	}
	queue := make(chan []string)
	var wg sync.WaitGroup
	for range s.f.cfg.Concurrency {
		wg.Go(func() {
			for chunk := range queue {
				rqs := make([]request, len(chunk))
				for i, id := range chunk {
					rqs[i] = build(id)
				}
				outs, err := s.c.batch(ctx, op, rqs)
				mu.Lock()
				if err != nil {
					note("", batchOutcome{err: err})
				}
				for i, o := range outs {
					note(chunk[i], o)
				}
				mu.Unlock()
			}
		})
	}
feed:
	for chunk := range slices.Chunk(ids, batchMax) {
		select {
		case queue <- chunk:
		case <-ctx.Done():
			break feed
		}
	}
	close(queue)
	wg.Wait()
	res.Deleted += moved
	if refusal != nil {
		s.refuse(refusal)
	}
	if firstErr != nil {
		return finished, firstErr
	}
	if err := parent.Err(); err != nil {
		return finished, fmt.Errorf("graphsource: after import: %w", err)
	}
	return finished, nil
}

// refuse keeps a refused after-import step for the poll's error.
func (s *session) refuse(err error) {
	s.f.log.Warn("graph refused to delete or move imported mails; they stay and are retried on the next poll",
		"reply", mailsource.ServerReply(err), "err", err)
	s.refused = append(s.refused, err)
}
