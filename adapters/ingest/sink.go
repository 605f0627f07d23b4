// Package ingest commits what the mailbox fetchers fetch: it stores each
// mail's raw bytes as a content-addressed blob, parses them, and appends a
// MailReceived or MailFailed event per mail, together with the mail's row in
// the mail_sources idempotency index, in one transaction per batch. It also
// schedules the polls of every inbound account.
package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// MailStream is the stream holding a fetched mail's intake event. One stream
// per mail, created with eventstore.NoStream: a second MailReceived for the
// same account and source key is a version conflict, never a second event.
func MailStream(mailID string) string { return "mail-" + mailID }

// Blobs is the part of the blob store the sink needs. Mails are written
// without a per-mail fsync; Sync makes a whole batch durable before its
// events commit, so an event never names a blob that a power loss could take.
// WritePack returns the locations of the blobs it put in a pack, recorded in
// blob_packs; a store that keeps every blob loose (pgstore) returns none, and
// Open finds them. cmd picks the store (LEDGERDESK_BLOB_STORE).
type Blobs interface {
	PutNoSync(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error)
	Sync() error
	Open(ref blobstore.Ref) (io.ReadCloser, error)
	WritePack(ctx context.Context, blobs [][]byte) ([]blobstore.Packed, error)
	OpenPacked(p blobstore.Packed) (io.ReadCloser, error)
}

// smallMail is the size up to which a mail is held in memory until its
// batch commits and then written with the batch's other small mails into
// one pack file. Larger mails are streamed to a loose file and never held.
const smallMail = 64 << 10

// DefaultMaxStagedBytes bounds what a sink holds for the batch it is
// staging: the encoded events and the small mails' raw bytes. A fetcher
// counts mails (500 a batch); 500 mails with big bodies would otherwise be
// held at once, and as much again while the previous batch commits.
const DefaultMaxStagedBytes = 32 << 20

// Sink is the mailsource.Sink of one poll of one account.
//
// Memory: the sink commits the mails staged so far on its own once they
// hold MaxStagedBytes, before it takes the next mail, and it starts such a
// commit only after the commit before it is done. So it holds at most about
// two such batches (one staging, one committing) plus one mail, whatever
// the fetcher's batch size. A mail committed early is safe: the fetcher
// deletes it only after its own Commit (which also waits for the early
// ones), and a poll that stops before finds it by Known next time.
type Sink struct {
	store     eventstore.Store
	blobs     Blobs
	limits    mimeparse.Limits
	accountID string
	now       func() time.Time
	logger    *slog.Logger
	observer  Observer
	// parseMail is mimeparse.Parse; tests put a panicking parser here.
	parseMail func(io.Reader, mimeparse.Limits) (mimeparse.Summary, error)
	maxStaged int64
	// imagesAsAttachments is set on every MailReceived (SinkConfig).
	imagesAsAttachments bool
	lease               Lease

	mu          sync.Mutex // guards staged: a background commit may run while the next batch is received
	staged      []staged
	stagedBytes int64

	// Used by the poll's goroutine only.
	last    *commitJob   // the latest commit started, early or by the fetcher
	flushes []*commitJob // the early commits of the batch being staged
}

type staged struct {
	key    string
	mailID string
	status mailsource.Status
	event  eventstore.NewEvent // encoded when staged: its bytes count towards MaxStagedBytes
	raw    []byte              // a small mail's bytes, packed at Commit; nil for loose blobs
	loose  bool                // the mail is a loose blob file, to be synced at Commit
}

var _ mailsource.Sink = (*Sink)(nil)

// SinkConfig holds what a sink needs; Now is the clock (cmd passes time.Now).
type SinkConfig struct {
	Store     eventstore.Store
	Blobs     Blobs
	Limits    mimeparse.Limits
	AccountID string
	Now       func() time.Time
	Logger    *slog.Logger
	// MaxStagedBytes bounds the bytes staged before the sink commits them
	// itself; 0 means DefaultMaxStagedBytes.
	MaxStagedBytes int64
	// Lease, when several instances share the database, is the account's
	// lease this poll runs under: every commit checks it in its
	// transaction, and the fetcher asks it before deleting (StillHeld).
	// Nil: one instance, no fence.
	Lease Lease
	// ImagesAsAttachments is the account's option, recorded on every
	// MailReceived (domain.MailReceived.ImagesAsAttachments).
	ImagesAsAttachments bool
	// Observer is told about every commit; nil observes nothing.
	Observer Observer
}

