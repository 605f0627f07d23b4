package faultproxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/faultproxy"
)

var errShortLiteral = errors.New("connection cut mid-mail")

// fetchAll logs in through addr and streams every mail in INBOX with UID
// FETCH BODY.PEEK[], returning the bodies. It shows how a fetcher must
// treat go-imap v2.0.0-beta.8 when the connection breaks mid-mail:
//   - a cut literal reads as a clean io.EOF, so only comparing the bytes
//     read with Literal.Size() reveals it;
//   - after that, FetchCommand.Close (and FetchMessageData.Next) read the
//     connection's buffer concurrently with the client's reader goroutine,
//     which the race detector reports; closing the client alone is safe.
func fetchAll(addr string) ([][]byte, error) {
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Login("alice", "pw").Wait(); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	fc := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}},
		&imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	var bodies [][]byte
	for m := fc.Next(); m != nil; m = fc.Next() {
		for it := m.Next(); it != nil; it = m.Next() {
			b, ok := it.(imapclient.FetchItemDataBodySection)
			if !ok || b.Literal == nil {
				continue
			}
			var buf bytes.Buffer
			n, err := io.Copy(&buf, b.Literal)
			// Not fc.Close() after either error: see above. The deferred
			// c.Close ends it.
			if err != nil {
				return bodies, fmt.Errorf("%w: %d of %d bytes: %w", errShortLiteral, n, b.Literal.Size(), err)
			}
			if n != b.Literal.Size() {
				return bodies, fmt.Errorf("%w: %d of %d bytes", errShortLiteral, n, b.Literal.Size())
			}
			bodies = append(bodies, buf.Bytes())
		}
	}
	if err := fc.Close(); err != nil {
		return bodies, fmt.Errorf("fetch: %w", err)
	}
	return bodies, nil
}

// TestProxy_CutsAnIMAPDownloadMidMail is the use the proxy exists for: a
// real Dovecot, a download cut in the middle of a mail, then a clean retry.
func TestProxy_CutsAnIMAPDownloadMidMail(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t)
	s.AddUser(t, "alice", "pw")
	big := []byte("From: a@example.com\r\nSubject: big\r\n\r\n" + string(bytes.Repeat([]byte("0123456789abcdef\r\n"), 20_000)))
	s.DeliverMany(t, "alice", [][]byte{big, big})
	p := faultproxy.Start(t, s.IMAPAddr)

	// Greeting, login and select take a few KB; each mail is 360 KB.
	for _, tc := range []struct {
		cut       int64
		wantMails int
	}{{100_000, 0}, {400_000, 1}} {
		before := p.Cuts()
		p.CutAfterBytes(tc.cut)
		bodies, err := fetchAll(p.Addr())
		if !errors.Is(err, errShortLiteral) || len(bodies) != tc.wantMails {
			t.Fatalf("fetch cut after %d bytes = %d mails, %v; want %d and a mail cut short", tc.cut, len(bodies), err, tc.wantMails)
		}
		for _, b := range bodies {
			if !bytes.Equal(b, big) {
				t.Errorf("a mail before the cut is not intact (%d bytes)", len(b))
			}
		}
		if p.Cuts() != before+1 {
			t.Fatalf("Cuts() = %d, want %d", p.Cuts(), before+1)
		}
	}
	p.Reset()
	bodies, err := fetchAll(p.Addr())
	if err != nil {
		t.Fatalf("fetch after Reset: %v", err)
	}
	if len(bodies) != 2 || !bytes.Equal(bodies[0], big) || !bytes.Equal(bodies[1], big) {
		t.Errorf("got %d mails after Reset, want both intact", len(bodies))
	}
	if p.Connections() != 3 {
		t.Errorf("Connections() = %d, want 3", p.Connections())
	}
}
