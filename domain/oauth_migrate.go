package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// InlineOAuthMigration moves the OAuth fields that accounts carried before
// OAuth connections existed onto connections: the events to append to the
// connection registry, to each new connection's token stream, and to the
// two account registries.
type InlineOAuthMigration struct {
	Connections    []OAuthConnectionCreated
	Authorizations []OAuthConnectionAuthorized
	Inbound        []InboundAccountUpdated
	Outbound       []OutboundAccountUpdated
}

// Empty says there is nothing to migrate.
func (m InlineOAuthMigration) Empty() bool {
	return len(m.Connections) == 0 && len(m.Inbound) == 0 && len(m.Outbound) == 0
}

// inlineOAuth is the OAuth part of an old account.
type inlineOAuth struct{ tenant, client, secret, refresh string }

// MigrateInlineOAuth plans the move. Accounts with the same tenant, client,
// secret and refresh token share one connection; its id is derived from
// them, so a migration interrupted and run again plans the same ids and
// skips connections that exist. The old code spoke only to Entra ID, so
// every connection is microsoft365: delegated when a refresh token was
// stored, app-only otherwise. Fields too incomplete to log in with (no
// tenant or client id, or neither a refresh token nor a client secret) are
// dropped from the account without a connection.
func MigrateInlineOAuth(in InboundAccounts, out OutboundAccounts, conns OAuthConnections, at time.Time, actor string) InlineOAuthMigration {
	var m InlineOAuthMigration
	planned := map[string]bool{}
	names := map[string]bool{} // lower case: the registry compares names in any case
	for _, c := range conns.ByID {
		names[strings.ToLower(c.Name)] = true
	}
	connectionFor := func(o inlineOAuth, accountName string) string {
		if o.tenant == "" || o.client == "" || (o.refresh == "" && o.secret == "") {
			return ""
		}
		sum := sha256.Sum256([]byte(o.tenant + "\x00" + o.client + "\x00" + o.secret + "\x00" + o.refresh))
		id := "migrated-" + hex.EncodeToString(sum[:8])
		if _, exists := conns.ByID[id]; exists || planned[id] {
			return id
		}
		planned[id] = true
		c := OAuthConnection{ID: id, Provider: OAuthProviderMicrosoft365, Flow: OAuthFlowAppOnly, TenantID: o.tenant,
			ClientID: o.client, ClientSecret: o.secret}
		if o.refresh != "" {
			c.Flow = OAuthFlowDelegated
		}
		c.Name = accountName + " (migrated OAuth)"
		for n := 2; names[strings.ToLower(c.Name)]; n++ {
			c.Name = fmt.Sprintf("%s (migrated OAuth %d)", accountName, n)
		}
		names[strings.ToLower(c.Name)] = true
		m.Connections = append(m.Connections, OAuthConnectionCreated{Connection: c.WithDefaults(), Actor: actor})
		if o.refresh != "" {
			m.Authorizations = append(m.Authorizations, OAuthConnectionAuthorized{ConnectionID: id, RefreshToken: o.refresh, At: at, Actor: actor})
		}
		return id
	}
	// move names the connection of one account's inline fields and empties
	// them; both account types keep them under the same names.
	move := func(name string, connectionID, tenant, client, secret, refresh *string) {
		if *connectionID == "" {
			*connectionID = connectionFor(inlineOAuth{*tenant, *client, *secret, *refresh}, name)
		}
		*tenant, *client, *secret, *refresh = "", "", "", ""
	}
	for _, id := range slices.Sorted(maps.Keys(in.ByID)) {
		if a := in.ByID[id]; a.HasInlineOAuth() {
			n := a
			move(a.Name, &n.OAuthConnectionID, &n.OAuthTenantID, &n.OAuthClientID, &n.OAuthClientSecret, &n.OAuthRefreshToken)
			m.Inbound = append(m.Inbound, InboundAccountUpdated{Account: n, Changed: changedFields(a, n), Actor: actor})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(out.ByID)) {
		if a := out.ByID[id]; a.HasInlineOAuth() {
			n := a
			move(a.Name, &n.OAuthConnectionID, &n.OAuthTenantID, &n.OAuthClientID, &n.OAuthClientSecret, &n.OAuthRefreshToken)
			m.Outbound = append(m.Outbound, OutboundAccountUpdated{Account: n, Changed: outboundChanged(a, n), Actor: actor})
		}
	}
	return m
}