// NewSink returns a sink for one poll of cfg.AccountID.
func NewSink(cfg SinkConfig) (*Sink, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("no event store"))
	}
	if cfg.Blobs == nil {
		errs = append(errs, errors.New("no blob store"))
	}
	if cfg.AccountID == "" {
		errs = append(errs, errors.New("no account id"))
	}
	if cfg.Now == nil {
		errs = append(errs, errors.New("no clock"))
	}
	if cfg.MaxStagedBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxStagedBytes %d must not be negative", cfg.MaxStagedBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ingest: new sink: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxStagedBytes == 0 {
		cfg.MaxStagedBytes = DefaultMaxStagedBytes
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Sink{observer: cfg.Observer, store: cfg.Store, blobs: cfg.Blobs, limits: cfg.Limits, accountID: cfg.AccountID,
		now: cfg.Now, logger: cfg.Logger, parseMail: mimeparse.Parse, maxStaged: cfg.MaxStagedBytes,
		imagesAsAttachments: cfg.ImagesAsAttachments, lease: cfg.Lease}, nil
}

// knownChunk bounds the IN list of one lookup and the rows of one INSERT.
// A fixed size keeps the statement texts few and the same from batch to
// batch, so the embedded store can reuse their prepared statements.
const knownChunk = 100

// Known implements mailsource.Sink.
func (s *Sink) Known(ctx context.Context, keys []string) (map[string]mailsource.Status, error) {
	out := make(map[string]mailsource.Status, len(keys))
	for start := 0; start < len(keys); start += knownChunk {
		chunk := keys[start:min(start+knownChunk, len(keys))]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, s.accountID)
		ph := make([]string, len(chunk))
		for i, k := range chunk {
			args = append(args, k)
			ph[i] = fmt.Sprintf("$%d", i+2)
		}
		q := `SELECT source_key, status FROM mail_sources WHERE account_id = $1 AND source_key IN (` +
			strings.Join(ph, ",") + `)`
		err := s.store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			rows, err := tx.Query(ctx, q, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var key string
				var st int
				if err := rows.Scan(&key, &st); err != nil {
					return err
				}
				out[key] = mailsource.Status(st)
			}
			return rows.Err()
		})
		if err != nil {
			return nil, fmt.Errorf("ingest: look up %d source keys of account %s: %w", len(chunk), s.accountID, err)
		}
	}
	return out, nil
}

var _ mailsource.ContentDigests = (*Sink)(nil)

// Digests implements mailsource.ContentDigests: the blob ref that each
// key's MailReceived or MailFailed names, read from the mails' streams.
func (s *Sink) Digests(ctx context.Context, keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	for start := 0; start < len(keys); start += knownChunk {
		chunk := keys[start:min(start+knownChunk, len(keys))]
		streams := make([]string, len(chunk))
		for i, k := range chunk {
			streams[i] = MailStream(domain.MailIDFor(s.accountID, k))
		}
		evs, err := s.store.ReadStreams(ctx, streams)
		if err != nil {
			return nil, fmt.Errorf("ingest: read the intake events of %d source keys of account %s: %w", len(chunk), s.accountID, err)
		}
		for _, re := range evs {
			if re.Type != domain.MailReceivedName && re.Type != domain.MailFailedName {
				continue
			}
			var e struct {
				SourceKey string `json:"source_key"`
				BlobRef   string `json:"blob_ref"`
			}
			if err := json.Unmarshal(re.Payload, &e); err != nil {
				return nil, fmt.Errorf("ingest: decode %s of %s: %w", re.Type, re.Stream, err)
			}
			if ref, err := blobstore.ParseRef(e.BlobRef); err == nil && e.SourceKey != "" {
				out[e.SourceKey] = ref.Hex()
			}
		}
	}
	return out, nil
}

