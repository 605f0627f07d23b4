// Package graphtest runs a fake Microsoft Graph mail API over real HTTP on
// 127.0.0.1, for tests of the Graph mail source, as dovecottest does for
// IMAP and POP3. It behaves as Graph v1.0 is documented to:
//
//   - mailboxes are users, addressed by address or user id (/users/{u});
//   - folders by id or well-known name (inbox, deleteditems, msgfolderroot,
//     ...), top-level folders under /mailFolders and children under
//     /childFolders, both filterable by displayName and creatable;
//   - messages listed with $select, $top, $orderby and @odata.nextLink
//     paging by $skip, the size as the extended property PidTagMessageSize
//     ("Integer 0x0E08") through $expand, the raw MIME from /$value,
//     move, delete (to Deleted Items) and permanentDelete;
//   - JSON batching (POST /v1.0/$batch): up to 20 requests, all parallel or
//     all serial (dependsOn the one before; 424 after a failure), each
//     recorded, scripted and counted like a request of its own;
//   - ids: a message has an immutable id, sent and accepted when a request
//     carries Prefer: IdType="ImmutableId", and a default id that changes
//     whenever the message moves, sent otherwise (see
//     https://learn.microsoft.com/graph/outlook-immutable-id);
//   - errors as {"error":{"code","message"}} with Graph's codes and words,
//     429 ApplicationThrottled beyond 4 concurrent requests per mailbox
//     (MailboxConcurrency), a Bearer token checked by a func.
//
// Tests script faults on top: throttling with Retry-After, 401s that force
// a token refresh, HTML error pages, a message gone between list and
// download, access denied. Every request is recorded, with whether it
// asked for immutable ids, and the peak of concurrent requests per mailbox
// is kept.
package graphtest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Defaults for the zero Options.
const (
	// DefaultPageSize is Graph's page size for messages when no $top is given.
	DefaultPageSize = 10
	// MaxPageSize is the largest $top honoured; larger asks get this many.
	MaxPageSize = 1000
	// DefaultConcurrencyLimit is Exchange Online's MailboxConcurrency: at
	// most 4 concurrent requests per app and mailbox.
	DefaultConcurrencyLimit = 4
)

// Well-known folder names (lower case, as Graph documents them) and the
// display names the fake gives them.
var wellKnownFolders = []struct{ name, display string }{
	{"inbox", "Inbox"},
	{"deleteditems", "Deleted Items"},
	{"sentitems", "Sent Items"},
	{"drafts", "Drafts"},
	{"junkemail", "Junk Email"},
	{"archive", "Archive"},
	{"outbox", "Outbox"},
}

// Options configure a Server. The zero value is valid.
type Options struct {
	// CheckToken says whether a Bearer token is valid. Nil accepts any
	// non-empty token; StaticToken and Introspection build common checks.
	// Tokens refused by RejectTokensSeen are refused whatever it says.
	CheckToken func(token string) bool
	// ConcurrencyLimit is how many requests one mailbox serves at once;
	// more are answered 429 ApplicationThrottled with Retry-After: 1, as
	// Exchange Online does. 0 means DefaultConcurrencyLimit, negative means
	// no limit.
	ConcurrencyLimit int
	// Latency is added to every request before it is answered, so that
	// concurrency shows on a fast loopback.
	Latency time.Duration
}

// Server is a running fake Graph. Its methods may be called from several
// goroutines, also while requests are served.
type Server struct {
	// URL is the base URL, like https://graph.microsoft.com: requests go to
	// URL + "/v1.0/users/...".
	URL string

	opts Options
	srv  *httptest.Server

	mu        sync.Mutex
	mailboxes map[string]*mailbox // by lower-case address and by user id
	serial    int
	clock     time.Time // receivedDateTime of the next message

	faults    []*scriptedFault
	vanish    map[string]bool // immutable ids that disappear when downloaded
	denied    map[string]graphError
	seen      map[string]bool // tokens presented
	rejected  map[string]bool // tokens refused from now on
	onRequest func(Request)

	requests []Request
	sent     map[string][][]byte // raw MIME sent through sendMail, by mailbox address
	inflight map[string]int
	peak     map[string]int
}

type mailbox struct {
	address string
	userID  string
	folders map[string]*folder // by id
	root    *folder            // msgfolderroot
	msgs    map[string]*message
	restIDs map[string]*message // the current default id of each message
	purged  int
}

type folder struct {
	id, display, wellKnown string
	parent                 *folder
}

