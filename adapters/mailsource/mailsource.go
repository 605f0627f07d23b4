// Package mailsource is the port between the mailbox fetchers (IMAP, POP3,
// Graph) and the code that commits what they fetched as events. It holds
// types and the TLS settings the fetchers share, so the fetchers and the
// committer do not import each other.
//
// The contract that makes import exactly-once:
//
//  1. The fetcher lists the mailbox and asks Sink.Known which source keys are
//     already committed.
//  2. For each new mail it either calls Sink.Oversize (size known from the
//     server, nothing downloaded) or streams the bytes into Sink.Receive.
//  3. It calls Sink.Commit. Only after Commit returns nil does it delete or
//     move the mails on the server. A crash before that means the mails are
//     listed again next time, Known says they are committed, and the fetcher
//     finishes the delete/move without a second event.
package mailsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// Status of a source key that was committed before.
type Status int

const (
	// StatusNew means the key was never committed.
	StatusNew Status = iota
	// StatusReceived means a MailReceived (or MailSkipped) was committed: the
	// mail is done and may be deleted or moved as after_import says.
	StatusReceived
	// StatusFailed means a MailFailed was committed: the mail belongs in the
	// error folder (IMAP) or stays on the server untouched (POP3).
	StatusFailed
)

// Outcome of handing one mail to the sink.
type Outcome struct {
	Status Status // StatusReceived or StatusFailed
	// Reason says why a mail failed, for the admin.
	Reason string
}

// Sink receives the mails of one poll of one account.
// It is not safe for concurrent use; a poll uses one sink from one goroutine.
type Sink interface {
	// Known returns the status of each key that was committed before; keys
	// missing from the map are new.
	Known(ctx context.Context, keys []string) (map[string]Status, error)
	// Receive stores the raw mail read from r (size is the server's figure,
	// -1 when unknown) and stages its event for the next Commit. A mail that
	// cannot be parsed is an Outcome with StatusFailed, not an error; an
	// error means the mail was not staged (e.g. the blob store failed or the
	// connection broke mid-download) and the poll should stop.
	Receive(ctx context.Context, key string, size int64, r io.Reader) (Outcome, error)
	// Oversize stages a MailFailed for a mail not downloaded because size
	// exceeds the account's max_mail_size.
	Oversize(ctx context.Context, key string, size int64) error
	// Commit makes everything staged durable in one transaction. A sink may
	// make part of a batch durable earlier, on its own (ingest does when
	// the staged bytes pass its bound); Commit then also reports those
	// parts. The fetcher's side is unchanged: it deletes or moves a batch
	// only after Commit returns nil, and a mail committed early but not
	// deleted is found by Known on the next poll.
	Commit(ctx context.Context) error
}

// AsyncCommitter is implemented by sinks that can commit a batch while the
// fetcher already downloads the next one. StartCommit takes everything
// staged so far (later Receive calls stage into the next batch) and commits
// it in the background; wait blocks until that commit is done and returns
// what Commit would have. The contract is Commit's: only after wait returns
// nil may the fetcher delete or move that batch's mails on the server.
// Fetchers use it when the sink offers it and fall back to Commit.
type AsyncCommitter interface {
	StartCommit(ctx context.Context) (wait func() error)
}

// Fenced is implemented by sinks of a poll that runs under a mailbox lease
// (several instances on one database). A fetcher asks StillHeld before it
// deletes or moves mails on the server, and removes nothing when it fails:
// another instance may poll the mailbox now.
type Fenced interface {
	StillHeld(ctx context.Context) error
}

// ContentDigests is implemented by sinks that remember which bytes were
// committed under a key. A fetcher whose server may give a key to another
// mail later (a POP3 server reusing a UIDL) compares a mail's bytes with
// them before it deletes a mail committed by an earlier poll.
type ContentDigests interface {
	// Digests returns the lower-case hex SHA-256 of the raw mail committed
	// under each key whose bytes were stored (the blob ref without its
	// "sha256:"); keys never committed, or committed without bytes (an
	// oversize mail), are missing.
	Digests(ctx context.Context, keys []string) (map[string]string, error)
}

// PollResult counts what one poll did; the mailbox-status view shows it.
type PollResult struct {
	Fetched  int // mails newly committed as received
	Failed   int // mails newly committed as failed (unparseable)
	Oversize int // mails newly committed as failed for their size
	Skipped  int // mails already committed earlier, finished now (deleted/moved)
	Deleted  int // mails removed or moved away from the folder on the server
}

// ServerError carries the server's exact words, which the admin sees in
// the mailbox status and in "check connection".
type ServerError struct {
	Op    string // what we were doing: "login", "select INBOX", "UID FETCH"
	Reply string // the server's reply text, verbatim
	Err   error
}

