package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
)

func TestSecretsRotate_ResealsEveryPasswordUnderTheNewKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServe(t, map[string]string{envDataDir: dir, envAdminToken: e2eToken})
	client := apiClient{tb: t, base: srv.URL}
	client.must(http.MethodPost, "/api/v1/inbound-accounts", map[string]any{"name": "support", "protocol": "imap",
		"host": "imap.example.com", "username": "support", "password": "pässwort-1", "enabled": false})
	client.must(http.MethodPost, "/api/v1/outbound-accounts", map[string]any{"name": "smtp", "default": true,
		"host": "smtp.example.com", "port": 587, "security": "starttls", "auth": "plain", "username": "support",
		"password": "smtp-secret-2", "sender_address": "support@example.com"})
	var conn struct {
		Connection struct {
			ID string `json:"id"`
		} `json:"connection"`
	}
	if err := json.Unmarshal(client.must(http.MethodPost, "/api/v1/oauth-connections", map[string]any{"name": "m365",
		"provider": "microsoft365", "tenant_id": "contoso.example", "client_id": "cid", "client_secret": "client-secret-3"}), &conn); err != nil {
		t.Fatal(err)
	}
	if code := srv.Stop(t); code != exitOK {
		t.Fatalf("serve exit %d", code)
	}
	oldKey, _ := os.ReadFile(filepath.Join(dir, secretKeyFile))
	// a consent's refresh token, sealed under the old key
	appendSealedRefreshToken(t, dir, oldKey, conn.Connection.ID, "refresh-token-4")

	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"secrets", "rotate"}, envOf(map[string]string{envDataDir: dir}), &out, &errb); code != exitOK {
		t.Fatalf("secrets rotate = %d; stderr:\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "re-sealed the secrets of 4 account(s) and OAuth connection(s)") {
		t.Errorf("rotate printed %q", out.String())
	}
	newKeyText, _ := os.ReadFile(filepath.Join(dir, secretKeyFile))
	if bytes.Equal(oldKey, newKeyText) {
		t.Fatal("the key file was not replaced")
	}
	newKey, err := decodeSecretKey(string(newKeyText))
	if err != nil {
		t.Fatal(err)
	}
	db, err := embedded.OpenDB(filepath.Join(dir, "ledgerdesk.db"))
	if err != nil {
		t.Fatal(err)
	}
	store := embedded.New(db, slog.New(slog.DiscardHandler))
	defer func() { _ = store.Close() }()
	accounts, _, err := api.LoadInboundAccounts(context.Background(), store)
	if err != nil || len(accounts.ByID) != 1 {
		t.Fatalf("accounts = %v, %v", accounts, err)
	}
	box, _ := secretbox.New(newKey)
	for _, a := range accounts.ByID {
		if got, err := box.Open(a.Password); err != nil || got != "pässwort-1" {
			t.Errorf("password under the new key = %q, %v", got, err)
		}
	}
	outbound, _, err := api.LoadOutboundAccounts(context.Background(), store)
	if err != nil || len(outbound.ByID) != 1 {
		t.Fatalf("outbound accounts = %v, %v", outbound, err)
	}
	for _, a := range outbound.ByID {
		if got, err := box.Open(a.Password); err != nil || got != "smtp-secret-2" {
			t.Errorf("outgoing password under the new key = %q, %v", got, err)
		}
	}
	conns, _, err := api.LoadOAuthConnections(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := box.Open(conns.ByID[conn.Connection.ID].ClientSecret); err != nil || got != "client-secret-3" {
		t.Errorf("client secret under the new key = %q, %v", got, err)
	}
	tokenEvents, _ := store.ReadStream(context.Background(), domain.OAuthTokenStream(conn.Connection.ID), 1, 0)
	state := domain.OAuthTokenState{}
	for _, re := range tokenEvents {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			t.Fatal(err)
		}
		state = domain.EvolveOAuthToken(state, ev)
	}
	if got, err := box.Open(state.RefreshToken); err != nil || got != "refresh-token-4" || state.State != domain.TokenStateOK {
		t.Errorf("refresh token under the new key = %q, %v (state %s)", got, err, state.State)
	}
	evs, _ := store.ReadStream(context.Background(), api.AccountsStream, 1, 0)
	if last := evs[len(evs)-1]; last.Metadata.Actor != rotationActor {
		t.Errorf("last account event actor = %q, want %q", last.Metadata.Actor, rotationActor)
	}
	// Nothing left to re-seal: a second rotation is harmless.
	out.Reset()
	if code := run(context.Background(), []string{"secrets", "rotate"}, envOf(map[string]string{envDataDir: dir}), &out, &errb); code != exitOK {
		t.Fatalf("second rotate = %d: %s", code, errb.String())
	}
}

func appendSealedRefreshToken(t *testing.T, dir string, keyText []byte, connectionID, token string) {
	t.Helper()
	key, err := decodeSecretKey(string(keyText))
	if err != nil {
		t.Fatal(err)
	}
	box, _ := secretbox.New(key)
	sealed, err := box.Seal(token)
	if err != nil {
		t.Fatal(err)
	}
	db, err := embedded.OpenDB(filepath.Join(dir, "ledgerdesk.db"))
	if err != nil {
		t.Fatal(err)
	}
	store := embedded.New(db, slog.New(slog.DiscardHandler))
	defer func() { _ = store.Close() }()
	name, v, payload, err := domain.MarshalEvent(domain.OAuthConnectionAuthorized{ConnectionID: connectionID, RefreshToken: sealed,
		At: time.Now().UTC(), Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(context.Background(), eventstore.AppendRequest{Stream: domain.OAuthTokenStream(connectionID),
		ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{{Type: name, SchemaVersion: v, Payload: payload}}}); err != nil {
		t.Fatal(err)
	}
}