type message struct {
	immutableID string
	restID      string
	folder      *folder
	raw         []byte
	received    time.Time
	seq         int
	messageID   string
	subject     string
}

// Start starts a fake Graph on 127.0.0.1 and closes it when the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.ConcurrencyLimit == 0 {
		opts.ConcurrencyLimit = DefaultConcurrencyLimit
	}
	s := &Server{
		opts:      opts,
		mailboxes: map[string]*mailbox{},
		clock:     time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC),
		vanish:    map[string]bool{},
		denied:    map[string]graphError{},
		seen:      map[string]bool{},
		rejected:  map[string]bool{},
		inflight:  map[string]int{},
		peak:      map[string]int{},
		sent:      map[string][][]byte{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	tb.Cleanup(s.srv.Close)
	return s
}

// Close stops the server; Start registers it with the test already.
func (s *Server) Close() { s.srv.Close() }

// AddMailbox creates a mailbox with the well-known folders, unless it
// exists, and returns its user id.
func (s *Server) AddMailbox(address string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addMailboxLocked(address).userID
}

func (s *Server) addMailboxLocked(address string) *mailbox {
	if mb := s.mailboxes[strings.ToLower(address)]; mb != nil {
		return mb
	}
	mb := &mailbox{address: address, userID: newGUID(), folders: map[string]*folder{},
		msgs: map[string]*message{}, restIDs: map[string]*message{}}
	mb.root = &folder{id: newID("AQMkADAwATM0MDAAMS1"), display: "Top of Information Store", wellKnown: "msgfolderroot"}
	mb.folders[mb.root.id] = mb.root
	for _, wk := range wellKnownFolders {
		f := &folder{id: newID("AQMkADAwATM0MDAAMS1"), display: wk.display, wellKnown: wk.name, parent: mb.root}
		mb.folders[f.id] = f
	}
	s.mailboxes[strings.ToLower(address)] = mb
	s.mailboxes[strings.ToLower(mb.userID)] = mb
	return mb
}

// CreateFolder creates every missing folder along path (segments split by
// "/"; the first may be a well-known name or a top-level display name) in
// a mailbox, created when missing, and returns the last folder's id.
func (s *Server) CreateFolder(address, path string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.addMailboxLocked(address)
	return s.folderByPathLocked(mb, path, true).id
}

// FolderID returns the id of the folder at path, "" when there is none.
func (s *Server) FolderID(address, path string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.mailboxes[strings.ToLower(address)]
	if mb == nil {
		return ""
	}
	if f := s.folderByPathLocked(mb, path, false); f != nil {
		return f.id
	}
	return ""
}

func (s *Server) folderByPathLocked(mb *mailbox, path string, create bool) *folder {
	cur := mb.root
	for i, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		var next *folder
		if i == 0 {
			next = mb.wellKnown(seg)
		}
		if next == nil {
			next = mb.child(cur, seg)
		}
		if next == nil {
			if !create {
				return nil
			}
			next = &folder{id: newID("AAMkADAwATM0MDAAMS1"), display: seg, parent: cur}
			mb.folders[next.id] = next
		}
		cur = next
	}
	return cur
}

func (mb *mailbox) wellKnown(name string) *folder {
	for _, f := range mb.folders {
		if f.wellKnown != "" && strings.EqualFold(f.wellKnown, name) {
			return f
		}
	}
	return nil
}

func (mb *mailbox) child(parent *folder, display string) *folder {
	for _, f := range mb.sortedFolders() {
		if f.parent == parent && strings.EqualFold(f.display, display) {
			return f
		}
	}
	return nil
}

// sortedFolders returns the folders in a stable order (by display name).
func (mb *mailbox) sortedFolders() []*folder {
	out := make([]*folder, 0, len(mb.folders))
	for _, f := range mb.folders {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *folder) int { return strings.Compare(a.display+a.id, b.display+b.id) })
	return out
}

// AddMessages delivers raw mails into the folder at path (created when
// missing) of a mailbox (created when missing) and returns their immutable
// ids. Each mail is received one second after the one before.
func (s *Server) AddMessages(address, path string, raws [][]byte) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.addMailboxLocked(address)
	f := s.folderByPathLocked(mb, path, true)
	ids := make([]string, len(raws))
	for i, raw := range raws {
		s.serial++
		m := &message{immutableID: newID("AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A"), restID: newID("AAMkADAwATM0MDAAMS1hNjRlLTAwAEYAAA"),
			folder: f, raw: raw, received: s.clock, seq: s.serial}
		s.clock = s.clock.Add(time.Second)
		if h, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
			m.messageID, m.subject = h.Header.Get("Message-Id"), h.Header.Get("Subject")
		}
		mb.msgs[m.immutableID] = m
		mb.restIDs[m.restID] = m
		ids[i] = m.immutableID
	}
	return ids
}

