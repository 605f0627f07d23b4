package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// rotationActor names the key rotation in the accounts' history.
const rotationActor = "system:secret-key-rotation"

func runSecrets(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rotate" {
		fmt.Fprint(stderr, "Usage: ledgerdesk secrets rotate [flags]\n\nRun 'ledgerdesk secrets rotate --help' for the flags.\n")
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			return errHelpShown
		}
		return errUsage
	}
	fs := newFlagSet("secrets rotate", "Re-seal every stored secret (inbound and outgoing mailbox passwords, OAuth secrets and tokens) under a new key.\n"+
		"The current key comes from "+envSecretKey+" (or, in embedded mode, the key file in the data directory);\n"+
		"the new one from --new-key. In embedded mode a new key is generated when --new-key is omitted, and the key\n"+
		"file is replaced once every secret is re-sealed. With PostgreSQL, set "+envSecretKey+" to the new key\n"+
		"afterwards. Each re-sealed account gets an update event in its history, naming the rotation as the actor.", stderr)
	cfg := bindConfig(fs, getenv, false)
	newKeyText := fs.String("new-key", "", "the new 32-byte key, base64 or hex")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if err := cfg.validate(false); err != nil {
		return err
	}
	logger := newLogger(cfg.LogFormat, stderr)
	oldKey, err := loadSecretKey(cfg, logger)
	if err != nil {
		return err
	}
	var newKey []byte
	switch {
	case *newKeyText != "":
		if newKey, err = decodeSecretKey(*newKeyText); err != nil {
			return &configError{problems: []error{fmt.Errorf("--new-key: %w", err)}}
		}
	case cfg.DatabaseURL == "" && cfg.SecretKey == "":
		newKey = make([]byte, 32)
		if _, err := rand.Read(newKey); err != nil {
			return fmt.Errorf("generate a new key: %w", err)
		}
	default:
		return &configError{problems: []error{errors.New("--new-key: required unless the key lives in the data directory")}}
	}
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	r := keyRotation{store: st, now: time.Now, oldKey: oldKey, newKey: newKey}
	if cfg.DatabaseURL == "" && cfg.SecretKey == "" {
		r.keyDir = cfg.DataDir
	}
	return r.run(ctx, stdout)
}

// keyRotation is one run of secrets rotate: every stored secret sealed
// under oldKey is sealed again under newKey.
type keyRotation struct {
	store          eventstore.Store
	now            func() time.Time
	oldKey, newKey []byte
	// keyDir is the data directory when the key lives in its key file
	// (embedded mode without LEDGERDESK_SECRET_KEY); "" when the operator
	// holds the key.
	keyDir string
}

func (r keyRotation) run(ctx context.Context, stdout io.Writer) error {
	box, err := secretbox.New(r.newKey, r.oldKey)
	if err != nil {
		return err
	}
	n, err := resealAll(ctx, r.store, box, r.now)
	if err != nil {
		return err
	}
	if r.keyDir != "" {
		if err := replaceKeyFile(r.keyDir, r.newKey); err != nil {
			return fmt.Errorf("all secrets are re-sealed but the key file could not be replaced; set %s to the new key: %w", envSecretKey, err)
		}
		fmt.Fprintf(stdout, "re-sealed the secrets of %d account(s) and OAuth connection(s); the new key is in %s\n", n, filepath.Join(r.keyDir, secretKeyFile))
		return nil
	}
	fmt.Fprintf(stdout, "re-sealed the secrets of %d account(s) and OAuth connection(s); now set %s to the new key and restart\n", n, envSecretKey)
	return nil
}

// resealAll re-seals the secrets of the inbound and outgoing accounts and
// of the OAuth connections, each registry in one append.
func resealAll(ctx context.Context, st eventstore.Store, box *secretbox.Box, now func() time.Time) (int, error) {
	n, err := resealInboundAccounts(ctx, st, box, now)
	if err != nil {
		return n, err
	}
	m, err := resealOutboundAccounts(ctx, st, box, now)
	n += m
	if err != nil {
		return n, err
	}
	m, err = resealOAuthConnections(ctx, st, box, now)
	return n + m, err
}

// errHelpShown is returned after printing help for a command without a flag set.
var errHelpShown = errors.New("help")

// resealInboundAccounts appends an update for every inbound account holding
// a secret sealed with an older key.
func resealInboundAccounts(ctx context.Context, store eventstore.Store, box *secretbox.Box, now func() time.Time) (int, error) {
	accounts, version, err := api.LoadInboundAccounts(ctx, store)
	if err != nil {
		return 0, err
	}
	return reseal(ctx, store, box, now, api.AccountsStream, version, accounts.ByID,
		func(a *domain.InboundAccount) []*string {
			return []*string{&a.Password, &a.OAuthClientSecret, &a.OAuthRefreshToken}
		},
		func(a domain.InboundAccount) ([]domain.Event, error) {
			return domain.DecideUpdateInboundAccount(accounts, a, rotationActor)
		})
}

