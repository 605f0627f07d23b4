package ingest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

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
