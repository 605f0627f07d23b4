package oauthtest

import (
	"net/http"
	"strings"
	"time"
)

// introspection is the answer for a live token. Dovecot reads username
// and active (username_attribute, active_attribute); a flat object keeps
// its 2.3 JSON parser happy. See RFC 7662 section 2.2.
type introspection struct {
	Active    bool   `json:"active"`
	Username  string `json:"username,omitempty"`
	Scope     string `json:"scope,omitempty"`
	Exp       int64  `json:"exp,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	TokenType string `json:"token_type,omitempty"`
}

// introspect answers RFC 7662 introspection. The token comes as form field
// "token" (POST body, or query for GET): Dovecot's introspection_mode post
// and get. Without it, an "Authorization: Bearer" header is taken as the
// token (Dovecot's mode auth). Unknown, expired and revoked tokens are
// {"active":false}, not errors (RFC 7662 section 2.2).
func (p *Provider) introspect(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "AADSTS90014: The request body is malformed.")
		return
	}
	tok := r.Form.Get("token")
	if tok == "" {
		if scheme, rest, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
			tok = strings.TrimSpace(rest)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.introspections++
	p.introspectReqs = append(p.introspectReqs, IntrospectionRequest{
		Method: r.Method, ContentType: r.Header.Get("Content-Type"),
		Authorization: r.Header.Get("Authorization"), Form: r.Form,
	})
	if tok == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", missingParam("token"))
		return
	}
	g := p.liveAccessLocked(tok, time.Now())
	if g == nil {
		writeJSON(w, http.StatusOK, introspection{Active: false})
		return
	}
	writeJSON(w, http.StatusOK, introspection{
		Active: true, Username: g.username, Scope: g.scope, Exp: g.expires.Unix(),
		ClientID: g.clientID, TokenType: "Bearer",
	})
}
