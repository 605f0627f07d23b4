package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
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

// appendFailing is a store whose appends fail once they touch stream: a
// commit that breaks off in the middle of a rotation.
type appendFailing struct {
	eventstore.Store
	stream string
}

func (s appendFailing) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	for _, r := range reqs {
		if r.Stream == s.stream {
			return eventstore.AppendResult{}, errors.New("simulated failure of the commit")
		}
	}
	return s.Store.Append(ctx, reqs...)
}

func TestSecretsRotate_AFailedCommitLosesNoSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServe(t, map[string]string{envDataDir: dir, envAdminToken: e2eToken})
	client := apiClient{tb: t, base: srv.URL}
	client.must(http.MethodPost, "/api/v1/inbound-accounts", map[string]any{"name": "support", "protocol": "imap",
		"host": "imap.example.com", "username": "support", "password": "inbound-pw", "enabled": false})
	client.must(http.MethodPost, "/api/v1/outbound-accounts", map[string]any{"name": "smtp", "default": true,
		"host": "smtp.example.com", "port": 587, "security": "starttls", "auth": "plain", "username": "support",
		"password": "outbound-pw", "sender_address": "support@example.com"})
	client.must(http.MethodPost, "/api/v1/oauth-connections", map[string]any{"name": "m365",
		"provider": "microsoft365", "tenant_id": "contoso.example", "client_id": "cid", "client_secret": "client-secret"})
	if code := srv.Stop(t); code != exitOK {
		t.Fatalf("serve exit %d", code)
	}
	ctx := context.Background()
	cfg := &config{DataDir: dir, LogFormat: "json"}
	logger := slog.New(slog.DiscardHandler)
	oldKey, err := loadSecretKey(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	newKey := bytes.Repeat([]byte{0x42}, 32)

	// when the commit fails after the inbound accounts were re-sealed
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	r := keyRotation{store: appendFailing{Store: st, stream: ticketing.OutboundAccountsStream}, now: time.Now,
		oldKey: oldKey, newKey: newKey, keyDir: dir}
	err = r.run(ctx, io.Discard)
	_ = st.Close()
	if err == nil {
		t.Fatal("rotation with a failing commit = nil error, want the failure")
	}

	// then every secret opens with the keys on disk
	openAll := func(when string) {
		t.Helper()
		var keys [][]byte
		for _, name := range []string{secretKeyFile, secretKeyFile + ".previous"} {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				continue
			}
			k, err := decodeSecretKey(string(raw))
			if err != nil {
				t.Fatalf("%s: %s: %v", when, name, err)
			}
			keys = append(keys, k)
		}
		box, err := secretbox.New(keys[0], keys[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		st, err := openStore(ctx, cfg, logger)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = st.Close() }()
		in, _, err := api.LoadInboundAccounts(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := api.LoadOutboundAccounts(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		conns, _, err := api.LoadOAuthConnections(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		var sealed []string
		for _, a := range in.ByID {
			sealed = append(sealed, a.Password)
		}
		for _, a := range out.ByID {
			sealed = append(sealed, a.Password)
		}
		for _, c := range conns.ByID {
			sealed = append(sealed, c.ClientSecret)
		}
		var got []string
		for _, s := range sealed {
			plain, err := box.Open(s)
			if err != nil {
				t.Errorf("%s: a secret does not open with the %d key(s) on disk: %v", when, len(keys), err)
			}
			got = append(got, plain)
		}
		sort.Strings(got)
		if want := []string{"client-secret", "inbound-pw", "outbound-pw"}; !slices.Equal(got, want) {
			t.Errorf("%s: secrets = %q, want %q", when, got, want)
		}
	}
	openAll("after the failed commit")
	// and serve does not start on half a rotation; it says how to finish
	if _, err := loadSecretKey(cfg, logger); err == nil || !strings.Contains(err.Error(), "ledgerdesk secrets rotate") {
		t.Errorf("loadSecretKey() during an unfinished rotation = %v, want it to say to run secrets rotate", err)
	}

	// and running the rotation again finishes it: one key opens everything
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"secrets", "rotate"}, envOf(map[string]string{envDataDir: dir}), &stdout, &stderr); code != exitOK {
		t.Fatalf("rotate again = %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, secretKeyFile+".previous")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the previous key is still kept after a finished rotation: %v", err)
	}
	openAll("after the rotation finished")
}
