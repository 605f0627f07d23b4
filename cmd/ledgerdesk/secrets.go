package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
		"The current key comes from "+envSecretKey+" or "+envSecretKeyFile+" (or, in embedded mode, the key file in the\n"+
		"data directory); the new one from --new-key-file. In embedded mode a new key is generated when none is given:\n"+
		"the old key is kept in "+previousKeyFile+" and the new one written to "+secretKeyFile+" before anything is\n"+
		"re-sealed, and the old one removed once every secret is; run the command again to finish a rotation that\n"+
		"broke off. With PostgreSQL, set "+envSecretKey+" to the new key afterwards. Each re-sealed account gets an update\n"+
		"event in its history, naming the rotation as the actor.", stderr)
	cfg := bindConfig(fs, getenv, false)
	newKeyFile := fs.String("new-key-file", "", "file holding the new 32-byte key, base64 or hex; - reads it from standard input")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if err := cfg.validate(false); err != nil {
		return err
	}
	logger := newLogger(cfg.LogFormat, stderr)
	var given []byte
	if *newKeyFile != "" {
		text, err := readSecretFile(*newKeyFile)
		if err == nil {
			given, err = decodeSecretKey(text)
		}
		if err != nil {
			return &configError{problems: []error{fmt.Errorf("--new-key-file: %w", err)}}
		}
	}
	r := keyRotation{now: time.Now, newKey: given}
	if cfg.DatabaseURL == "" && cfg.SecretKey == "" {
		// The key lives in the data directory: a rotation that did not
		// finish left the new key in the key file and the old one beside
		// it, and is finished rather than started again.
		r.keyDir = cfg.DataDir
		cur, prev, err := readKeyFiles(cfg.DataDir)
		if err != nil {
			return err
		}
		if prev != nil {
			if given != nil && !bytes.Equal(given, cur) {
				return &configError{problems: []error{fmt.Errorf("--new-key-file: a rotation to another key is not finished (%s is there); "+
					"run 'ledgerdesk secrets rotate' without a new key to finish it first", filepath.Join(cfg.DataDir, previousKeyFile))}}
			}
			r.oldKey, r.newKey, r.resume = prev, cur, true
			logger.Warn("finishing an unfinished key rotation", "previous_key", filepath.Join(cfg.DataDir, previousKeyFile))
		}
	}
	if !r.resume {
		oldKey, err := loadSecretKey(cfg, logger)
		if err != nil {
			return err
		}
		r.oldKey = oldKey
		switch {
		case r.newKey != nil:
		case r.keyDir != "":
			r.newKey = make([]byte, 32)
			if _, err := rand.Read(r.newKey); err != nil {
				return fmt.Errorf("generate a new key: %w", err)
			}
		default:
			return &configError{problems: []error{errors.New("--new-key-file: required unless the key lives in the data directory")}}
		}
	}
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	r.store = st
	return r.run(ctx, stdout)
}

// keyRotation is one run of secrets rotate: every stored secret sealed
// under oldKey is sealed again under newKey.
//
// When the key lives in the data directory the new key must never be
// lost once a secret is sealed under it, so the order is: the old key is
// written (and synced) to secret.key.previous, the new one to secret.key;
// then every re-sealed secret commits in one transaction; then the
// previous key goes. Whatever fails or crashes in between, the two files
// open every secret, and running the rotation again finishes it (resume).
type keyRotation struct {
	store          eventstore.Store
	now            func() time.Time
	oldKey, newKey []byte
	// keyDir is the data directory when the key lives in its key file
	// (embedded mode without LEDGERDESK_SECRET_KEY); "" when the operator
	// holds the key.
	keyDir string
	// resume: the key files are written already (an unfinished rotation).
	resume bool
}

