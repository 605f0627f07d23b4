package ingest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// plainOpener is a secret box that stores passwords as they are.
type plainOpener struct{}

func (plainOpener) Open(sealed string) (string, error) { return sealed, nil }

// TestFetcherFor_AllowedMailHosts: a host outside allowed_mail_hosts is
// refused before anything is dialled, and a host name that resolves
// outside the IP entries is refused when the fetcher dials, with no
// connection made; an allowed one connects.
func TestFetcherFor_AllowedMailHosts(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_, _ = c.Write([]byte("-ERR not today\r\n"))
			_ = c.Close()
		}
	}()
	_, portS, _ := net.SplitHostPort(ln.Addr().String())
	port, _ := strconv.Atoi(portS)

	tests := []struct {
		name     string
		protocol string // "" is POP3
		host     string
		allowed  []string
		// wantBuild: FetcherFor refuses; wantDial: Check refuses at the dial.
		wantBuild, wantDial bool
	}{
		{name: "no list: any host", host: "127.0.0.1"},
		{name: "an IP literal outside the list is refused at once", host: "127.0.0.1", allowed: []string{"10.0.0.0/8"}, wantBuild: true},
		{name: "a name outside every entry is refused at once", host: "localhost", allowed: []string{"mail.example.org"}, wantBuild: true},
		{name: "a name resolving outside the IP entries is refused at the dial", host: "localhost", allowed: []string{"10.0.0.0/8"}, wantDial: true},
		{name: "IMAP too is refused at the dial", protocol: domain.ProtocolIMAP, host: "localhost", allowed: []string{"10.0.0.0/8"}, wantDial: true},
		{name: "a name resolving inside an IP entry connects", host: "localhost", allowed: []string{"127.0.0.0/8", "::1"}},
		{name: "a name entry connects wherever it resolves", host: "localhost", allowed: []string{"localhost"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := accepted.Load()
			settings := domain.DefaultSettings()
			settings.AllowedMailHosts = tc.allowed
			protocol := tc.protocol
			if protocol == "" {
				protocol = domain.ProtocolPOP3
			}
			a := domain.InboundAccount{ID: "acc", Protocol: protocol, Host: tc.host, Port: port, Folder: "INBOX",
				Security: domain.SecurityNone, AllowPlaintextAuth: true, Username: "u", Password: "p", AfterImport: domain.AfterImportDelete}
			f, err := FetcherFor(a, settings, plainOpener{}, nil, nil, slog.New(slog.DiscardHandler))
			if tc.wantBuild {
				if !errors.Is(err, domain.ErrMailHostNotAllowed) {
					t.Fatalf("FetcherFor() error = %v, want ErrMailHostNotAllowed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("FetcherFor() error = %v", err)
			}
			err = f.Check(context.Background())
			if tc.wantDial {
				if !errors.Is(err, domain.ErrMailHostNotAllowed) {
					t.Errorf("Check() = %v, want ErrMailHostNotAllowed", err)
				}
				if accepted.Load() != before {
					t.Error("a connection was made to a host outside the list")
				}
				return
			}
			if mailsource.ServerReply(err) != "not today" {
				t.Errorf("Check() = %v, want the server's greeting refusal (so it connected)", err)
			}
		})
	}
}

// TestFetcherFor_FolderTreeAndTrash: an IMAP account's include_subfolders,
// only_subscribed and trash_folder reach the fetcher: the subscribed folder
// below INBOX is read, the unsubscribed one is not, and imported mail goes
// to the named trash on a server that marks none.
func TestFetcherFor_FolderTreeAndTrash(t *testing.T) {
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "tree", "pw")
	for _, f := range []string{"INBOX/Read", "INBOX/Unsubscribed"} {
		dv.CreateFolder(t, "tree", f)
		dv.DeliverManyTo(t, "tree", f, [][]byte{[]byte(testMail(len(f)))})
	}
	dv.Subscribe(t, "tree", "INBOX/Read")
	host, portS, _ := net.SplitHostPort(dv.IMAPAddr)
	port, _ := strconv.Atoi(portS)
	a := domain.InboundAccount{ID: "tree", Name: "tree", Protocol: domain.ProtocolIMAP, Host: host, Port: port,
		Security: domain.SecurityNone, AllowPlaintextAuth: true, Username: "tree", Password: "pw", Folder: "INBOX",
		IncludeSubfolders: true, OnlySubscribed: true, AfterImport: domain.AfterImportTrash, TrashFolder: "Deleted"}
	f, err := FetcherFor(a, domain.DefaultSettings(), plainOpener{}, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sink, _ := newTestSink(t, openBenchStore(t, "embedded"), "tree")
	res, err := f.Poll(context.Background(), sink)
	if err != nil || res.Fetched != 1 {
		t.Fatalf("Poll() = %+v, %v; want the one mail of INBOX.Read", res, err)
	}
	for folder, n := range map[string]int{"INBOX/Read": 0, "INBOX/Unsubscribed": 1, "Deleted": 1} {
		if got := dv.FolderCount(t, "tree", folder); got != n {
			t.Errorf("%s holds %d mails, want %d", folder, got, n)
		}
	}
}
