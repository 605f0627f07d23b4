package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// TestServe_MovesInlineOAuthOntoConnections starts serve on a store written
// by an earlier version, whose accounts kept their OAuth fields inline: the
// fields move onto one connection (both accounts had the same), its refresh
// token becomes the connection's, and a second start changes nothing.
func TestServe_MovesInlineOAuthOntoConnections(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := strings.Repeat("5a", 32)
	env := map[string]string{envDataDir: dir, envSecretKey: key, envAdminToken: e2eToken}
	if code := run(context.Background(), []string{"migrate"}, envOf(env), io.Discard, io.Discard); code != exitOK {
		t.Fatalf("migrate = %d", code)
	}
	k, _ := decodeSecretKey(key)
	box, _ := secretbox.New(k)
	sealedRefresh, _ := box.Seal("legacy-refresh-token")
	sealedSecret, _ := box.Seal("legacy-client-secret")
	inline := func(a *domain.InboundAccount) {
		a.OAuthTenantID, a.OAuthClientID, a.OAuthClientSecret, a.OAuthRefreshToken = "contoso.example", "cid", sealedSecret, sealedRefresh
	}
	in := domain.InboundAccount{ID: "in-1", Name: "support", Enabled: false, Protocol: "imap", Host: "outlook.office365.com",
		Port: 993, Security: "tls", Username: "support@contoso.example", AfterImport: "delete", Folder: "INBOX", PollIntervalSeconds: 300}
	inline(&in)
	out := domain.OutboundAccount{ID: "out-1", Name: "smtp", Enabled: true, Default: true, Protocol: "smtp", Host: "smtp.office365.com",
		Port: 587, Security: "starttls", Auth: "xoauth2", Username: "support@contoso.example", SenderAddress: "support@contoso.example",
		OAuthTenantID: in.OAuthTenantID, OAuthClientID: in.OAuthClientID, OAuthClientSecret: sealedSecret, OAuthRefreshToken: sealedRefresh,
		BodyEncoding: "quoted-printable"}
	appendLegacy(t, dir, api.AccountsStream, domain.InboundAccountCreated{Account: in, Actor: "admin"})
	appendLegacy(t, dir, ticketing.OutboundAccountsStream, domain.OutboundAccountCreated{Account: out, Actor: "admin"})

	for start := range 2 {
		srv := startServe(t, env)
		c := apiClient{tb: t, base: srv.URL}
		var acc map[string]any
		_ = json.Unmarshal(c.must(http.MethodGet, "/api/v1/inbound-accounts/in-1", nil), &acc)
		connID, _ := acc["oauth_connection_id"].(string)
		if connID == "" || acc["oauth_tenant_id"] != nil || acc["oauth_refresh_token_set"] != false {
			t.Fatalf("start %d: inbound account after the move: %v", start, acc)
		}
		var outAcc map[string]any
		_ = json.Unmarshal(c.must(http.MethodGet, "/api/v1/outbound-accounts/out-1", nil), &outAcc)
		if outAcc["oauth_connection_id"] != connID {
			t.Errorf("start %d: outbound account names %v, want the same connection %s", start, outAcc["oauth_connection_id"], connID)
		}
		var list struct {
			Items []struct {
				ID, Provider, Flow, TenantID string
				TokenState                   string `json:"token_state"`
				UsedBy                       []any  `json:"used_by"`
			} `json:"items"`
		}
		_ = json.Unmarshal(c.must(http.MethodGet, "/api/v1/oauth-connections", nil), &list)
		if len(list.Items) != 1 || list.Items[0].ID != connID || list.Items[0].Flow != "delegated" ||
			list.Items[0].TokenState != domain.TokenStateOK || len(list.Items[0].UsedBy) != 2 {
			t.Errorf("start %d: connections %+v", start, list.Items)
		}
		if !strings.Contains(string(c.must(http.MethodGet, "/api/v1/oauth-connections/"+connID+"/history", nil)), inlineOAuthActor) {
			t.Errorf("start %d: the connection's history does not name %s", start, inlineOAuthActor)
		}
		if code := srv.Stop(t); code != exitOK {
			t.Fatalf("serve exit %d", code)
		}
	}
}

func appendLegacy(t *testing.T, dir, stream string, e domain.Event) {
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
	if !bytes.Contains(payload, []byte("oauth_refresh_token")) {
		t.Fatalf("the legacy event carries no inline refresh token: %s", payload)
	}
	if _, err := store.Append(context.Background(), eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{{Type: name, SchemaVersion: v, Payload: payload}}}); err != nil {
		t.Fatal(err)
	}
}
