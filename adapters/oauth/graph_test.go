package oauth_test

import (
	"sync"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/oauth"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// TestManager_ForgetAccessToken: a token a server refused is dropped and
// the next AccessToken gets a fresh one; forgetting a token already
// replaced changes nothing, so that concurrent 401s cost one token request.
func TestManager_ForgetAccessToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.createConnection("app", domain.OAuthFlowAppOnly, clientSecret)
	m := e.manager(nil)

	first := mustToken(t, m, "app", domain.ProtocolGraph)
	m.ForgetAccessToken("app", domain.ProtocolGraph, "some-older-token")
	m.ForgetAccessToken("app", domain.ProtocolIMAP, first) // another scope set: another token
	m.ForgetAccessToken("unknown", domain.ProtocolGraph, first)
	if got := mustToken(t, m, "app", domain.ProtocolGraph); got != first {
		t.Fatal("AccessToken() = a new token though the cached one was not refused")
	}
	before := e.provider.TokenRequests()

	const callers = 10
	var wg sync.WaitGroup
	tokens := make([]string, callers)
	for i := range callers {
		wg.Go(func() {
			m.ForgetAccessToken("app", domain.ProtocolGraph, first)
			tokens[i], _ = m.AccessToken(t.Context(), "app", domain.ProtocolGraph)
		})
	}
	wg.Wait()
	for i, tok := range tokens {
		if tok == "" || tok == first || tok != tokens[0] {
			t.Errorf("caller %d got %q, want the one fresh token all share", i, tok)
		}
	}
	if got := e.provider.TokenRequests() - before; got != 1 {
		t.Errorf("%d token requests for %d callers refused with the same token, want 1", got, callers)
	}
	if !e.mustIntrospect(tokens[0]).Active {
		t.Error("the fresh token is not live at the provider")
	}
}

func TestManager_GraphBaseURL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.createConnection("global", domain.OAuthFlowAppOnly, clientSecret)
	c := domain.OAuthConnection{ID: "us", Name: "Contoso US", Provider: domain.OAuthProviderMicrosoft365, Flow: domain.OAuthFlowAppOnly,
		TenantID: tenant, ClientID: oauthtest.DefaultClientID, ClientSecret: e.seal(clientSecret), GraphBaseURL: "https://graph.microsoft.us/"}
	evs, err := domain.DecideCreateOAuthConnection(domain.OAuthConnections{}, c, "admin")
	if err != nil {
		t.Fatal(err)
	}
	e.append(domain.OAuthConnectionsStream, evs[0])
	m := e.manager(nil)

	for id, want := range map[string]string{"global": domain.DefaultGraphBaseURL, "us": "https://graph.microsoft.us"} {
		if got, err := m.GraphBaseURL(t.Context(), id); err != nil || got != want {
			t.Errorf("GraphBaseURL(%s) = %q, %v; want %q", id, got, err, want)
		}
	}
	_, err = m.GraphBaseURL(t.Context(), "nope")
	wantErr(t, "GraphBaseURL() of an unknown connection", err, oauth.ErrUnknownConnection)
}
