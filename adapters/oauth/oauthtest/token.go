package oauthtest

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// tokenResponse is a successful token response. See RFC 6749 section 5.1.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
}

// errorResponse is an OAuth error. See RFC 6749 section 5.2.
type errorResponse struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// Entra's texts for the refresh token failures clients must tell apart
// from outages: both mean "ask the user to consent again".
const (
	descrRefreshExpired = "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity."
	descrRefreshRevoked = "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed."
	descrInvalidClient  = "AADSTS7000215: Invalid client secret provided."
)

// token answers POST /token.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	p.noteTenant(r)
	parseErr := r.ParseForm()
	grant := r.PostForm.Get("grant_type")
	p.mu.Lock()
	p.tokenRequests++
	if grant == "refresh_token" {
		p.refreshScopes = append(p.refreshScopes, r.PostForm.Get("scope"))
	}
	fail := p.fail
	p.mu.Unlock()
	if fail != nil {
		if status, contentType, body, ok := fail(grant); ok {
			if contentType != "" {
				w.Header().Set("Content-Type", contentType)
			}
			if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			if status < 100 || status > 999 {
				// net/http panics on such codes; a script error is a 500.
				body = fmt.Sprintf("oauthtest: FailTokenEndpoint returned status %d", status)
				status = http.StatusInternalServerError
			}
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
			return
		}
	}
	if parseErr != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("AADSTS90014: The request body is malformed: %v", parseErr))
		return
	}
	clientID, ok := p.authenticateClient(r)
	if !ok {
		if _, _, basic := r.BasicAuth(); basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="oauthtest"`)
		}
		writeError(w, http.StatusUnauthorized, "invalid_client", descrInvalidClient)
		return
	}
	switch grant {
	case "authorization_code":
		p.codeGrant(w, r.PostForm, clientID)
	case "refresh_token":
		p.refreshGrant(w, r.PostForm, clientID)
	case "client_credentials":
		p.clientCredentialsGrant(w, r.PostForm, clientID)
	case "":
		writeError(w, http.StatusBadRequest, "invalid_request", missingParam("grant_type"))
	default:
		writeError(w, http.StatusBadRequest, "unsupported_grant_type",
			fmt.Sprintf("AADSTS70003: The app requested an unsupported grant type '%s'.", grant))
	}
}

// authenticateClient checks the client's credentials, from HTTP Basic
// (form-urlencoded id and secret, RFC 6749 section 2.3.1) or from the body.
func (p *Provider) authenticateClient(r *http.Request) (string, bool) {
	id, secret, basic := r.BasicAuth()
	if basic {
		id, secret = unescape(id), unescape(secret)
		if bodyID := r.PostForm.Get("client_id"); bodyID != "" && bodyID != id {
			return "", false
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	okID := subtle.ConstantTimeCompare([]byte(id), []byte(p.opts.ClientID)) == 1
	okSecret := subtle.ConstantTimeCompare([]byte(secret), []byte(p.opts.ClientSecret)) == 1
	return id, okID && okSecret
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// codeGrant redeems an authorization code. See RFC 6749 section 4.1.3
// and RFC 7636 section 4.6.
func (p *Provider) codeGrant(w http.ResponseWriter, form url.Values, clientID string) {
	code := form.Get("code")
	if code == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", missingParam("code"))
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.codes[code]
	var descr string
	switch {
	case g == nil || g.clientID != clientID:
		descr = "AADSTS70000: The provided value for the 'code' parameter is not valid."
	case g.used:
		descr = "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."
	case !now.Before(g.expires):
		descr = descrRefreshExpired
	case form.Get("redirect_uri") != g.redirectURI:
		descr = "AADSTS500112: The reply address does not match the reply address provided when requesting the authorization code."
	case subtle.ConstantTimeCompare([]byte(s256Challenge(form.Get("code_verifier"))), []byte(g.challenge)) != 1:
		descr = "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request."
	}
	if g != nil {
		// Single use, failed attempts included: a code that met a wrong
		// verifier may be in the wrong hands. See RFC 6749 section 10.5.
		g.used = true
	}
	if descr != "" {
		writeError(w, http.StatusBadRequest, "invalid_grant", descr)
		return
	}
	at, expiresIn := p.newAccessTokenLocked(g.username, g.scope, clientID, now)
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken: at, TokenType: "Bearer", ExpiresIn: expiresIn,
		RefreshToken: p.newRefreshTokenLocked(g.username, g.scope), Scope: g.scope,
	})
}

// refreshGrant answers a refresh_token grant. See RFC 6749 section 6.
func (p *Provider) refreshGrant(w http.ResponseWriter, form url.Values, clientID string) {
	p.mu.Lock()
	p.inflight++
	p.maxInflight = max(p.maxInflight, p.inflight)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}()
	time.Sleep(refreshDelay)

	rt := form.Get("refresh_token")
	if rt == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", missingParam("refresh_token"))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.refreshTokens[rt]
	switch {
	case g == nil || g.rotated:
		writeError(w, http.StatusBadRequest, "invalid_grant", descrRefreshExpired)
		return
	case g.revoked:
		writeError(w, http.StatusBadRequest, "invalid_grant", descrRefreshRevoked)
		return
	}
	scope := form.Get("scope")
	if scope == "" {
		// Entra falls back to the scopes first granted.
		scope = g.scope
	}
	at, expiresIn := p.newAccessTokenLocked(g.username, scope, clientID, time.Now())
	resp := tokenResponse{AccessToken: at, TokenType: "Bearer", ExpiresIn: expiresIn, Scope: scope}
	if !p.opts.KeepRefreshTokens {
		g.rotated = true
		grantScope := g.scope
		if grantScope == "" {
			grantScope = scope
		}
		resp.RefreshToken = p.newRefreshTokenLocked(g.username, grantScope)
	}
	p.refreshes++
	writeJSON(w, http.StatusOK, resp)
}

// clientCredentialsGrant issues an app-only token. See RFC 6749 section 4.4.
func (p *Provider) clientCredentialsGrant(w http.ResponseWriter, form url.Values, clientID string) {
	scope := strings.TrimSpace(form.Get("scope"))
	if scope == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", missingParam("scope"))
		return
	}
	p.mu.Lock()
	at, expiresIn := p.newAccessTokenLocked("", scope, clientID, time.Now())
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, tokenResponse{AccessToken: at, TokenType: "Bearer", ExpiresIn: expiresIn, Scope: scope})
}

func missingParam(name string) string {
	return fmt.Sprintf("AADSTS900144: The request body must contain the following parameter: '%s'.", name)
}

func writeError(w http.ResponseWriter, status int, code, descr string) {
	writeJSON(w, status, errorResponse{Error: code, ErrorDescription: descr})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
