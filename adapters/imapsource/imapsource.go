// Package imapsource fetches mail from IMAP folders (RFC 9051, RFC 3501)
// into a mailsource.Sink, exactly once: it lists by UID, asks the sink what
// is committed, streams new mails with UID FETCH BODY.PEEK[] in batches,
// commits each batch and only then deletes or moves the batch on the server
// by UID set. Failed and oversize mails go to an error folder so that they
// never fail again on the next poll. Append stores a mail in a folder (the
// copy of a sent mail in Sent) over the same dial and login.
//
// Safety rules the code keeps, because go-imap would not on its own:
//   - UIDs only, never sequence numbers; a source key carries UIDVALIDITY, so
//     a recreated folder never makes us touch the wrong mail.
//   - Mails are expunged only with UID EXPUNGE (UIDPLUS or IMAP4rev2); a plain
//     EXPUNGE would also remove mail someone else flagged \Deleted. Without
//     UIDPLUS imported mails are only flagged, and a log line says so.
//   - go-imap has no context: a watchdog closes the connection when ctx is
//     done or the server stalls, and every FETCH is drained before the client
//     is closed (an unread literal makes Close hang).
package imapsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/emersion/go-imap/v2"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// Fetcher polls the folders of one IMAP account. It is safe for concurrent
// use, but the caller should not poll one account twice at the same time.
type Fetcher struct {
	cfg Config
	log *slog.Logger

	mu          sync.Mutex
	uidValidity map[string]uint32        // last seen per folder, for the log
	walked      map[string]bool          // the folders the last poll read (IncludeSubfolders)
	watched     map[string]watchedFolder // where each folder stood when its last watch began
}

var _ mailsource.Fetcher = (*Fetcher)(nil)

// New validates cfg and returns a fetcher; a nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newFetcher(cfg, logger), nil
}

// newFetcher returns a fetcher for a cfg validated as far as its use needs.
func newFetcher(cfg Config, logger *slog.Logger) *Fetcher {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	return &Fetcher{
		cfg:         cfg,
		log:         logger.With("imap_host", cfg.Host, "imap_user", cfg.Username),
		uidValidity: map[string]uint32{},
	}
}

// Check connects, logs in and examines every folder read-only, importing
// nothing. A refusal comes back as a *mailsource.ServerError carrying the
// server's exact reply.
func (f *Fetcher) Check(ctx context.Context) error {
	s, err := f.dial(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	folders, err := s.pollFolders()
	if err != nil {
		return s.wrap(err)
	}
	for _, folder := range folders {
		if _, err := s.c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			return s.wrap(serverError("select "+folder, err))
		}
	}
	return nil
}

// Poll imports every mail of the configured folders that the sink does not
// know yet and applies after_import to everything committed; see the
// package comment. A folder the server refuses to select, mails it
// refuses to send, and a delete or move it refuses after import (no right
// to create the folder, quota exceeded) do not stop the rest; their
// *mailsource.ServerError refusals are joined into the returned error,
// next to a valid result, and the refused step is tried again next poll.
func (f *Fetcher) Poll(ctx context.Context, sink mailsource.Sink) (mailsource.PollResult, error) {
	var res mailsource.PollResult
	s, err := f.dial(ctx)
	if err != nil {
		return res, err
	}
	defer s.close()
	folders, err := s.pollFolders()
	if err != nil {
		return res, s.wrap(fmt.Errorf("imapsource: find the folders to read: %w", err))
	}
	refused := f.noteWalked(folders)
	for _, folder := range folders {
		err := s.pollFolder(ctx, sink, folder, &res)
		var se *mailsource.ServerError
		switch {
		case err == nil:
		case errors.As(err, &se) && se.Op == "select "+folder:
			f.log.Warn("imap folder not polled", "folder", folder, "reply", se.Reply)
			refused = append(refused, err)
		default:
			return res, s.wrap(fmt.Errorf("imapsource: poll %q: %w", folder, err))
		}
	}
	return res, joinDistinct(append(refused, s.refused...))
}

// joinDistinct joins errs, each text once: a refusal met by every batch
// (a folder that cannot be created) is reported once.
func joinDistinct(errs []error) error {
	seen := make(map[string]bool, len(errs))
	var out []error
	for _, err := range errs {
		if msg := err.Error(); !seen[msg] {
			seen[msg] = true
			out = append(out, err)
		}
	}
	return errors.Join(out...)
}

// noteUIDValidity logs when a folder's UIDVALIDITY changed since the last
// poll: every mail in it then has a new source key (RFC 9051 section 2.3.1.1).
func (f *Fetcher) noteUIDValidity(folder string, uv uint32) {
	f.mu.Lock()
	prev, seen := f.uidValidity[folder]
	f.uidValidity[folder] = uv
	f.mu.Unlock()
	if seen && prev != uv {
		f.log.Warn("imap UIDVALIDITY changed: mails in the folder get new keys; earlier keys are never acted on",
			"folder", folder, "old", prev, "new", uv)
	}
}