// Receive implements mailsource.Sink. A small mail is read into memory,
// parsed from there and packed with its batch at Commit; a larger one is
// streamed to a loose blob file first and parsed from it, so a 50 MB mail
// is never held in memory.
func (s *Sink) Receive(ctx context.Context, key string, size int64, r io.Reader) (mailsource.Outcome, error) {
	if err := s.flushIfFull(ctx); err != nil {
		return mailsource.Outcome{}, err
	}
	// Sized from the announced size (the literal's length), so that the
	// buffer does not regrow and copy the mail as it is read.
	hb := bytes.NewBuffer(make([]byte, 0, min(max(size, 0), smallMail+1)+bytes.MinRead))
	_, err := hb.ReadFrom(io.LimitReader(r, smallMail+1))
	head := hb.Bytes()
	if err != nil {
		return mailsource.Outcome{}, fmt.Errorf("ingest: read mail %s: %w", key, err)
	}
	var (
		ref  blobstore.Ref
		n    int64
		raw  []byte
		sum  mimeparse.Summary
		perr error
	)
	if len(head) <= smallMail {
		raw, n = head, int64(len(head))
		ref = blobstore.RefFromDigest(sha256.Sum256(raw))
		sum, perr = s.parseRecovered(key, func() (mimeparse.Summary, error) {
			return s.parseMail(bytes.NewReader(raw), s.limits)
		})
	} else {
		ref, n, err = s.blobs.PutNoSync(ctx, io.MultiReader(bytes.NewReader(head), r))
		if err != nil {
			return mailsource.Outcome{}, fmt.Errorf("ingest: store mail %s: %w", key, err)
		}
		sum, perr = s.parseRecovered(key, func() (mimeparse.Summary, error) { return s.parse(ref) })
	}
	mailID := domain.MailIDFor(s.accountID, key)
	receivedAt := s.now().UTC()
	if perr != nil {
		reason := perr.Error()
		var pe *mimeparse.ParseError
		if errors.As(perr, &pe) {
			reason = pe.Reason
		} else if !errors.Is(perr, errParse) {
			// Not the mail's fault (the blob could not be read back): stop the
			// poll rather than record a good mail as failed.
			return mailsource.Outcome{}, fmt.Errorf("ingest: parse mail %s: %w", key, perr)
		}
		if err := s.stage(staged{key: key, mailID: mailID, status: mailsource.StatusFailed, raw: raw, loose: raw == nil},
			domain.MailFailed{
				MailID: mailID, AccountID: s.accountID, SourceKey: key, BlobRef: string(ref), Size: n,
				ReceivedAt: receivedAt, Reason: reason,
			}); err != nil {
			return mailsource.Outcome{}, err
		}
		s.logger.Warn("mail failed to parse", "account", s.accountID, "source_key", key, "reason", reason)
		return mailsource.Outcome{Status: mailsource.StatusFailed, Reason: reason}, nil
	}
	ev := mailReceivedFrom(sum)
	ev.MailID, ev.AccountID, ev.SourceKey = mailID, s.accountID, key
	ev.BlobRef, ev.Size, ev.ReceivedAt = string(ref), n, receivedAt
	ev.ImagesAsAttachments = s.imagesAsAttachments
	if err := s.stage(staged{key: key, mailID: mailID, status: mailsource.StatusReceived, raw: raw, loose: raw == nil}, ev); err != nil {
		return mailsource.Outcome{}, err
	}
	return mailsource.Outcome{Status: mailsource.StatusReceived}, nil
}

// parseRecovered runs parse and turns a panic into a *mimeparse.ParseError
// whose reason starts "parser panic: ", logging the stack: a parser bug
// met by one hostile mail records that mail as failed instead of stopping
// the poll (and, in a goroutine without recover, the process), and the
// mails after it still import.
func (s *Sink) parseRecovered(key string, parse func() (mimeparse.Summary, error)) (sum mimeparse.Summary, err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		reason := boundReason(fmt.Sprintf("parser panic: %v", v))
		s.logger.Error("mail parser panicked; mail recorded as failed", "account", s.accountID, "source_key", key,
			"panic", reason, "stack", string(debug.Stack()))
		sum, err = mimeparse.Summary{}, &mimeparse.ParseError{Reason: reason}
	}()
	return parse()
}

