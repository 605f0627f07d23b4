package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// accountRefresh is how often the scheduler reloads the account list on its
// own: a write through the API reaches it at once (api.Options.
// MailboxesChanged), so this only catches writes made elsewhere.
const accountRefresh = 30 * time.Second

// enabledAccounts gives the scheduler the accounts to poll: none while the
// global mailboxes_disabled setting is on (e.g. on a cloned test system).
// Graph accounts also need graph (the OAuth manager): their connection's
// Graph root and the dropping of a refused token.
func enabledAccounts(store eventstore.Store, box *secretbox.Box, tokens ingest.AccessTokens, graph ingest.GraphConnections,
	logger *slog.Logger) func(ctx context.Context) ([]ingest.Account, error) {
	return func(ctx context.Context) ([]ingest.Account, error) {
		settings, err := api.LoadSettings(ctx, store)
		if err != nil {
			return nil, err
		}
		if settings.MailboxesDisabled {
			return nil, nil
		}
		accounts, _, err := api.LoadInboundAccounts(ctx, store)
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(accounts.ByID))
		for id := range accounts.ByID {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		var out []ingest.Account
		for _, id := range ids {
			a := accounts.ByID[id]
			if !a.Enabled {
				continue
			}
			f, err := ingest.FetcherFor(a, settings, box, tokens, graph, logger)
			if err != nil {
				// Polled all the same, so that every poll records the reason
				// in the mailbox status.
				logger.Error("inbound account cannot log in", "account", a.ID, "name", a.Name, "err", err)
				f = ingest.UnusableAccount{Reason: err}
			}
			out = append(out, ingest.Account{ID: a.ID, Name: a.Name, PollInterval: a.PollInterval(),
				Revision: revision(a, settings), Fetcher: f, ImagesAsAttachments: a.ImagesAsAttachments, Server: ingest.ServerOf(a),
				Push: a.PushEnabled()})
		}
		return out, nil
	}
}

// revision changes whenever anything the fetcher is built from changes.
func revision(a domain.InboundAccount, s domain.Settings) string {
	b, _ := json.Marshal(struct {
		A                domain.InboundAccount
		ErrorFolder      string
		AllowedMailHosts []string
	}{a, s.ErrorFolder, s.AllowedMailHosts})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// checkAccount is "check connection" for the API: connect, log in, select
// (for Graph: read the mailbox's folders), import nothing.
func checkAccount(store eventstore.Store, box *secretbox.Box, tokens ingest.AccessTokens, graph ingest.GraphConnections,
	logger *slog.Logger) func(ctx context.Context, a domain.InboundAccount) error {
	return func(ctx context.Context, a domain.InboundAccount) error {
		settings, err := api.LoadSettings(ctx, store)
		if err != nil {
			return err
		}
		f, err := ingest.FetcherFor(a, settings, box, tokens, graph, logger)
		if err != nil {
			return fmt.Errorf("account %s: %w", a.ID, err)
		}
		return f.Check(ctx)
	}
}

// checkOutbound is "check mailbox" of an outgoing account for the API: log
// in as the saga would, and send the test mail when asked.
func checkOutbound(store eventstore.Store, outbound *ticketing.Outbound) api.CheckOutbound {
	return func(ctx context.Context, a domain.OutboundAccount, sendTestTo string) (ticketing.CheckReply, error) {
		settings, err := api.LoadSettings(ctx, store)
		if err != nil {
			return ticketing.CheckReply{}, err
		}
		return outbound.CheckAccount(ctx, a, settings, sendTestTo)
	}
}

// mailboxLiveness gives the API when the scheduler last polled an account:
// idle polls are not recorded as events.
func mailboxLiveness(sched *ingest.Scheduler) func(accountID string) (api.MailboxLiveness, bool) {
	return func(accountID string) (api.MailboxLiveness, bool) {
		l, ok := sched.Liveness(accountID)
		return api.MailboxLiveness(l), ok
	}
}
