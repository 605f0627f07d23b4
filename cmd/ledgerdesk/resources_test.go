package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// appendStored appends e to stream of the embedded store in dir, as an
// earlier version would have.
func appendStored(t *testing.T, dir, stream string, e domain.Event) {
	t.Helper()
	db, err := embedded.OpenDB(filepath.Join(dir, "ledgerdesk.db"))
	if err != nil {
		t.Fatal(err)
	}
	store := embedded.New(db, slog.New(slog.DiscardHandler))
	defer func() { _ = store.Close() }()
	name, v, payload, err := domain.MarshalEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(context.Background(), eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{{Type: name, SchemaVersion: v, Payload: payload}}}); err != nil {
		t.Fatal(err)
	}
}

// TestServe_MakesLegacyResourceNamesIntoResources starts serve on a store
// whose accounts name resources as bare strings, as earlier versions
// stored them: each string becomes a resource with that id, the accounts
// keep naming it, and a second start changes nothing.
func TestServe_MakesLegacyResourceNamesIntoResources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := map[string]string{envDataDir: dir, envSecretKey: strings.Repeat("6b", 32), envAdminToken: e2eToken}
	if code := run(context.Background(), []string{"migrate"}, envOf(env), io.Discard, io.Discard); code != exitOK {
		t.Fatalf("migrate = %d", code)
	}
	in := domain.InboundAccount{ID: "in-1", Name: "support", Protocol: "imap", Host: "imap.example.org", Port: 993, Security: "tls",
		Username: "support", AfterImport: "delete", Folder: "INBOX", PollIntervalSeconds: 300, Resource: "1st level"}
	out := domain.OutboundAccount{ID: "out-1", Name: "smtp", Enabled: true, Default: true, Protocol: "smtp", Host: "smtp.example.org",
		Port: 587, Security: "starttls", Auth: "none", SenderAddress: "support@example.org", BodyEncoding: "quoted-printable",
		Resources: []string{"1st level", "2nd level"}}
	appendStored(t, dir, api.AccountsStream, domain.InboundAccountCreated{Account: in, Actor: "admin"})
	appendStored(t, dir, ticketing.OutboundAccountsStream, domain.OutboundAccountCreated{Account: out, Actor: "admin"})

	for start := range 2 {
		srv := startServe(t, env)
		c := apiClient{tb: t, base: srv.URL}
		var list struct{ Items []domain.Resource }
		if err := json.Unmarshal(c.must(http.MethodGet, "/api/v1/resources", nil), &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 2 || list.Items[0].ID != "1st level" || list.Items[0].Name != "1st level" || list.Items[1].ID != "2nd level" {
			t.Errorf("start %d: resources = %+v, want 1st level and 2nd level, named by their ids", start, list.Items)
		}
		var h struct{ Items []struct{ Actor string } }
		_ = json.Unmarshal(c.must(http.MethodGet, "/api/v1/resources/1st%20level/history", nil), &h)
		if len(h.Items) != 1 || h.Items[0].Actor != legacyResourcesActor {
			t.Errorf("start %d: history of 1st level = %+v, want one creation by %s", start, h.Items, legacyResourcesActor)
		}
		// The account's reference still names a resource: it can be changed
		// without touching it.
		c.must(http.MethodPut, "/api/v1/inbound-accounts/in-1", map[string]any{"description": "changed"})
		srv.Stop(t)
	}
}
