package oauthtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
)

const redirectURL = "http://127.0.0.1:1/callback"

func config(p *oauthtest.Provider, tenant string) *oauth2.Config {
	base := p.URL
	if tenant != "" {
		base += "/" + tenant + "/oauth2/v2.0"
	}
	return &oauth2.Config{
		ClientID:     oauthtest.DefaultClientID,
		ClientSecret: oauthtest.DefaultClientSecret,
		// Not auto-detected: that retries a failed request with the other
		// style, which would double the requests the tests count.
		Endpoint:    oauth2.Endpoint{AuthURL: base + "/authorize", TokenURL: base + "/token", AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: redirectURL,
		Scopes:      []string{"https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"},
	}
}

var (
	hiddenRE   = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
	actionRE   = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
	usernameRE = regexp.MustCompile(`<input type="text" name="username" id="username" value="([^"]*)">`)
)

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// reply is a response already read and closed.
type reply struct {
	StatusCode int
	Header     http.Header
	Body       string
}

func get(t *testing.T, u string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func post(t *testing.T, u string, form url.Values) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, req)
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", req.URL, err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// consent opens the consent page at authURL, submits it as a browser would
// with decision (accept or deny) and returns the redirect's target.
func consent(t *testing.T, authURL, username, decision string) *url.URL {
	t.Helper()
	resp := get(t, authURL)
	body := resp.Body
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET consent page: status %d, body %s", resp.StatusCode, body)
	}
	m := usernameRE.FindStringSubmatch(body)
	if m == nil || !strings.Contains(body, `id="accept"`) || !strings.Contains(body, `id="deny"`) {
		t.Fatalf("consent page lacks the username input or the buttons:\n%s", body)
	}
	if username == "" {
		username = html.UnescapeString(m[1])
	}
	form := url.Values{"username": {username}, "decision": {decision}}
	for _, h := range hiddenRE.FindAllStringSubmatch(body, -1) {
		form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
	}
	a := actionRE.FindStringSubmatch(body)
	if a == nil {
		t.Fatalf("consent page has no form:\n%s", body)
	}
	base, _ := url.Parse(authURL)
	action, err := base.Parse(html.UnescapeString(a[1]))
	if err != nil {
		t.Fatalf("form action %q: %v", a[1], err)
	}
	resp = post(t, action.String(), form)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("POST consent: status %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("Location %q: %v", resp.Header.Get("Location"), err)
	}
	return loc
}

// authorize runs the consent page and the code exchange with PKCE.
func authorize(t *testing.T, cfg *oauth2.Config, username string) *oauth2.Token {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	loc := consent(t, cfg.AuthCodeURL("state-1", oauth2.S256ChallengeOption(verifier)), username, "accept")
	if got := loc.Query().Get("state"); got != "state-1" {
		t.Fatalf("redirect state = %q, want state-1", got)
	}
	tok, err := cfg.Exchange(t.Context(), loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange() = %v", err)
	}
	return tok
}

func introspect(t *testing.T, p *oauthtest.Provider, token string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.URL+"/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return doIntrospect(t, req)
}

func doIntrospect(t *testing.T, req *http.Request) map[string]any {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("introspect: decode: %v", err)
	}
	return got
}

// wantRetrieveError checks that err is the token endpoint's OAuth error code
// with a description starting with descrPrefix.
func wantRetrieveError(t *testing.T, err error, status int, code, descrPrefix string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v, want *oauth2.RetrieveError", err)
	}
	if re.Response.StatusCode != status || re.ErrorCode != code || !strings.HasPrefix(re.ErrorDescription, descrPrefix) {
		t.Errorf("RetrieveError = %d %q %q, want %d %q %q…", re.Response.StatusCode, re.ErrorCode, re.ErrorDescription,
			status, code, descrPrefix)
	}
}