// resealOutboundAccounts does the same for the outgoing (SMTP) accounts.
func resealOutboundAccounts(ctx context.Context, store eventstore.Store, box *secretbox.Box, now func() time.Time) (int, error) {
	accounts, version, err := api.LoadOutboundAccounts(ctx, store)
	if err != nil {
		return 0, err
	}
	return reseal(ctx, store, box, now, ticketing.OutboundAccountsStream, version, accounts.ByID,
		func(a *domain.OutboundAccount) []*string {
			return []*string{&a.Password, &a.OAuthClientSecret, &a.OAuthRefreshToken}
		},
		func(a domain.OutboundAccount) ([]domain.Event, error) {
			return domain.DecideUpdateOutboundAccount(accounts, a, rotationActor)
		})
}

// resealOAuthConnections re-seals the client secrets of the OAuth
// connections and the refresh token of each connection's token stream.
func resealOAuthConnections(ctx context.Context, store eventstore.Store, box *secretbox.Box, now func() time.Time) (int, error) {
	conns, version, err := api.LoadOAuthConnections(ctx, store)
	if err != nil {
		return 0, err
	}
	n, err := reseal(ctx, store, box, now, domain.OAuthConnectionsStream, version, conns.ByID,
		func(c *domain.OAuthConnection) []*string { return []*string{&c.ClientSecret} },
		func(c domain.OAuthConnection) ([]domain.Event, error) {
			return domain.DecideUpdateOAuthConnection(conns, c, rotationActor)
		})
	if err != nil {
		return 0, err
	}
	for _, id := range sortedIDs(conns.ByID) {
		stream := domain.OAuthTokenStream(id)
		evs, err := store.ReadStream(ctx, stream, 1, 0)
		if err != nil {
			return n, fmt.Errorf("read %s: %w", stream, err)
		}
		state := domain.InitialTokenState(conns.ByID[id])
		var tokenVersion int64
		for _, re := range evs {
			ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
			if err != nil {
				return n, fmt.Errorf("read %s: event %d: %w", stream, re.StreamVersion, err)
			}
			state, tokenVersion = domain.EvolveOAuthToken(state, ev), re.StreamVersion
		}
		if !box.NeedsReseal(state.RefreshToken) {
			continue
		}
		resealed, err := box.Reseal(state.RefreshToken)
		if err != nil {
			return n, fmt.Errorf("connection %s: refresh token: %w", id, err)
		}
		ne, err := encodeEvents([]domain.Event{domain.OAuthRefreshTokenResealed{ConnectionID: id, RefreshToken: resealed,
			At: now().UTC(), Actor: rotationActor}}, now)
		if err != nil {
			return n, err
		}
		// At the version read: a refresh in between (serve still running)
		// fails the rotation instead of being overwritten; run it again.
		if _, err := store.Append(ctx, eventstore.AppendRequest{Stream: stream, ExpectedVersion: tokenVersion, Events: ne}); err != nil {
			return n, fmt.Errorf("record the re-sealed refresh token of %s: %w", id, err)
		}
		n++
	}
	return n, nil
}

func sortedIDs[V any](m map[string]V) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// reseal re-seals the secrets of every account of one registry stream and
// appends the updates at the version it read, so a concurrent change
// through the API makes the rotation fail rather than overwrite it; run it
// again then.
func reseal[A any](ctx context.Context, store eventstore.Store, box *secretbox.Box, now func() time.Time,
	stream string, version int64, byID map[string]A, secrets func(*A) []*string, decide func(A) ([]domain.Event, error),
) (int, error) {
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var news []eventstore.NewEvent
	for _, id := range ids {
		a := byID[id]
		changed := false
		for _, secret := range secrets(&a) {
			if box.NeedsReseal(*secret) {
				resealed, err := box.Reseal(*secret)
				if err != nil {
					return 0, fmt.Errorf("%s account %s: %w", stream, id, err)
				}
				*secret, changed = resealed, true
			}
		}
		if !changed {
			continue
		}
		evs, err := decide(a)
		if err != nil {
			return 0, fmt.Errorf("%s account %s: %w", stream, id, err)
		}
		ne, err := encodeEvents(evs, now)
		if err != nil {
			return 0, err
		}
		news = append(news, ne...)
	}
	if len(news) == 0 {
		return 0, nil
	}
	if _, err := store.Append(ctx, eventstore.AppendRequest{Stream: stream, ExpectedVersion: version, Events: news}); err != nil {
		return 0, fmt.Errorf("record re-sealed %s: %w", stream, err)
	}
	return len(news), nil
}

func encodeEvents(evs []domain.Event, now func() time.Time) ([]eventstore.NewEvent, error) {
	return encodeEventsAs(evs, now, rotationActor)
}

// encodeEventsAs encodes events of a system actor for the store.
func encodeEventsAs(evs []domain.Event, now func() time.Time, actor string) ([]eventstore.NewEvent, error) {
	out := make([]eventstore.NewEvent, 0, len(evs))
	for _, e := range evs {
		name, v, payload, err := domain.MarshalEvent(e)
		if err != nil {
			return nil, err
		}
		out = append(out, eventstore.NewEvent{Type: name, SchemaVersion: v, Payload: payload,
			Metadata: eventstore.Metadata{Actor: actor, OccurredAt: now().UTC()}})
	}
	return out, nil
}

// replaceKeyFile swaps the key file atomically, keeping mode 0600.
func replaceKeyFile(dataDir string, key []byte) error {
	path := filepath.Join(dataDir, secretKeyFile)
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