// maxReason bounds a failure reason built from a panic value, which may
// quote anything, such as the mail itself.
const maxReason = 998

// boundReason makes s storable as a MailFailed reason: valid UTF-8, no
// NUL, at most maxReason bytes.
func boundReason(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) <= maxReason {
		return s
	}
	n := maxReason
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// errParse marks parse failures that are the mail's own fault.
var errParse = errors.New("unparseable mail")

func (s *Sink) parse(ref blobstore.Ref) (mimeparse.Summary, error) {
	f, err := s.blobs.Open(ref)
	if err != nil {
		return mimeparse.Summary{}, fmt.Errorf("open blob %s: %w", ref, err)
	}
	defer f.Close()
	sum, err := s.parseMail(f, s.limits)
	if err != nil {
		var pe *mimeparse.ParseError
		if errors.As(err, &pe) {
			return sum, err
		}
		return sum, fmt.Errorf("%w: %w", errParse, err)
	}
	return sum, nil
}

// Oversize implements mailsource.Sink.
func (s *Sink) Oversize(ctx context.Context, key string, size int64) error {
	if err := s.flushIfFull(ctx); err != nil {
		return err
	}
	mailID := domain.MailIDFor(s.accountID, key)
	return s.stage(staged{key: key, mailID: mailID, status: mailsource.StatusFailed}, domain.MailFailed{
		MailID: mailID, AccountID: s.accountID, SourceKey: key, Size: size, ReceivedAt: s.now().UTC(),
		Reason: fmt.Sprintf("mail of %d bytes exceeds the account's max_mail_size; not downloaded", size), Oversize: true,
	})
}

// stage encodes ev into st and adds it to the batch.
func (s *Sink) stage(st staged, ev domain.Event) error {
	ne, err := newEvent(ev, s.accountID)
	if err != nil {
		return fmt.Errorf("ingest: stage mail %s: %w", st.key, err)
	}
	st.event = ne
	s.mu.Lock()
	s.staged = append(s.staged, st)
	s.stagedBytes += int64(len(ne.Payload) + len(st.raw))
	s.mu.Unlock()
	return nil
}

// take removes and returns everything staged.
func (s *Sink) take() []staged {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := s.staged
	s.staged, s.stagedBytes = nil, 0
	return batch
}

// flushIfFull commits what is staged in the background once it holds
// maxStaged bytes, after the commit before it is done (so that no more
// than one batch waits for the database beside the one being staged). It
// runs before a mail is taken, never after: a fetcher may still find the
// mail just staged broken (a download cut short) and drop the open batch.
// An error of the commit waited for stops the poll.
func (s *Sink) flushIfFull(ctx context.Context) error {
	s.mu.Lock()
	full := s.stagedBytes >= s.maxStaged
	s.mu.Unlock()
	if !full {
		return nil
	}
	if s.last != nil {
		if err := s.last.wait(); err != nil {
			return err
		}
	}
	batch := s.take()
	s.logger.Debug("staged mails reached the byte bound; committing them early", "account", s.accountID,
		"mails", len(batch), "bound", s.maxStaged)
	j := s.start(ctx, batch)
	s.last, s.flushes = j, append(s.flushes, j)
	return nil
}

// commitJob is a commit running in the background.
type commitJob struct {
	done chan struct{}
	err  error
}

func (j *commitJob) wait() error {
	<-j.done
	return j.err
}

func (s *Sink) start(ctx context.Context, batch []staged) *commitJob {
	j := &commitJob{done: make(chan struct{})}
	go func() {
		defer close(j.done)
		j.err = s.commit(ctx, batch)
	}()
	return j
}

// takeFlushes removes and returns the early commits of the open batch.
func (s *Sink) takeFlushes() []*commitJob {
	f := s.flushes
	s.flushes = nil
	return f
}

// waitAll waits for every job and joins their errors.
func waitAll(jobs []*commitJob) error {
	var errs []error
	for _, j := range jobs {
		errs = append(errs, j.wait())
	}
	return errors.Join(errs...)
}

var _ mailsource.AsyncCommitter = (*Sink)(nil)

var _ mailsource.Fenced = (*Sink)(nil)