func TestProvider_CodeFlowWithPKCE(t *testing.T) {
	t.Parallel()
	for _, tenant := range []string{"", "contoso.onmicrosoft.com"} {
		t.Run("tenant "+tenant, func(t *testing.T) {
			t.Parallel()
			p := oauthtest.Start(t, oauthtest.Options{})
			cfg := config(p, tenant)
			tok := authorize(t, cfg, "")
			if tok.AccessToken == "" || tok.RefreshToken == "" || tok.TokenType != "Bearer" {
				t.Fatalf("token = %+v, want access and refresh token", tok)
			}
			if d := time.Until(tok.Expiry); d < 59*time.Minute || d > time.Hour {
				t.Errorf("token expires in %v, want about 1h", d)
			}
			if got, want := tok.Extra("scope"), strings.Join(cfg.Scopes, " "); got != want {
				t.Errorf("scope = %v, want %q", got, want)
			}
			got := introspect(t, p, tok.AccessToken)
			if got["active"] != true || got["username"] != oauthtest.DefaultUsername || got["client_id"] != oauthtest.DefaultClientID {
				t.Errorf("introspection = %v, want active for %s", got, oauthtest.DefaultUsername)
			}
			var want []string
			if tenant != "" {
				want = []string{tenant, tenant, tenant} // consent page, its POST, token
			}
			if diff := cmp.Diff(want, p.Tenants()); diff != "" {
				t.Errorf("Tenants() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProvider_CodeFlowUsesTheUsernameEntered(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{Username: "agent"})
	tok := authorize(t, config(p, "tenant-1"), "bob@example.com")
	if got := introspect(t, p, tok.AccessToken)["username"]; got != "bob@example.com" {
		t.Errorf("username = %v, want bob@example.com", got)
	}
}

func TestProvider_AuthorizeRefusals(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	query := func(change func(url.Values)) string {
		v := url.Values{
			"response_type": {"code"}, "client_id": {oauthtest.DefaultClientID}, "redirect_uri": {redirectURL},
			"state": {"s1"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
		}
		change(v)
		return p.URL + "/authorize?" + v.Encode()
	}
	tests := []struct {
		name       string
		url        string
		wantStatus int
		wantError  string // error parameter of the redirect
	}{
		{"an unknown client gets an error page", query(func(v url.Values) { v.Set("client_id", "other") }), 400, ""},
		{"a missing redirect URI gets an error page", query(func(v url.Values) { v.Del("redirect_uri") }), 400, ""},
		{"no PKCE is sent back as invalid_request", query(func(v url.Values) { v.Del("code_challenge") }), 302, "invalid_request"},
		{"plain PKCE is sent back as invalid_request", query(func(v url.Values) { v.Set("code_challenge_method", "plain") }), 302, "invalid_request"},
		{"no state is sent back as invalid_request", query(func(v url.Values) { v.Del("state") }), 302, "invalid_request"},
		{"an implicit grant is unsupported", query(func(v url.Values) { v.Set("response_type", "token") }), 302, "unsupported_response_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := get(t, tc.url)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tc.wantStatus, resp.Body)
			}
			if tc.wantStatus == 400 && !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
				t.Errorf("Content-Type = %q, want an HTML page", resp.Header.Get("Content-Type"))
			}
			if tc.wantError != "" {
				loc, err := url.Parse(resp.Header.Get("Location"))
				if err != nil {
					t.Fatal(err)
				}
				if got := loc.Query().Get("error"); got != tc.wantError {
					t.Errorf("error = %q, want %q (Location %s)", got, tc.wantError, loc)
				}
			}
		})
	}
}

func TestProvider_ConsentDenied(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	cfg := config(p, "")
	loc := consent(t, cfg.AuthCodeURL("s2", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "", "deny")
	want := "error=access_denied&error_description=AADSTS65004%3A+User+declined+to+consent+to+access+the+app.&state=s2"
	if loc.RawQuery != want {
		t.Errorf("redirect query = %s, want %s", loc.RawQuery, want)
	}
}

func TestProvider_CodeExchangeRefusals(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	cfg := config(p, "")
	codeFor := func(t *testing.T, verifier string) string {
		t.Helper()
		return consent(t, cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), "", "accept").Query().Get("code")
	}

	t.Run("a wrong verifier is refused", func(t *testing.T) {
		t.Parallel()
		code := codeFor(t, oauth2.GenerateVerifier())
		_, err := cfg.Exchange(t.Context(), code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
		wantRetrieveError(t, err, 400, "invalid_grant", "AADSTS501481:")
	})
	t.Run("a missing verifier is refused", func(t *testing.T) {
		t.Parallel()
		_, err := cfg.Exchange(t.Context(), codeFor(t, oauth2.GenerateVerifier()))
		wantRetrieveError(t, err, 400, "invalid_grant", "AADSTS501481:")
	})
	t.Run("a code is redeemed once", func(t *testing.T) {
		t.Parallel()
		v := oauth2.GenerateVerifier()
		code := codeFor(t, v)
		if _, err := cfg.Exchange(t.Context(), code, oauth2.VerifierOption(v)); err != nil {
			t.Fatalf("first Exchange() = %v", err)
		}
		_, err := cfg.Exchange(t.Context(), code, oauth2.VerifierOption(v))
		wantRetrieveError(t, err, 400, "invalid_grant", "AADSTS54005:")
	})
	t.Run("another redirect URI is refused", func(t *testing.T) {
		t.Parallel()
		v := oauth2.GenerateVerifier()
		other := *cfg
		other.RedirectURL = "http://127.0.0.1:2/elsewhere"
		_, err := other.Exchange(t.Context(), codeFor(t, v), oauth2.VerifierOption(v))
		wantRetrieveError(t, err, 400, "invalid_grant", "AADSTS500112:")
	})
	t.Run("an unknown code is refused", func(t *testing.T) {
		t.Parallel()
		_, err := cfg.Exchange(t.Context(), "made-up", oauth2.VerifierOption(oauth2.GenerateVerifier()))
		wantRetrieveError(t, err, 400, "invalid_grant", "AADSTS70000:")
	})
	t.Run("a wrong client secret is invalid_client", func(t *testing.T) {
		t.Parallel()
		v := oauth2.GenerateVerifier()
		other := *cfg
		other.ClientSecret = "wrong"
		_, err := other.Exchange(t.Context(), codeFor(t, v), oauth2.VerifierOption(v))
		wantRetrieveError(t, err, 401, "invalid_client", "AADSTS7000215:")
	})
}

func TestProvider_ClientAuthentication(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{ClientID: "id with space", ClientSecret: "s&cret+/="})
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		cfg := config(p, "")
		cfg.ClientID, cfg.ClientSecret = "id with space", "s&cret+/="
		cfg.Endpoint.AuthStyle = style
		if _, err := cfg.TokenSource(t.Context(), &oauth2.Token{RefreshToken: p.IssueRefreshToken("")}).Token(); err != nil {
			t.Errorf("refresh with auth style %d = %v", style, err)
		}
	}
}

func refresh(ctx context.Context, cfg *oauth2.Config, refreshToken string) (*oauth2.Token, error) {
	return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
}

func TestProvider_RefreshRotates(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	cfg := config(p, "")
	old := authorize(t, cfg, "").RefreshToken
	tok, err := refresh(t.Context(), cfg, old)
	if err != nil {
		t.Fatalf("refresh = %v", err)
	}
	if tok.RefreshToken == "" || tok.RefreshToken == old {
		t.Fatalf("refresh token after refresh = %q, want a new one", tok.RefreshToken)
	}
	if got := introspect(t, p, tok.AccessToken)["active"]; got != true {
		t.Errorf("new access token active = %v", got)
	}
	_, err = refresh(t.Context(), cfg, old)
	wantRetrieveError(t, err, 400, "invalid_grant", "AADSTS70008:")
	if _, err := refresh(t.Context(), cfg, tok.RefreshToken); err != nil {
		t.Errorf("refresh with the rotated token = %v", err)
	}
	if got := p.Refreshes(); got != 2 {
		t.Errorf("Refreshes() = %d, want 2", got)
	}
	// x/oauth2 sends no scope on refresh; Entra then falls back to the first scopes.
	if diff := cmp.Diff([]string{"", "", ""}, p.RefreshScopes()); diff != "" {
		t.Errorf("RefreshScopes() (-want +got):\n%s", diff)
	}
}

func TestProvider_RefreshScopesAreRecorded(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	const scope = "https://outlook.office.com/SMTP.Send offline_access"
	resp := post(t, p.URL+"/token", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {p.IssueRefreshToken("")}, "scope": {scope},
		"client_id": {oauthtest.DefaultClientID}, "client_secret": {oauthtest.DefaultClientSecret},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh status = %d", resp.StatusCode)
	}
	if diff := cmp.Diff([]string{scope}, p.RefreshScopes()); diff != "" {
		t.Errorf("RefreshScopes() (-want +got):\n%s", diff)
	}
	if got := p.TokenRequests(); got != 1 {
		t.Errorf("TokenRequests() = %d, want 1", got)
	}
}

func TestProvider_KeepRefreshTokens(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{KeepRefreshTokens: true})
	cfg := config(p, "")
	rt := p.IssueRefreshToken("")
	for i := range 2 {
		tok, err := refresh(t.Context(), cfg, rt)
		if err != nil {
			t.Fatalf("refresh %d = %v", i, err)
		}
		if tok.RefreshToken != rt {
			t.Errorf("refresh %d: refresh token = %q, want the old one kept", i, tok.RefreshToken)
		}
	}
}

func TestProvider_RevokeRefreshTokens(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	cfg := config(p, "")
	rt := authorize(t, cfg, "").RefreshToken
	p.RevokeRefreshTokens()
	_, err := refresh(t.Context(), cfg, rt)
	wantRetrieveError(t, err, 400, "invalid_grant", "AADSTS50173:")
	if _, err := refresh(t.Context(), cfg, authorize(t, cfg, "").RefreshToken); err != nil {
		t.Errorf("refresh after a new consent = %v", err)
	}
}

func TestProvider_ConcurrentRefreshesOfOneToken(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	cfg := config(p, "")
	rt := p.IssueRefreshToken("")
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = refresh(t.Context(), cfg, rt) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent refreshes of one rotating token succeeded, want 1: %v", ok, n, errs)
	}
	if got := p.MaxConcurrentRefreshes(); got < 2 {
		t.Errorf("MaxConcurrentRefreshes() = %d, want at least 2", got)
	}
}

