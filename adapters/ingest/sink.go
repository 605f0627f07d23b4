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
	"strings"
	"sync"
	"time"

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

// Sink is the mailsource.Sink of one poll of one account.
type Sink struct {
	store     eventstore.Store
	blobs     Blobs
	limits    mimeparse.Limits
	accountID string
	now       func() time.Time
	logger    *slog.Logger

	mu     sync.Mutex // guards staged: a background commit may run while the next batch is received
	staged []staged
}

type staged struct {
	key    string
	mailID string
	status mailsource.Status
	event  domain.Event
	raw    []byte // a small mail's bytes, packed at Commit; nil for loose blobs
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
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ingest: new sink: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sink{store: cfg.Store, blobs: cfg.Blobs, limits: cfg.Limits, accountID: cfg.AccountID,
		now: cfg.Now, logger: cfg.Logger}, nil
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
	head, err := io.ReadAll(io.LimitReader(r, smallMail+1))
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
		sum, perr = mimeparse.ParseBytes(raw, s.limits)
	} else {
		ref, n, err = s.blobs.PutNoSync(ctx, io.MultiReader(bytes.NewReader(head), r))
		if err != nil {
			return mailsource.Outcome{}, fmt.Errorf("ingest: store mail %s: %w", key, err)
		}
		sum, perr = s.parse(ref)
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
		s.stage(staged{key: key, mailID: mailID, status: mailsource.StatusFailed, raw: raw, event: domain.MailFailed{
			MailID: mailID, AccountID: s.accountID, SourceKey: key, BlobRef: string(ref), Size: n,
			ReceivedAt: receivedAt, Reason: reason,
		}})
		s.logger.Warn("mail failed to parse", "account", s.accountID, "source_key", key, "reason", reason)
		return mailsource.Outcome{Status: mailsource.StatusFailed, Reason: reason}, nil
	}
	ev := mailReceivedFrom(sum)
	ev.MailID, ev.AccountID, ev.SourceKey = mailID, s.accountID, key
	ev.BlobRef, ev.Size, ev.ReceivedAt = string(ref), n, receivedAt
	s.stage(staged{key: key, mailID: mailID, status: mailsource.StatusReceived, raw: raw, event: ev})
	return mailsource.Outcome{Status: mailsource.StatusReceived}, nil
}

// errParse marks parse failures that are the mail's own fault.
var errParse = errors.New("unparseable mail")

func (s *Sink) parse(ref blobstore.Ref) (mimeparse.Summary, error) {
	f, err := s.blobs.Open(ref)
	if err != nil {
		return mimeparse.Summary{}, fmt.Errorf("open blob %s: %w", ref, err)
	}
	defer f.Close()
	sum, err := mimeparse.Parse(f, s.limits)
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
func (s *Sink) Oversize(_ context.Context, key string, size int64) error {
	mailID := domain.MailIDFor(s.accountID, key)
	s.stage(staged{key: key, mailID: mailID, status: mailsource.StatusFailed, event: domain.MailFailed{
		MailID: mailID, AccountID: s.accountID, SourceKey: key, Size: size, ReceivedAt: s.now().UTC(),
		Reason: fmt.Sprintf("mail of %d bytes exceeds the account's max_mail_size; not downloaded", size), Oversize: true,
	}})
	return nil
}

func (s *Sink) stage(st staged) {
	s.mu.Lock()
	s.staged = append(s.staged, st)
	s.mu.Unlock()
}

// take removes and returns everything staged.
func (s *Sink) take() []staged {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := s.staged
	s.staged = nil
	return batch
}

var _ mailsource.AsyncCommitter = (*Sink)(nil)

// StartCommit implements mailsource.AsyncCommitter: the batch staged so far
// commits in the background while the fetcher downloads the next one.
func (s *Sink) StartCommit(ctx context.Context) func() error {
	batch := s.take()
	done := make(chan error, 1)
	go func() { done <- s.commit(ctx, batch) }()
	var (
		once sync.Once
		err  error
	)
	return func() error {
		once.Do(func() { err = <-done })
		return err
	}
}

// Commit implements mailsource.Sink: every staged event and its index row in
// one transaction. On error nothing is committed and the staged mails are
// dropped: the fetcher must not delete them, and the next poll fetches them
// again.
func (s *Sink) Commit(ctx context.Context) error {
	return s.commit(ctx, s.take())
}

func (s *Sink) commit(ctx context.Context, batch []staged) error {
	if len(batch) == 0 {
		return nil
	}
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
		ne, err := newEvent(st.event, s.accountID)
		if err != nil {
			return fmt.Errorf("ingest: commit: %w", err)
		}
		reqs = append(reqs, eventstore.AppendRequest{Stream: MailStream(st.mailID), ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{ne}})
	}
	err := s.store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
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
		case blobRef(st.event) != "":
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

func blobRef(ev domain.Event) string {
	switch e := ev.(type) {
	case domain.MailReceived:
		return e.BlobRef
	case domain.MailFailed:
		return e.BlobRef
	}
	return ""
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
	return domain.MailReceived{
		MessageID: s.MessageID, InReplyTo: s.InReplyTo, References: s.References, Subject: s.Subject,
		From: domain.Address{Name: s.From.Name, Email: s.From.Email}, ReplyTo: conv(s.ReplyTo), To: conv(s.To), Cc: conv(s.Cc),
		DeliveredTo: s.DeliveredTo, ReturnPath: s.ReturnPath, ReturnPathEmpty: s.ReturnPathEmpty, Date: s.Date,
		AutoSubmitted: s.AutoSubmitted, Precedence: s.Precedence, LoopHeaders: s.LoopHeaders,
		ContentType: s.ContentType, ReportType: s.ReportType, BouncedMessageID: s.BouncedMessageID,
		TextBody: s.TextBody, HTMLBody: s.HTMLBody, Attachments: atts, Warnings: s.Warnings,
	}
}