// Message is a message as the fake holds it.
type Message struct {
	ImmutableID string
	// RESTID is the default (not immutable) id; it changes on every move.
	RESTID string
	Folder string // display name of its folder
	Raw    []byte
}

// Messages returns the messages of the folder at path, oldest first; nil
// when the mailbox or folder does not exist.
func (s *Server) Messages(address, path string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.mailboxes[strings.ToLower(address)]
	if mb == nil {
		return nil
	}
	f := s.folderByPathLocked(mb, path, false)
	if f == nil {
		return nil
	}
	var out []Message
	for _, m := range mb.inFolder(f) {
		out = append(out, Message{ImmutableID: m.immutableID, RESTID: m.restID, Folder: f.display, Raw: m.raw})
	}
	return out
}

// Count is the number of messages in the folder at path; 0 when it does
// not exist.
func (s *Server) Count(address, path string) int {
	return len(s.Messages(address, path))
}

// Purged is the number of messages of a mailbox removed for good: by
// permanentDelete, or deleted from Deleted Items.
func (s *Server) Purged(address string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mb := s.mailboxes[strings.ToLower(address)]; mb != nil {
		return mb.purged
	}
	return 0
}

// Remove deletes a message for good, as another client may between our
// listing and our download.
func (s *Server) Remove(address, immutableID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mb := s.mailboxes[strings.ToLower(address)]; mb != nil {
		if m := mb.msgs[immutableID]; m != nil {
			mb.remove(m)
		}
	}
}

// DeleteFolder removes the folder at path, everything below it and their
// mails, as a user deleting it in Outlook would.
func (s *Server) DeleteFolder(address, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.mailboxes[strings.ToLower(address)]
	if mb == nil {
		return
	}
	gone := s.folderByPathLocked(mb, path, false)
	if gone == nil {
		return
	}
	below := func(f *folder) bool {
		for ; f != nil; f = f.parent {
			if f == gone {
				return true
			}
		}
		return false
	}
	for _, m := range mb.msgs {
		if below(m.folder) { // not counted as purged: no client purged them
			delete(mb.msgs, m.immutableID)
			delete(mb.restIDs, m.restID)
		}
	}
	for id, f := range mb.folders {
		if below(f) {
			delete(mb.folders, id)
		}
	}
}

// MoveOutside moves a message to the folder at path as another client
// would, giving it a new default id.
func (s *Server) MoveOutside(address, immutableID, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mb := s.mailboxes[strings.ToLower(address)]; mb != nil {
		if m := mb.msgs[immutableID]; m != nil {
			mb.move(m, s.folderByPathLocked(mb, path, true))
		}
	}
}

func (mb *mailbox) inFolder(f *folder) []*message {
	var out []*message
	for _, m := range mb.msgs {
		if m.folder == f {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b *message) int { return a.seq - b.seq })
	return out
}

func (mb *mailbox) remove(m *message) {
	delete(mb.msgs, m.immutableID)
	delete(mb.restIDs, m.restID)
	mb.purged++
}

// move puts m into f. Exchange's default id names the item's place, so it
// changes; the immutable id stays.
func (mb *mailbox) move(m *message, f *folder) {
	delete(mb.restIDs, m.restID)
	m.restID = newID("AAMkADAwATM0MDAAMS1hNjRlLTAwAEYAAA")
	m.folder = f
	mb.restIDs[m.restID] = m
}

// lookup finds a message by either of its ids.
func (mb *mailbox) lookup(id string) *message {
	if m := mb.msgs[id]; m != nil {
		return m
	}
	return mb.restIDs[id]
}

// newID returns an id in the shape of Exchange's: a fixed prefix, random
// base64 and the "=" padding that makes clients escape it.
func newID(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails on Linux; see crypto/rand.Read
	return prefix + base64.URLEncoding.EncodeToString(b)
}

func newGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Sent returns the raw messages a mailbox sent through sendMail, in order.
func (s *Server) Sent(address string) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.mailboxes[strings.ToLower(address)]
	if mb == nil {
		return nil
	}
	return append([][]byte(nil), s.sent[mb.address]...)
}
