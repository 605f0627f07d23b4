package dovecottest_test

import (
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
)

func TestServer_WhoAndKick(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t)
	s.AddUser(t, "carol", "pw-carol")
	s.AddUser(t, "dave", "pw-dave")
	if n := s.Connections(t, "carol", "imap"); n != 0 {
		t.Fatalf("Connections(carol) before any login = %d, want 0", n)
	}
	c, err := imapclient.DialInsecure(s.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Login("carol", "pw-carol").Wait(); err != nil {
		t.Fatal(err)
	}
	if n := s.Connections(t, "carol", "imap"); n != 1 {
		t.Fatalf("Connections(carol) after a login = %d, want 1 (who: %v)", n, s.Who(t))
	}
	if n := s.Connections(t, "dave", "imap"); n != 0 {
		t.Errorf("Connections(dave) = %d, want 0", n)
	}
	s.Kick(t, "carol")
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("the kicked connection is still open after 10s")
	}
	if n := s.Connections(t, "carol", "imap"); n != 0 {
		t.Errorf("Connections(carol) after Kick = %d, want 0", n)
	}
}