func TestProvider_ClientCredentials(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	cc := clientcredentials.Config{
		ClientID: oauthtest.DefaultClientID, ClientSecret: oauthtest.DefaultClientSecret,
		TokenURL: p.URL + "/tenant-a/oauth2/v2.0/token", Scopes: []string{"https://outlook.office365.com/.default"},
	}
	tok, err := cc.Token(t.Context())
	if err != nil {
		t.Fatalf("Token() = %v", err)
	}
	if tok.AccessToken == "" || tok.RefreshToken != "" {
		t.Errorf("token = %+v, want an access token and no refresh token", tok)
	}
	if got := introspect(t, p, tok.AccessToken); got["active"] != true || got["scope"] != cc.Scopes[0] {
		t.Errorf("introspection = %v, want active with the scope", got)
	}
	if diff := cmp.Diff([]string{"tenant-a"}, p.Tenants()); diff != "" {
		t.Errorf("Tenants() (-want +got):\n%s", diff)
	}

	wrong := cc
	wrong.ClientSecret = "nope"
	_, err = wrong.Token(t.Context())
	wantRetrieveError(t, err, 401, "invalid_client", "AADSTS7000215:")

	noScope := cc
	noScope.Scopes = nil
	_, err = noScope.Token(t.Context())
	wantRetrieveError(t, err, 400, "invalid_request", "AADSTS900144:")
}

