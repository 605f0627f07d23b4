package graphsource_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/graphsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

const box = "support@example.org"

// fakeSink is a recording mailsource.Sink with the semantics of the real
// one: staged work becomes visible to Known only on Commit, a failed
// Commit drops it, and it must not be used concurrently (it fails the
// test when it is).
type fakeSink struct {
	tb         testing.TB
	mu         sync.Mutex
	busy       bool
	committed  map[string]mailsource.Status
	staged     map[string]mailsource.Status
	bodies     map[string][]byte
	stagedRaw  map[string][]byte
	received   []string // keys handed to Receive, in order
	oversize   []string
	commits    int
	failCommit int
	// discard makes Receive hash the mail instead of keeping it.
	discard bool
	digests map[string][32]byte
}

func newFakeSink(tb testing.TB) *fakeSink {
	return &fakeSink{tb: tb, committed: map[string]mailsource.Status{}, staged: map[string]mailsource.Status{},
		bodies: map[string][]byte{}, stagedRaw: map[string][]byte{}, digests: map[string][32]byte{}}
}

func (s *fakeSink) enter() func() {
	s.mu.Lock()
	if s.busy {
		s.tb.Error("the sink was used from two goroutines at once")
	}
	s.busy = true
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.busy = false
		s.mu.Unlock()
	}
}

func (s *fakeSink) Known(_ context.Context, keys []string) (map[string]mailsource.Status, error) {
	defer s.enter()()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]mailsource.Status{}
	for _, k := range keys {
		if st, ok := s.committed[k]; ok {
			out[k] = st
		}
	}
	return out, nil
}

func (s *fakeSink) Receive(ctx context.Context, key string, _ int64, r io.Reader) (mailsource.Outcome, error) {
	defer s.enter()()
	var raw []byte
	var digest [32]byte
	if s.discard {
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return mailsource.Outcome{}, err
		}
		copy(digest[:], h.Sum(nil))
	} else {
		var err error
		if raw, err = io.ReadAll(r); err != nil {
			return mailsource.Outcome{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return mailsource.Outcome{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = append(s.received, key)
	out := mailsource.Outcome{Status: mailsource.StatusReceived}
	if bytes.Contains(raw, []byte("GARBAGE")) {
		out = mailsource.Outcome{Status: mailsource.StatusFailed, Reason: "unparseable"}
	}
	s.staged[key] = out.Status
	s.stagedRaw[key] = raw
	s.digests[key] = digest
	return out, nil
}

func (s *fakeSink) Oversize(_ context.Context, key string, _ int64) error {
	defer s.enter()()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oversize = append(s.oversize, key)
	s.staged[key] = mailsource.StatusFailed
	return nil
}

func (s *fakeSink) Commit(context.Context) error {
	defer s.enter()()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits++
	if s.failCommit > 0 {
		s.failCommit--
		s.staged = map[string]mailsource.Status{}
		s.stagedRaw = map[string][]byte{}
		return errors.New("fake sink: database unavailable")
	}
	for k, st := range s.staged {
		if _, dup := s.committed[k]; dup {
			return fmt.Errorf("fake sink: %s committed twice", k)
		}
		s.committed[k] = st
		if raw, ok := s.stagedRaw[k]; ok {
			s.bodies[k] = raw
		}
	}
	s.staged = map[string]mailsource.Status{}
	s.stagedRaw = map[string][]byte{}
	return nil
}

// keys returns the committed keys with status st, sorted.
func (s *fakeSink) keys(st mailsource.Status) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, v := range s.committed {
		if v == st {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// testMail is a small RFC 5322 message; body text makes it unique.
func testMail(body string) []byte {
	return []byte("From: sender@example.net\r\nTo: support@example.org\r\nSubject: " + body +
		"\r\nMessage-ID: <" + strings.ReplaceAll(body, " ", ".") + "@example.net>\r\n\r\n" + body + "\r\n")
}

func testMails(n int, prefix string) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = testMail(fmt.Sprintf("%s %d", prefix, i+1))
	}
	return out
}

// keysOf returns the source keys of immutable ids, sorted.
func keysOf(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = graphsource.SourceKey(id)
	}
	slices.Sort(out)
	return out
}

// staticTokens is a token source that hands out tok-1 and, after each
// rejection, the next number.
type staticTokens struct {
	mu       sync.Mutex
	n        int
	asked    int
	rejected []string
}

func (s *staticTokens) token(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked++
	return fmt.Sprintf("tok-%d", s.n+1), nil
}

func (s *staticTokens) reject(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected = append(s.rejected, tok)
	s.n++
}

// setup starts a fake Graph with the mailbox and returns a config for it.
func setup(t *testing.T, opts graphtest.Options) (*graphtest.Server, graphsource.Config, *staticTokens) {
	t.Helper()
	srv := graphtest.Start(t, opts)
	srv.AddMailbox(box)
	tokens := &staticTokens{}
	return srv, graphsource.Config{BaseURL: srv.URL, Mailbox: box, TokenSource: tokens.token, RejectToken: tokens.reject,
		Timeout: 20 * time.Second}, tokens
}

func mustNew(t testing.TB, cfg graphsource.Config) *graphsource.Fetcher {
	t.Helper()
	f, err := graphsource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func mustPoll(t testing.TB, f *graphsource.Fetcher, sink mailsource.Sink) mailsource.PollResult {
	t.Helper()
	res, err := f.Poll(context.Background(), sink)
	if err != nil {
		t.Fatalf("Poll() = %+v, %v", res, err)
	}
	return res
}

// noRequestWithoutImmutableID fails the test for every request that did
// not ask for immutable ids.
func noRequestWithoutImmutableID(t *testing.T, srv *graphtest.Server) {
	t.Helper()
	for _, r := range srv.WithoutImmutableID() {
		t.Errorf("%s %s was sent without Prefer: IdType=\"ImmutableId\" (Prefer: %q)", r.Method, r.Path, r.Prefer)
	}
}
