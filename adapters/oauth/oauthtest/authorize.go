package oauthtest

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// authzRequest is an authorization request, from the query of GET
// /authorize or the hidden fields of the consent form. See RFC 6749
// section 4.1.1 and RFC 7636 section 4.3.
type authzRequest struct {
	ResponseType, ClientID, RedirectURI, State string
	Challenge, ChallengeMethod, Scope          string
}

func parseAuthz(v url.Values) authzRequest {
	return authzRequest{
		ResponseType: v.Get("response_type"), ClientID: v.Get("client_id"),
		RedirectURI: v.Get("redirect_uri"), State: v.Get("state"),
		Challenge: v.Get("code_challenge"), ChallengeMethod: v.Get("code_challenge_method"),
		Scope: v.Get("scope"),
	}
}

// fields returns a's parameters for the consent form's hidden inputs.
func (a authzRequest) fields() []hiddenField {
	return []hiddenField{
		{"response_type", a.ResponseType}, {"client_id", a.ClientID},
		{"redirect_uri", a.RedirectURI}, {"state", a.State},
		{"code_challenge", a.Challenge}, {"code_challenge_method", a.ChallengeMethod},
		{"scope", a.Scope},
	}
}

type hiddenField struct{ Name, Value string }

// authzProblem is why an authorization request is refused. With page set
// the user sees an error page (RFC 6749 section 4.1.2.1: an unknown client
// or a bad redirect URI must not redirect); otherwise the client is sent
// back to its redirect URI with code and description.
type authzProblem struct {
	page        string
	code, descr string
}

// check returns the first problem of a, or nil.
func (p *Provider) check(a authzRequest) *authzProblem {
	if a.ClientID != p.opts.ClientID {
		return &authzProblem{page: fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory.", a.ClientID)}
	}
	u, err := url.Parse(a.RedirectURI)
	if a.RedirectURI == "" || err != nil || !u.IsAbs() || u.Fragment != "" {
		return &authzProblem{page: fmt.Sprintf("AADSTS50011: The redirect URI '%s' specified in the request does not match the redirect URIs configured for the application.", a.RedirectURI)}
	}
	switch {
	case a.ResponseType != "code":
		return &authzProblem{code: "unsupported_response_type", descr: fmt.Sprintf("AADSTS700054: response_type '%s' is not enabled for the application.", a.ResponseType)}
	case a.State == "":
		return &authzProblem{code: "invalid_request", descr: "AADSTS900144: The request body must contain the following parameter: 'state'."}
	case a.Challenge == "" || a.ChallengeMethod != "S256":
		return &authzProblem{code: "invalid_request", descr: "AADSTS9002325: Proof Key for Code Exchange with code_challenge_method S256 is required."}
	}
	return nil
}

// authorizePage answers GET /authorize with the consent page.
func (p *Provider) authorizePage(w http.ResponseWriter, r *http.Request) {
	p.noteTenant(r)
	a := parseAuthz(r.URL.Query())
	if p.refuse(w, r, a) {
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = consentPage.Execute(w, struct {
		Action, ClientID, Scope, Username string
		Hidden                            []hiddenField
	}{r.URL.Path, a.ClientID, a.Scope, p.opts.Username, a.fields()})
}

// authorizeDecision answers the consent form: a redirect with a code on
// accept, with access_denied on deny. The form's parameters are checked
// again, as anyone can post it.
func (p *Provider) authorizeDecision(w http.ResponseWriter, r *http.Request) {
	p.noteTenant(r)
	if err := r.ParseForm(); err != nil {
		errorPage(w, fmt.Sprintf("AADSTS90014: The request body is malformed: %v", err))
		return
	}
	a := parseAuthz(r.PostForm)
	if p.refuse(w, r, a) {
		return
	}
	switch r.PostForm.Get("decision") {
	case "accept":
		username := strings.TrimSpace(r.PostForm.Get("username"))
		if username == "" {
			errorPage(w, "AADSTS50126: Enter a user name.")
			return
		}
		code := randomToken()
		p.mu.Lock()
		p.codes[code] = &codeGrant{
			clientID: a.ClientID, redirectURI: a.RedirectURI, challenge: a.Challenge,
			username: username, scope: a.Scope, expires: time.Now().Add(codeTTL),
		}
		p.mu.Unlock()
		redirectBack(w, r, a.RedirectURI, url.Values{"code": {code}, "state": {a.State}})
	case "deny":
		redirectBack(w, r, a.RedirectURI, url.Values{
			"error":             {"access_denied"},
			"error_description": {"AADSTS65004: User declined to consent to access the app."},
			"state":             {a.State},
		})
	default:
		errorPage(w, fmt.Sprintf("AADSTS90014: Unknown decision %q.", r.PostForm.Get("decision")))
	}
}

// refuse answers a refused authorization request and reports whether it did.
func (p *Provider) refuse(w http.ResponseWriter, r *http.Request, a authzRequest) bool {
	pr := p.check(a)
	switch {
	case pr == nil:
		return false
	case pr.page != "":
		errorPage(w, pr.page)
	default:
		v := url.Values{"error": {pr.code}, "error_description": {pr.descr}}
		if a.State != "" {
			v.Set("state", a.State)
		}
		redirectBack(w, r, a.RedirectURI, v)
	}
	return true
}

// redirectBack sends the browser to redirectURI (already checked to be an
// absolute URL) with params added to its query.
func redirectBack(w http.ResponseWriter, r *http.Request, redirectURI string, params url.Values) {
	u, err := url.Parse(redirectURI)
	if err != nil {
		errorPage(w, fmt.Sprintf("AADSTS50011: The redirect URI '%s' is not valid.", redirectURI))
		return
	}
	q := u.Query()
	for k, vs := range params {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func errorPage(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusBadRequest)
	_ = errorTemplate.Execute(w, msg)
}

// The ids and names are what browser-driven tests click and fill.
var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to your account</title></head>
<body>
<h1>Permissions requested</h1>
<p>{{.ClientID}} would like to: {{.Scope}}</p>
<form method="post" action="{{.Action}}">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<label for="username">Username</label>
<input type="text" name="username" id="username" value="{{.Username}}">
<button type="submit" id="accept" name="decision" value="accept">Accept</button>
<button type="submit" id="deny" name="decision" value="deny">Cancel</button>
</form>
</body></html>
`))

var errorTemplate = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to your account</title></head>
<body><h1>Sorry, but we're having trouble signing you in.</h1><p id="error">{{.}}</p></body></html>
`))
