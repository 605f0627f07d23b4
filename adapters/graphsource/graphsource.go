// Package graphsource fetches mail from an Exchange Online mailbox through
// Microsoft Graph (v1.0, plain net/http, no SDK) into a mailsource.Sink,
// exactly once, as imapsource does over IMAP: it lists a folder, asks the
// sink what is committed, streams the new mails' raw MIME into the sink in
// batches, commits each batch and only then deletes or moves the batch's
// mails on the server.
//
// Rules the code keeps, because Graph would not on its own:
//   - Every request sends Prefer: IdType="ImmutableId". Without it a
//     message's id changes when it moves, and a mail moved by a rule
//     between two polls would be imported twice. The source key is
//     graph/<immutable id>.
//   - The size comes with the listing (the extended property
//     PidTagMessageSize, "Integer 0x0E08"), so max_mail_size holds
//     without downloading.
//   - At most MaxConcurrency requests run at once per mailbox (Exchange's
//     MailboxConcurrency), across every fetcher and graphsend sender
//     sharing a graph.MailboxLimiter (the process's by default). Mails
//     download in parallel into memory (small ones) while the sink takes
//     them one by one in listing order; a large mail streams from the
//     answer into the sink. Deletes and moves go 20 to a serial JSON
//     batch, which Graph runs one request after the other: one slot per
//     batch, a twentieth of the round trips.
//   - 429 and 503 wait for Retry-After (bounded) and retry; a 401 asks for
//     a fresh token once; every other error carries Graph's error.code and
//     error.message verbatim as the server's reply.
//   - A nextLink leading anywhere but the Graph host of the account is
//     refused: the token goes to no other host.
package graphsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// Fetcher polls the folders of one Graph mailbox. It is safe for
// concurrent use, but the caller should not poll one account twice at the
// same time.
type Fetcher struct {
	cfg    Config
	log    *slog.Logger
	tokens *tokenCache

	mu     sync.Mutex
	walked map[string]bool // the folders below Folders the last poll read (IncludeSubfolders)
}

var _ mailsource.Fetcher = (*Fetcher)(nil)

// New validates cfg and returns a fetcher; a nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	return &Fetcher{cfg: cfg, log: logger.With("graph_mailbox", cfg.Mailbox),
		tokens: &tokenCache{src: cfg.TokenSource, reject: cfg.RejectToken}}, nil
}

// session is one poll's or check's state.
type session struct {
	f           *Fetcher
	c           *client
	folderIDs   map[string]string // lower-case path → id
	uncreatable map[string]error  // folders Graph refused to create this poll
	refused     []error           // after-import steps Graph refused
}

func (f *Fetcher) session(ctx context.Context) (*session, error) {
	base := f.cfg.BaseURL
	if f.cfg.ResolveBaseURL != nil {
		var err error
		if base, err = f.cfg.ResolveBaseURL(ctx); err != nil {
			return nil, fmt.Errorf("graphsource: Graph base URL: %w", err)
		}
	}
	if err := checkBaseURL(base); err != nil {
		return nil, err
	}
	root, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil {
		return nil, fmt.Errorf("graphsource: BaseURL %q: %w", base, err)
	}
	c := &client{root: root, users: root.String() + "/v1.0/users/" + url.PathEscape(f.cfg.Mailbox), mailbox: f.cfg.Mailbox,
		http: f.cfg.HTTPClient, limiter: f.cfg.Limiter, tokens: f.tokens, timeout: f.cfg.Timeout, maxRetries: f.cfg.MaxRetries,
		maxRetryAfter: f.cfg.MaxRetryAfter, log: f.log, sleep: sleepCtx}
	return &session{f: f, c: c, folderIDs: map[string]string{}, uncreatable: map[string]error{}}, nil
}

// Check reads each folder and one message of it, importing nothing. A
// refusal comes back as a *mailsource.ServerError carrying Graph's code
// and message (ErrorAccessDenied when the app lacks Mail.ReadWrite or an
// application access policy keeps it out of the mailbox).
func (f *Fetcher) Check(ctx context.Context) error {
	s, err := f.session(ctx)
	if err != nil {
		return err
	}
	for _, folder := range f.cfg.Folders {
		id, err := s.folderID(ctx, folder, false)
		if err != nil {
			return err
		}
		u := s.c.path(query("$top", "1", "$select", "id"), "mailFolders", id, "messages")
		if err := s.c.getJSON(ctx, "list "+folder, u, &struct{}{}); err != nil {
			return err
		}
	}
	return nil
}

// Poll imports every mail of the configured folders that the sink does not
// know yet and applies after_import to everything committed; see the
// package comment. A folder that is missing or refused, and a delete or
// move Graph refuses after import (no right, quota), do not stop the rest;
// their errors are joined into the returned error next to a valid result,
// and the refused step is tried again next poll. With IncludeSubfolders, so
// is a mailsource.ErrFolderVanished for each folder found below Folders by
// the previous poll and missing now.
func (f *Fetcher) Poll(ctx context.Context, sink mailsource.Sink) (mailsource.PollResult, error) {
	var res mailsource.PollResult
	s, err := f.session(ctx)
	if err != nil {
		return res, err
	}
	folders, err := s.pollFolders(ctx)
	if err != nil {
		return res, fmt.Errorf("graphsource: walk folders: %w", err)
	}
	refused := f.noteWalked(folders)
	for _, folder := range folders {
		err := s.pollFolder(ctx, sink, folder, &res)
		var fe *folderError
		switch {
		case err == nil:
		case errors.As(err, &fe):
			f.log.Warn("graph folder not polled", "folder", folder, "err", err)
			refused = append(refused, fe.err)
		default:
			return res, fmt.Errorf("graphsource: poll %q: %w", folder, err)
		}
	}
	f.log.Debug("graph poll done", "requests", s.c.requests.Load(), "fetched", res.Fetched)
	return res, joinDistinct(append(refused, s.refused...))
}

// folderError is a folder that could not be opened: the poll goes on with
// the next folder.
type folderError struct{ err error }

func (e *folderError) Error() string { return e.err.Error() }
func (e *folderError) Unwrap() error { return e.err }

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