func (e *ServerError) Error() string {
	if e.Reply == "" {
		return fmt.Sprintf("%s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("%s: server said %q: %v", e.Op, Excerpt(e.Reply, MaxReplyLen), e.Err)
}

func (e *ServerError) Unwrap() error { return e.Err }

// MaxReplyLen bounds the server's words as errors, ServerReply and so the
// mailbox status and "check connection" show them. Mail servers answer in
// one short line; an account may point at any service, though, and its
// banner or page is not ours to relay.
const MaxReplyLen = 200

// ServerReply returns the server's words from err, or "" when err carries
// none: the first line, without control characters, at most MaxReplyLen
// characters (see Excerpt).
func ServerReply(err error) string {
	var se *ServerError
	if errors.As(err, &se) {
		return Excerpt(se.Reply, MaxReplyLen)
	}
	return ""
}

// Excerpt returns the first line of s without control characters and
// invalid UTF-8, cut to at most maxLen characters (an ellipsis marks a
// cut).
func Excerpt(s string, maxLen int) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			continue
		}
		if n == maxLen {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// Security is how a connection is protected.
type Security string

const (
	SecurityTLS      Security = "tls"      // implicit TLS from the first byte
	SecurityStartTLS Security = "starttls" // upgrade after the greeting
	SecurityNone     Security = "none"     // plain text (tests, local relays)
)

// ErrPlaintextAuth means a login would send a password or an OAuth token
// over a connection without TLS (security none) and the account does not
// allow that (allow_plaintext_auth). CRAM-MD5 sends neither and is used
// when the server offers it.
var ErrPlaintextAuth = errors.New("mailsource: no password or token is sent without TLS (security none) unless allow_plaintext_auth is set")

// DialControl returns a net.Dialer Control function that asks allow about
// the address about to be dialled (after name resolution, so DNS cannot
// lead a connection past it); nil allow gives nil (no check).
func DialControl(allow func(netip.Addr) error) func(network, address string, c syscall.RawConn) error {
	if allow == nil {
		return nil
	}
	return func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("mailsource: dial %s: %w", address, err)
		}
		return allow(ap.Addr().Unmap())
	}
}

// AfterImport says what happens to a mail on the server once committed.
type AfterImport string

const (
	AfterImportDelete AfterImport = "delete"
	AfterImportMove   AfterImport = "move"
	AfterImportKeep   AfterImport = "keep"
	// AfterImportTrash moves the mail to the mailbox's trash folder (IMAP:
	// the folder marked \Trash, RFC 6154, or the one the account names).
	AfterImportTrash AfterImport = "trash"
)

// Fetcher polls one mailbox. Implementations: imapsource, pop3source.
type Fetcher interface {
	// Poll fetches every mail not committed yet into sink, committing in
	// batches, and applies after_import to the committed ones.
	Poll(ctx context.Context, sink Sink) (PollResult, error)
	// Check connects, logs in and selects without importing anything.
	Check(ctx context.Context) error
}

// ErrFolderVanished means a folder found below a configured folder by
// include_subfolders, read by an earlier poll, is no longer there (deleted,
// renamed or unsubscribed). Each source reports it once, next to the poll's
// result; the other folders are read. It lives here so that callers test
// one value whichever protocol walked the tree.
var ErrFolderVanished = errors.New("mailsource: a folder read before is no longer listed")

// ErrPushUnsupported means the server offers no way to be told of new mail
// (IMAP IDLE, RFC 2177): the account can only be polled.
var ErrPushUnsupported = errors.New("mailsource: the server offers no push (IMAP IDLE)")

// Watcher is implemented by fetchers whose server can tell of new mail
// (IMAP IDLE). The scheduler watches each folder over a connection of its
// own and polls the account, through the one exactly-once path, when
// NewMail is called.
type Watcher interface {
	// WatchFolders names the folders to watch, one connection each.
	WatchFolders() []string
	// Watch connects and logs in (as Poll does), waits on folder and calls
	// o.NewMail whenever the server announces new mail, renewing the wait
	// every o.Renew. It returns ctx's error when ctx ends,
	// ErrPushUnsupported when the server cannot be waited on, and any
	// other error when the connection fails; the caller re-establishes it.
	Watch(ctx context.Context, folder string, o WatchOptions) error
}

// WatchOptions are the callbacks and timing of one Watcher.Watch.
type WatchOptions struct {
	// Renew is how often the wait is renewed; 0 or more than the
	// protocol allows means the watcher's default.
	Renew time.Duration
	// Established is called once the wait runs (IMAP: the server accepted
	// IDLE). It may be nil.
	Established func()
	// NewMail is called when the server announces new mail, and when the
	// watch starts on a folder that may hold mail that came while nobody
	// watched. It must not block: it runs on the connection's reader.
	NewMail func()
}

// Clock is passed to fetchers that must stamp times; cmd gives time.Now.
type Clock func() time.Time