// StillHeld implements mailsource.Fenced: nil without a lease.
func (s *Sink) StillHeld(ctx context.Context) error {
	if s.lease == nil {
		return nil
	}
	return s.lease.StillHeld(ctx)
}

// StartCommit implements mailsource.AsyncCommitter: the batch staged so far
// commits in the background while the fetcher downloads the next one.
// Its wait also waits for the batch's early commits (see Sink).
func (s *Sink) StartCommit(ctx context.Context) func() error {
	jobs := append(s.takeFlushes(), s.start(ctx, s.take()))
	s.last = jobs[len(jobs)-1]
	return func() error { return waitAll(jobs) }
}

// Commit implements mailsource.Sink: every staged event and its index row in
// one transaction, after the batch's early commits (see Sink). On error the
// mails not committed yet are dropped: the fetcher must not delete any of
// the batch, and the next poll fetches again those that did not commit.
func (s *Sink) Commit(ctx context.Context) error {
	flushes := s.takeFlushes()
	err := s.commit(ctx, s.take())
	return errors.Join(waitAll(flushes), err)
}

func (s *Sink) commit(ctx context.Context, batch []staged) error {
	if len(batch) == 0 {
		return nil
	}
	started := s.now()
	err := s.commitBatch(ctx, batch)
	s.observer.Committed(s.accountID, len(batch), s.now().Sub(started), err)
	return err
}

// commitBatch is commit's work: the blobs, the index rows and the events.
func (s *Sink) commitBatch(ctx context.Context, batch []staged) error {
	// The blobs are written and fsynced while the database does its part of
	// the batch; the transaction commits only after they are durable.
	type blobResult struct {
		packed []blobstore.Packed
		err    error
	}
	blobsDone := make(chan blobResult, 1)
	go func() {
		packed, err := s.storeBlobs(ctx, batch)
		blobsDone <- blobResult{packed, err}
	}()
	waited := false
	var blobs blobResult
	waitBlobs := func() blobResult { // safe to call again if Update retries fn
		if !waited {
			waited, blobs = true, <-blobsDone
		}
		return blobs
	}
	defer func() {
		if !waited {
			<-blobsDone
		}
	}()
	reqs := make([]eventstore.AppendRequest, 0, len(batch))
	for _, st := range batch {
		reqs = append(reqs, eventstore.AppendRequest{Stream: MailStream(st.mailID), ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{st.event}})
	}
	err := s.store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		if s.lease != nil {
			// First, so that the lease cannot change hands before the commit.
			if err := s.lease.Fence(ctx, tx); err != nil {
				return err
			}
		}
		for start := 0; start < len(batch); start += knownChunk {
			part := batch[start:min(start+knownChunk, len(batch))]
			vals := make([]string, len(part))
			args := make([]any, 0, 4*len(part))
			for i, st := range part {
				vals[i] = fmt.Sprintf("($%d, $%d, $%d, $%d)", 4*i+1, 4*i+2, 4*i+3, 4*i+4)
				args = append(args, s.accountID, st.key, int(st.status), st.mailID)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO mail_sources (account_id, source_key, status, mail_id) VALUES `+
				strings.Join(vals, ", "), args...); err != nil {
				return fmt.Errorf("index source keys: %w", err)
			}
		}
		if _, err := tx.Append(ctx, reqs...); err != nil {
			return fmt.Errorf("append %d intake events: %w", len(reqs), err)
		}
		stored := waitBlobs()
		if stored.err != nil {
			return fmt.Errorf("store blobs: %w", stored.err)
		}
		return recordPacked(ctx, tx, stored.packed)
	})
	if err != nil {
		return fmt.Errorf("ingest: commit %d mails of account %s: %w", len(batch), s.accountID, err)
	}
	return nil
}

// storeBlobs makes every blob of the batch durable before its events
// commit: the small mails in one pack file, the loose ones by one sync.
func (s *Sink) storeBlobs(ctx context.Context, batch []staged) ([]blobstore.Packed, error) {
	var raws [][]byte
	loose := false
	for _, st := range batch {
		switch {
		case st.raw != nil:
			raws = append(raws, st.raw)
		case st.loose:
			loose = true
		}
	}
	if loose {
		if err := s.blobs.Sync(); err != nil {
			return nil, err
		}
	}
	packed, err := s.blobs.WritePack(ctx, raws)
	if err != nil {
		return nil, err
	}
	return packed, nil
}

// recordPacked writes where each packed blob lives, in the commit's
// transaction. The same content (a mail fetched twice) keeps its first row.
func recordPacked(ctx context.Context, tx eventstore.Tx, packed []blobstore.Packed) error {
	for start := 0; start < len(packed); start += knownChunk {
		part := packed[start:min(start+knownChunk, len(packed))]
		vals := make([]string, len(part))
		args := make([]any, 0, 4*len(part))
		for i, p := range part {
			vals[i] = fmt.Sprintf("($%d, $%d, $%d, $%d)", 4*i+1, 4*i+2, 4*i+3, 4*i+4)
			args = append(args, string(p.Ref), p.Pack, p.Offset, p.Length)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO blob_packs (ref, pack, pack_offset, length) VALUES `+
			strings.Join(vals, ", ")+` ON CONFLICT (ref) DO NOTHING`, args...); err != nil {
			return fmt.Errorf("record packed blobs: %w", err)
		}
	}
	return nil
}