func (r keyRotation) run(ctx context.Context, stdout io.Writer) error {
	box, err := secretbox.New(r.newKey, r.oldKey)
	if err != nil {
		return err
	}
	if r.keyDir != "" && !r.resume {
		if err := writeKeyFile(r.keyDir, previousKeyFile, r.oldKey); err != nil {
			return fmt.Errorf("keep the current key before the rotation: %w", err)
		}
		if err := writeKeyFile(r.keyDir, secretKeyFile, r.newKey); err != nil {
			return fmt.Errorf("write the new key (nothing is re-sealed; %s still holds the current key): %w",
				filepath.Join(r.keyDir, previousKeyFile), err)
		}
	}
	n, err := resealAll(ctx, r.store, box, r.now)
	if err != nil {
		if r.keyDir != "" {
			return fmt.Errorf("the new key is in %s and the old one in %s, which together open every secret; "+
				"run 'ledgerdesk secrets rotate' again to finish: %w", secretKeyFile, previousKeyFile, err)
		}
		return fmt.Errorf("nothing was re-sealed; %s still opens every secret: %w", envSecretKey, err)
	}
	if r.keyDir != "" {
		if err := removeKeyFile(r.keyDir, previousKeyFile); err != nil {
			return fmt.Errorf("every secret is re-sealed under the key in %s, but the previous key could not be removed; remove %s: %w",
				secretKeyFile, filepath.Join(r.keyDir, previousKeyFile), err)
		}
		fmt.Fprintf(stdout, "re-sealed the secrets of %d account(s) and OAuth connection(s); the new key is in %s\n", n, filepath.Join(r.keyDir, secretKeyFile))
		return nil
	}
	fmt.Fprintf(stdout, "re-sealed the secrets of %d account(s) and OAuth connection(s); now set %s to the new key and restart\n", n, envSecretKey)
	return nil
}

// resealAll re-seals the secrets of the inbound and outgoing accounts, of
// the OAuth connections and of their token streams, and commits them in
// one transaction: a rotation takes effect whole or not at all.
func resealAll(ctx context.Context, st eventstore.Store, box *secretbox.Box, now func() time.Time) (int, error) {
	var reqs []eventstore.AppendRequest
	for _, reseal := range []func(context.Context, eventstore.Store, *secretbox.Box, func() time.Time) ([]eventstore.AppendRequest, error){
		resealInboundAccounts, resealOutboundAccounts, resealOAuthConnections,
	} {
		rs, err := reseal(ctx, st, box, now)
		if err != nil {
			return 0, err
		}
		reqs = append(reqs, rs...)
	}
	if len(reqs) == 0 {
		return 0, nil
	}
	// At the versions read: a change through the API in between (serve
	// still running) fails the rotation instead of being overwritten.
	if _, err := st.Append(ctx, reqs...); err != nil {
		return 0, fmt.Errorf("record the re-sealed secrets: %w", err)
	}
	n := 0
	for _, r := range reqs {
		n += len(r.Events)
	}
	return n, nil
}

// errHelpShown is returned after printing help for a command without a flag set.
var errHelpShown = errors.New("help")

// resealInboundAccounts decides an update for every inbound account holding
// a secret sealed with an older key.
func resealInboundAccounts(ctx context.Context, store eventstore.Store, box *secretbox.Box, now func() time.Time) ([]eventstore.AppendRequest, error) {
	accounts, version, err := api.LoadInboundAccounts(ctx, store)
	if err != nil {
		return nil, err
	}
	return reseal(box, now, api.AccountsStream, version, accounts.ByID,
		func(a *domain.InboundAccount) []*string {
			return []*string{&a.Password, &a.OAuthClientSecret, &a.OAuthRefreshToken}
		},
		func(a domain.InboundAccount) ([]domain.Event, error) {
			return domain.DecideUpdateInboundAccount(accounts, a, rotationActor)
		})
}

// resealOutboundAccounts does the same for the outgoing (SMTP) accounts.
func resealOutboundAccounts(ctx context.Context, store eventstore.Store, box *secretbox.Box, now func() time.Time) ([]eventstore.AppendRequest, error) {
	accounts, version, err := api.LoadOutboundAccounts(ctx, store)
	if err != nil {
		return nil, err
	}
	return reseal(box, now, ticketing.OutboundAccountsStream, version, accounts.ByID,
		func(a *domain.OutboundAccount) []*string {
			return []*string{&a.Password, &a.OAuthClientSecret, &a.OAuthRefreshToken}
		},
		func(a domain.OutboundAccount) ([]domain.Event, error) {
			return domain.DecideUpdateOutboundAccount(accounts, a, rotationActor)
		})
}

