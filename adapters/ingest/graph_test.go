package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/graphsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// fakeConnections is the OAuth side of Graph accounts: a token that
// changes when one is refused, and a Graph root per connection.
type fakeConnections struct {
	graphURL string
	mu       sync.Mutex
	serial   int
	rejected []string
}

func (c *fakeConnections) token(_ context.Context, connectionID, protocol string) (string, error) {
	if connectionID != "conn-1" || protocol != domain.ProtocolGraph {
		return "", fmt.Errorf("token for %s/%s asked", connectionID, protocol)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("tok-%d", c.serial), nil
}

func (c *fakeConnections) GraphBaseURL(_ context.Context, connectionID string) (string, error) {
	if connectionID != "conn-1" {
		return "", errors.New("unknown connection")
	}
	return c.graphURL, nil
}

func (c *fakeConnections) ForgetAccessToken(_, _, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected = append(c.rejected, token)
	c.serial++
}

func graphAccount() domain.InboundAccount {
	return domain.InboundAccount{ID: "acc-graph", Name: "support", Protocol: domain.ProtocolGraph, Mailbox: "support@example.org",
		OAuthConnectionID: "conn-1", Subfolders: []string{"Inbox/Support"}, Enabled: true}.WithDefaults()
}

// TestFetcherFor_Graph drives a Graph account through FetcherFor and the
// real sink: the mails of the folder and its subfolder become MailReceived
// events keyed graph/<immutable id>, the mailbox is emptied, a refused
// token reaches the OAuth side, and check answers Graph's words.
func TestFetcherFor_Graph(t *testing.T) {
	t.Parallel()
	srv := graphtest.Start(t, graphtest.Options{})
	conns := &fakeConnections{graphURL: srv.URL}
	var ids []string
	for i := range 10 {
		ids = append(ids, srv.AddMessages("support@example.org", "Inbox", [][]byte{[]byte(testMail(i))})...)
		ids = append(ids, srv.AddMessages("support@example.org", "Inbox/Support", [][]byte{[]byte(testMail(100 + i))})...)
	}
	var once sync.Once
	srv.OnRequest(func(r graphtest.Request) {
		if r.Download() {
			once.Do(srv.RejectTokensSeen)
		}
	})
	a := graphAccount()
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	f, err := FetcherFor(a, domain.DefaultSettings(), nil, conns.token, conns, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Check(context.Background()); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	store := openBenchStore(t, "embedded")
	sink, _ := newTestSink(t, store, a.ID)
	res, err := f.Poll(context.Background(), sink)
	if err != nil || res.Fetched != 20 || res.Deleted != 20 {
		t.Fatalf("Poll() = %+v, %v; want 20 fetched and deleted", res, err)
	}
	var keys []string
	for _, e := range mailEvents(t, store)[domain.MailReceivedName] {
		var p struct {
			SourceKey string `json:"source_key"`
		}
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, p.SourceKey)
	}
	var want []string
	for _, id := range ids {
		want = append(want, graphsource.SourceKey(id))
	}
	slices.Sort(keys)
	slices.Sort(want)
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("MailReceived source keys (-want +got):\n%s", diff)
	}
	if n := srv.Count("support@example.org", "Inbox") + srv.Count("support@example.org", "Inbox/Support"); n != 0 {
		t.Errorf("%d mails left", n)
	}
	if diff := cmp.Diff([]string{"tok-0"}, conns.rejected); diff != "" {
		t.Errorf("tokens forgotten (-want +got):\n%s", diff)
	}
	if len(srv.WithoutImmutableID()) != 0 {
		t.Errorf("%d requests without Prefer: IdType=\"ImmutableId\"", len(srv.WithoutImmutableID()))
	}

	srv.Deny("support@example.org")
	if reply := mailsource.ServerReply(f.Check(context.Background())); reply != "ErrorAccessDenied: Access is denied. Check credentials and try again." {
		t.Errorf("Check() of a denied mailbox: reply %q", reply)
	}
}

func TestFetcherFor_GraphNeedsItsConnection(t *testing.T) {
	t.Parallel()
	conns := &fakeConnections{graphURL: "https://graph.microsoft.com"}
	noConn := graphAccount()
	noConn.OAuthConnectionID = ""
	settings := domain.DefaultSettings()
	settings.AllowedMailHosts = []string{"imap.example.org"} // names no Graph host, and need not
	for name, build := range map[string]func() error{
		"no connection": func() error {
			_, err := FetcherFor(noConn, settings, nil, conns.token, conns, slog.New(slog.DiscardHandler))
			return err
		},
		"no OAuth wiring": func() error {
			_, err := FetcherFor(graphAccount(), settings, nil, conns.token, nil, slog.New(slog.DiscardHandler))
			return err
		},
	} {
		if err := build(); !errors.Is(err, ErrCannotLogIn) {
			t.Errorf("%s: FetcherFor() = %v, want ErrCannotLogIn", name, err)
		}
	}
	if _, err := FetcherFor(graphAccount(), settings, nil, conns.token, conns, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("FetcherFor() = %v, want a fetcher whatever allowed_mail_hosts says", err)
	}
}

// TestFetcherFor_GraphTrashIsDeletedItems: after_import trash on a Graph
// account moves the mail to Deleted Items (Graph's delete), never purges.
func TestFetcherFor_GraphTrashIsDeletedItems(t *testing.T) {
	t.Parallel()
	srv := graphtest.Start(t, graphtest.Options{})
	conns := &fakeConnections{graphURL: srv.URL}
	srv.AddMessages("support@example.org", "Inbox", [][]byte{[]byte(testMail(1)), []byte(testMail(2))})
	a := graphAccount()
	a.Subfolders, a.AfterImport = nil, domain.AfterImportTrash
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	f, err := FetcherFor(a, domain.DefaultSettings(), nil, conns.token, conns, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sink, _ := newTestSink(t, openBenchStore(t, "embedded"), a.ID)
	if res, err := f.Poll(context.Background(), sink); err != nil || res.Fetched != 2 {
		t.Fatalf("Poll() = %+v, %v; want 2 fetched", res, err)
	}
	if inbox, trash, purged := srv.Count("support@example.org", "Inbox"), srv.Count("support@example.org", "Deleted Items"),
		srv.Purged("support@example.org"); inbox != 0 || trash != 2 || purged != 0 {
		t.Errorf("Inbox %d, Deleted Items %d, purged %d; want 0, 2, 0", inbox, trash, purged)
	}
}