// newEvent encodes a domain event for the store. The event id is derived
// from the mail id, so a retried commit carries the same ids.
func newEvent(ev domain.Event, accountID string) (eventstore.NewEvent, error) {
	payload, err := json.Marshal(ev)
	if err != nil {
		return eventstore.NewEvent{}, fmt.Errorf("encode %s: %w", ev.EventName(), err)
	}
	var id string
	var at time.Time
	switch e := ev.(type) {
	case domain.MailReceived:
		id, at = e.MailID, e.ReceivedAt
	case domain.MailFailed:
		id, at = e.MailID, e.ReceivedAt
	}
	return eventstore.NewEvent{
		ID: id, Type: ev.EventName(), SchemaVersion: 1, Payload: payload,
		Metadata: eventstore.Metadata{CorrelationID: id, Actor: "mailbox:" + accountID, OccurredAt: at},
	}, nil
}

func mailReceivedFrom(s mimeparse.Summary) domain.MailReceived {
	conv := func(as []mimeparse.Address) []domain.Address {
		if len(as) == 0 {
			return nil
		}
		out := make([]domain.Address, len(as))
		for i, a := range as {
			out[i] = domain.Address{Name: a.Name, Email: a.Email}
		}
		return out
	}
	var atts []domain.Attachment
	for _, a := range s.Attachments {
		atts = append(atts, domain.Attachment{PartPath: a.PartPath, Filename: a.Filename, ContentType: a.ContentType,
			ContentID: a.ContentID, Size: a.Size, Inline: a.Inline})
	}
	// The event keeps a bounded prefix of each body; the whole is in the
	// raw mail, which the readers that need it parse again.
	text, textCut := domain.BodyPrefix(s.TextBody, domain.MailBodyPrefixBytes)
	html, htmlCut := domain.BodyPrefix(s.HTMLBody, domain.MailBodyPrefixBytes)
	var textSize, htmlSize int64
	if textCut {
		textSize = int64(len(s.TextBody))
	}
	if htmlCut {
		htmlSize = int64(len(s.HTMLBody))
	}
	return domain.MailReceived{
		TextBodyTruncated: textCut, TextBodySize: textSize, HTMLBodyTruncated: htmlCut, HTMLBodySize: htmlSize,
		MessageID: s.MessageID, InReplyTo: s.InReplyTo, References: s.References, Subject: s.Subject,
		From: domain.Address{Name: s.From.Name, Email: s.From.Email}, ReplyTo: conv(s.ReplyTo), To: conv(s.To), Cc: conv(s.Cc),
		DeliveredTo: s.DeliveredTo, ReturnPath: s.ReturnPath, ReturnPathEmpty: s.ReturnPathEmpty, Date: s.Date,
		AutoSubmitted: s.AutoSubmitted, Precedence: s.Precedence, LoopHeaders: s.LoopHeaders,
		ContentType: s.ContentType, ReportType: s.ReportType, BouncedMessageID: s.BouncedMessageID,
		TextBody: text, HTMLBody: html, Attachments: atts, Warnings: s.Warnings,
	}
}