func TestProvider_Introspection(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{AccessTokenTTL: time.Second})
	live := p.AccessTokenFor("carol")

	got := introspect(t, p, live)
	if got["active"] != true || got["username"] != "carol" {
		t.Errorf("introspection of a live token = %v, want active for carol", got)
	}
	if exp, _ := got["exp"].(float64); exp <= float64(time.Now().Unix()-1) {
		t.Errorf("exp = %v, want in the future", got["exp"])
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.URL+"/introspect", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+live)
	if got := doIntrospect(t, req); got["active"] != true {
		t.Errorf("introspection with the token in the header = %v, want active", got)
	}
	if got := introspect(t, p, "unknown"); !cmp.Equal(got, map[string]any{"active": false}) {
		t.Errorf("introspection of an unknown token = %v, want only active false", got)
	}

	time.Sleep(1100 * time.Millisecond) // the TTL cannot be shorter than expires_in's one second
	if got := introspect(t, p, live); got["active"] != false {
		t.Errorf("introspection of an expired token = %v, want inactive", got)
	}
	if got := p.Introspections(); got != 4 {
		t.Errorf("Introspections() = %d, want 4", got)
	}
}

func TestProvider_RevokeAccessTokens(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	old := p.AccessTokenFor("")
	p.RevokeAccessTokens()
	if got := introspect(t, p, old)["active"]; got != false {
		t.Errorf("revoked token active = %v, want false", got)
	}
	if got := introspect(t, p, p.AccessTokenFor(""))["active"]; got != true {
		t.Errorf("token issued after the revocation active = %v, want true", got)
	}
}

func TestProvider_FailTokenEndpoint(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, oauthtest.Options{})
	cfg := config(p, "")
	p.FailTokenEndpoint(func(grantType string) (int, string, string, bool) {
		return http.StatusServiceUnavailable, "text/html", "<html>Service unavailable</html>", grantType == "refresh_token"
	})
	rt := p.IssueRefreshToken("")
	_, err := refresh(t.Context(), cfg, rt)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("refresh during the outage = %v, want a 503 RetrieveError", err)
	}
	if got := re.Response.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	p.FailTokenEndpoint(nil)
	if _, err := refresh(t.Context(), cfg, rt); err != nil {
		t.Errorf("refresh after the outage = %v", err)
	}
	if got := p.TokenRequests(); got != 2 {
		t.Errorf("TokenRequests() = %d, want 2", got)
	}
}

func TestOptions_Validate(t *testing.T) {
	t.Parallel()
	if err := (oauthtest.Options{AccessTokenTTL: 500 * time.Millisecond}).Validate(); err == nil {
		t.Error("Validate() of a sub-second TTL = nil, want an error")
	}
	if err := (oauthtest.Options{}).Validate(); err != nil {
		t.Errorf("Validate() of the zero Options = %v", err)
	}
}
