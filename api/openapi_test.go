package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

type openAPIOperation struct {
	Roles      []string          `json:"x-roles"`
	Parameters []json.RawMessage `json:"parameters"`
	Responses  map[string]any    `json:"responses"`
	Security   []map[string]any  `json:"security"`
}

func loadOpenAPI(tb testing.TB) (map[string]map[string]openAPIOperation, map[string]any) {
	tb.Helper()
	var doc struct {
		OpenAPI    string                                 `json:"openapi"`
		Paths      map[string]map[string]openAPIOperation `json:"paths"`
		Components map[string]any                         `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		tb.Fatalf("openapi.json does not parse: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		tb.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	var raw map[string]any
	if err := json.Unmarshal(openAPIDoc, &raw); err != nil {
		tb.Fatalf("openapi.json does not parse: %v", err)
	}
	return doc.Paths, raw
}

var echoParam = regexp.MustCompile(`:([a-z_]+)`)

// TestOpenAPI_MatchesRoutes fails when a registered route and the document
// disagree, either way: operations, methods and x-roles.
func TestOpenAPI_MatchesRoutes(t *testing.T) {
	t.Parallel()
	store, _ := openEmbedded(t)
	e := New(Options{Store: store})

	// the routes Echo really serves, with the roles of the route table
	roles := map[string][]string{}
	for _, r := range (&server{}).routes() {
		var rs []string
		for _, role := range r.Roles {
			rs = append(rs, string(role))
		}
		sort.Strings(rs)
		roles[r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}")] = rs
	}
	served := map[string][]string{}
	for _, r := range e.Routes() {
		if r.Path == "/healthz" || r.Path == "/readyz" || r.Path == OAuthCallbackPath {
			continue
		}
		key := r.Method + " " + echoParam.ReplaceAllString(r.Path, "{$1}")
		rs, ok := roles[key]
		if !ok {
			t.Errorf("Echo serves %s, which is not in the route table", key)
		}
		served[key] = rs
	}

	paths, _ := loadOpenAPI(t)
	documented := map[string][]string{}
	for path, ops := range paths {
		for method, op := range ops {
			rs := slices.Clone(op.Roles)
			sort.Strings(rs)
			documented[strings.ToUpper(method)+" "+path] = rs
		}
	}
	if diff := cmp.Diff(documented, served); diff != "" {
		t.Errorf("openapi.json operations and x-roles (-documented +served):\n%s", diff)
	}
}

// TestOpenAPI_IsWellFormed checks what a client generator relies on: every
// $ref resolves, every path parameter is declared, every operation says
// which roles may call it and answers 401 and 403.
func TestOpenAPI_IsWellFormed(t *testing.T) {
	t.Parallel()
	paths, raw := loadOpenAPI(t)
	var refs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "$ref" {
					refs = append(refs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(raw)
	resolve := func(ref string) (any, bool) {
		var cur any = raw
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = m[part]; !ok {
				return nil, false
			}
		}
		return cur, true
	}
	for _, ref := range refs {
		if _, ok := resolve(ref); !ok {
			t.Errorf("$ref %q does not resolve", ref)
		}
	}
	known := map[string]bool{}
	for _, r := range domain.Roles {
		known[string(r)] = true
	}
	pathParam := regexp.MustCompile(`\{([a-z_]+)\}`)
	for path, ops := range paths {
		for method, op := range ops {
			name := strings.ToUpper(method) + " " + path
			if len(op.Roles) == 0 {
				t.Errorf("%s: no x-roles", name)
			}
			for _, r := range op.Roles {
				if !known[r] {
					t.Errorf("%s: x-roles names unknown role %q", name, r)
				}
			}
			for _, code := range []string{"401", "403", "429"} {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s: no %s response", name, code)
				}
			}
			if len(op.Security) == 0 {
				t.Errorf("%s: no security requirement", name)
			}
			declared := map[string]bool{}
			for _, p := range op.Parameters {
				var param struct {
					Ref  string `json:"$ref"`
					Name string `json:"name"`
					In   string `json:"in"`
				}
				if err := json.Unmarshal(p, &param); err != nil {
					t.Fatalf("%s: parameter: %v", name, err)
				}
				if param.Ref != "" {
					v, _ := resolve(param.Ref)
					m, _ := v.(map[string]any)
					param.Name, _ = m["name"].(string)
					param.In, _ = m["in"].(string)
				}
				if param.In == "path" {
					declared[param.Name] = true
				}
			}
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("%s: path parameter %s is not declared", name, m[1])
				}
			}
		}
	}
}

func TestOpenAPI_ServedToAnyRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded})
	for _, role := range domain.Roles {
		resp, raw := e.do(t, http.MethodGet, "/api/v1/openapi.json", e.tokens[role], nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(raw, openAPIDoc) {
			t.Errorf("role %s: GET /api/v1/openapi.json = %d (%d bytes), want 200 and the embedded document", role, resp.StatusCode, len(raw))
		}
	}
}