// resealOAuthConnections re-seals the client secrets of the OAuth
// connections and the refresh token of each connection's token stream.
func resealOAuthConnections(ctx context.Context, store eventstore.Store, box *secretbox.Box, now func() time.Time) ([]eventstore.AppendRequest, error) {
	conns, version, err := api.LoadOAuthConnections(ctx, store)
	if err != nil {
		return nil, err
	}
	reqs, err := reseal(box, now, domain.OAuthConnectionsStream, version, conns.ByID,
		func(c *domain.OAuthConnection) []*string { return []*string{&c.ClientSecret} },
		func(c domain.OAuthConnection) ([]domain.Event, error) {
			return domain.DecideUpdateOAuthConnection(conns, c, rotationActor)
		})
	if err != nil {
		return nil, err
	}
	for _, id := range slices.Sorted(maps.Keys(conns.ByID)) {
		stream := domain.OAuthTokenStream(id)
		evs, err := store.ReadStream(ctx, stream, 1, 0)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", stream, err)
		}
		state := domain.InitialTokenState(conns.ByID[id])
		var tokenVersion int64
		for _, re := range evs {
			ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
			if err != nil {
				return nil, fmt.Errorf("read %s: event %d: %w", stream, re.StreamVersion, err)
			}
			state, tokenVersion = domain.EvolveOAuthToken(state, ev), re.StreamVersion
		}
		if !box.NeedsReseal(state.RefreshToken) {
			continue
		}
		resealed, err := box.Reseal(state.RefreshToken)
		if err != nil {
			return nil, fmt.Errorf("connection %s: refresh token: %w", id, err)
		}
		ne, err := encodeEvents([]domain.Event{domain.OAuthRefreshTokenResealed{ConnectionID: id, RefreshToken: resealed,
			At: now().UTC(), Actor: rotationActor}}, now)
		if err != nil {
			return nil, err
		}
		// At the version read: a refresh in between (serve still running)
		// fails the rotation instead of being overwritten; run it again.
		reqs = append(reqs, eventstore.AppendRequest{Stream: stream, ExpectedVersion: tokenVersion, Events: ne})
	}
	return reqs, nil
}

// reseal re-seals the secrets of every account of one registry stream and
// returns the updates to append at the version it read, so a concurrent
// change through the API makes the rotation fail rather than overwrite it;
// run it again then. No request: nothing to re-seal.
func reseal[A any](box *secretbox.Box, now func() time.Time,
	stream string, version int64, byID map[string]A, secrets func(*A) []*string, decide func(A) ([]domain.Event, error),
) ([]eventstore.AppendRequest, error) {
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
					return nil, fmt.Errorf("%s account %s: %w", stream, id, err)
				}
				*secret, changed = resealed, true
			}
		}
		if !changed {
			continue
		}
		evs, err := decide(a)
		if err != nil {
			return nil, fmt.Errorf("%s account %s: %w", stream, id, err)
		}
		ne, err := encodeEvents(evs, now)
		if err != nil {
			return nil, err
		}
		news = append(news, ne...)
	}
	if len(news) == 0 {
		return nil, nil
	}
	return []eventstore.AppendRequest{{Stream: stream, ExpectedVersion: version, Events: news}}, nil
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

// writeKeyFile replaces dir/name with key durably: written to a temporary
// file of mode 0600, synced, renamed over name, and the directory synced,
// so that after a crash the file holds either the old or the new key,
// whole.
func writeKeyFile(dir, name string, key []byte) error {
	f, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // gone after the rename; left over only on failure
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// removeKeyFile removes dir/name, if there, durably.
func removeKeyFile(dir, name string) error {
	if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(dir)
}

// syncDir makes the renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
