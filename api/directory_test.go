package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

type dirWritten struct {
	ID       string   `json:"id"`
	Events   []string `json:"events"`
	Position int64    `json:"position"`
}

type dirHistory struct {
	Items []struct {
		Type    string   `json:"type"`
		Actor   string   `json:"actor"`
		Changed []string `json:"changed"`
	} `json:"items"`
}

func (h dirHistory) types() []string {
	var out []string
	for _, it := range h.Items {
		out = append(out, it.Type)
	}
	return out
}

func TestDirectory_UsersAndLocationsAnAdminManages(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin, agent := e.tokens[domain.RoleAdmin], e.tokens[domain.RoleAgent]

			var hq dirWritten
			e.mustJSON(t, http.MethodPost, "/api/v1/locations", admin, map[string]any{"name": "HQ", "domain": "Ours.example"}, http.StatusCreated, &hq)
			e.problem(t, http.MethodPost, "/api/v1/users", admin, map[string]any{"user_name": "x", "location_id": "nowhere"}, http.StatusUnprocessableEntity)

			var anna dirWritten
			resp := e.mustJSON(t, http.MethodPost, "/api/v1/users", admin, map[string]any{"user_name": "anna", "email": "Anna@Ours.example",
				"name": "Anna", "location_id": hq.ID}, http.StatusCreated, &anna)
			// The id the intake would give this sender: the two cannot both
			// create a user for one address.
			if anna.ID != domain.UserIDFor("anna@ours.example") || resp.Header.Get("Location") != "/api/v1/users/"+anna.ID {
				t.Errorf("created user %+v (Location %q), want id UserIDFor(address)", anna, resp.Header.Get("Location"))
			}
			// one address, one user, in any letter case
			p := e.problem(t, http.MethodPost, "/api/v1/users", admin, map[string]any{"user_name": "anna2", "email": "ANNA@ours.example"}, http.StatusConflict)
			if len(p.Errors) != 1 || p.Errors[0].Field != "email" || !strings.Contains(p.Detail, anna.ID) {
				t.Errorf("second user with the address: %+v, want 409 on email naming %s", p, anna.ID)
			}
			p = e.problem(t, http.MethodPost, "/api/v1/users", admin, map[string]any{"user_name": "ANNA", "email": "other@ours.example"}, http.StatusUnprocessableEntity)
			if len(p.Errors) != 1 || p.Errors[0].Field != "user_name" {
				t.Errorf("taken user name: %+v, want 422 on user_name", p)
			}
			e.problem(t, http.MethodPost, "/api/v1/users", agent, map[string]any{"user_name": "bert"}, http.StatusForbidden)

			var bert dirWritten
			e.mustJSON(t, http.MethodPost, "/api/v1/users", admin, map[string]any{"user_name": "bert", "email": "bert@ours.example"}, http.StatusCreated, &bert)
			e.problem(t, http.MethodPut, "/api/v1/users/"+bert.ID, admin, map[string]any{"email": "anna@ours.example"}, http.StatusConflict)
			var changed dirWritten
			e.mustJSON(t, http.MethodPut, "/api/v1/users/"+bert.ID, admin, map[string]any{"user_name": "bert.b", "name": "Bert"}, http.StatusOK, &changed)
			var u projections.User
			e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/users/%s?min_position=%d", bert.ID, changed.Position), agent, nil, http.StatusOK, &u)
			if u.UserName != "bert.b" || u.Name != "Bert" || u.Email != "bert@ours.example" || u.Removed {
				t.Errorf("user after PUT = %+v, want bert.b, Bert, the address kept", u)
			}

			// fallback_user_id must name a current user, who stays while
			// an account names them.
			body := account("Support")
			body["fallback_user_id"] = "no-such-user"
			p = e.problem(t, http.MethodPost, "/api/v1/inbound-accounts", admin, body, http.StatusUnprocessableEntity)
			if len(p.Errors) != 1 || p.Errors[0].Field != "fallback_user_id" {
				t.Errorf("unknown fallback user: %+v, want 422 on fallback_user_id", p)
			}
			body["fallback_user_id"] = anna.ID
			var acc struct{ ID string }
			e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", admin, body, http.StatusCreated, &acc)
			p = e.problem(t, http.MethodDelete, "/api/v1/users/"+anna.ID, admin, nil, http.StatusConflict)
			if !strings.Contains(p.Detail, acc.ID) || !strings.Contains(p.Detail, "fallback") {
				t.Errorf("removing a fallback user: %+v, want 409 naming account %s", p, acc.ID)
			}
			e.mustJSON(t, http.MethodPut, "/api/v1/inbound-accounts/"+acc.ID, admin, map[string]any{"fallback_user_id": bert.ID}, http.StatusOK, nil)
			var removed dirWritten
			e.mustJSON(t, http.MethodDelete, "/api/v1/users/"+anna.ID, admin, nil, http.StatusOK, &removed)
			e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/users/%s?min_position=%d", anna.ID, removed.Position), agent, nil, http.StatusOK, &u)
			if !u.Removed || u.Email != "anna@ours.example" {
				t.Errorf("removed user = %+v, want removed, keeping the address", u)
			}
			// A removed user is no fallback user, and keeps the address.
			e.problem(t, http.MethodPut, "/api/v1/inbound-accounts/"+acc.ID, admin, map[string]any{"fallback_user_id": anna.ID}, http.StatusUnprocessableEntity)
			e.problem(t, http.MethodPost, "/api/v1/users", admin, map[string]any{"user_name": "anna3", "email": "anna@ours.example"}, http.StatusConflict)

			var h dirHistory
			e.mustJSON(t, http.MethodGet, "/api/v1/users/"+anna.ID+"/history", e.tokens[domain.RoleAuditor], nil, http.StatusOK, &h)
			if got := h.types(); !slices.Equal(got, []string{domain.UserCreatedName, domain.UserRemovedName}) || h.Items[1].Actor == "" {
				t.Errorf("user history = %+v, want UserCreated, UserRemoved with actors", h)
			}

			// Locations change and go.
			e.mustJSON(t, http.MethodPut, "/api/v1/locations/"+hq.ID, admin, map[string]any{"name": "Head office"}, http.StatusOK, nil)
			e.mustJSON(t, http.MethodDelete, "/api/v1/locations/"+hq.ID, admin, nil, http.StatusOK, &removed)
			var l projections.Location
			e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/locations/%s?min_position=%d", hq.ID, removed.Position), agent, nil, http.StatusOK, &l)
			if l.Name != "Head office" || l.Domain != "ours.example" || !l.Removed {
				t.Errorf("location = %+v, want Head office, ours.example, removed", l)
			}
			e.mustJSON(t, http.MethodGet, "/api/v1/locations/"+hq.ID+"/history", admin, nil, http.StatusOK, &h)
			if got := h.types(); !slices.Equal(got, []string{domain.LocationCreatedName, domain.LocationUpdatedName, domain.LocationRemovedName}) {
				t.Errorf("location history = %v", got)
			}
			e.problem(t, http.MethodPut, "/api/v1/users/"+bert.ID, admin, map[string]any{"location_id": hq.ID}, http.StatusUnprocessableEntity)
		})
	}
}

func TestResources_RegistryWithMembersAndHistory(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin := e.tokens[domain.RoleAdmin]
			var anna dirWritten
			e.mustJSON(t, http.MethodPost, "/api/v1/users", admin, map[string]any{"user_name": "anna", "email": "anna@ours.example"}, http.StatusCreated, &anna)
			var out struct{ ID string }
			e.mustJSON(t, http.MethodPost, "/api/v1/outbound-accounts", admin, map[string]any{"name": "team mail", "default": true,
				"host": "smtp.example.org", "sender_address": "team@ours.example"}, http.StatusCreated, &out)

			p := e.problem(t, http.MethodPost, "/api/v1/resources", admin, map[string]any{"name": "1st level", "members": []string{"nobody"},
				"outbound_account_id": "nothing"}, http.StatusUnprocessableEntity)
			if len(p.Errors) != 2 {
				t.Errorf("bad references: %+v, want members and outbound_account_id named", p)
			}
			var r struct {
				domain.Resource
				Position int64 `json:"position"`
			}
			e.mustJSON(t, http.MethodPost, "/api/v1/resources", admin, map[string]any{"name": "1st level", "members": []string{anna.ID},
				"outbound_account_id": out.ID}, http.StatusCreated, &r)
			if r.ID == "" || !slices.Equal(r.Members, []string{anna.ID}) || r.OutboundAccountID != out.ID {
				t.Errorf("created resource %+v", r)
			}
			e.problem(t, http.MethodPost, "/api/v1/resources", admin, map[string]any{"name": "1ST LEVEL"}, http.StatusConflict)

			// Accounts and tickets name a resource by id.
			body := account("Support")
			body["resource"] = "no such resource"
			p = e.problem(t, http.MethodPost, "/api/v1/inbound-accounts", admin, body, http.StatusUnprocessableEntity)
			if len(p.Errors) != 1 || p.Errors[0].Field != "resource" {
				t.Errorf("unknown resource: %+v, want 422 on resource", p)
			}
			body["resource"] = r.ID
			var acc struct{ ID string }
			e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", admin, body, http.StatusCreated, &acc)
			p = e.problem(t, http.MethodDelete, "/api/v1/resources/"+r.ID, admin, nil, http.StatusConflict)
			if !strings.Contains(p.Detail, acc.ID) {
				t.Errorf("deleting a resource in use: %+v, want 409 naming %s", p, acc.ID)
			}

			e.mustJSON(t, http.MethodPut, "/api/v1/resources/"+r.ID, admin, map[string]any{"members": []string{}}, http.StatusOK, &r)
			if len(r.Members) != 0 || r.Name != "1st level" || r.OutboundAccountID != out.ID {
				t.Errorf("after PUT members []: %+v, want no members and the rest kept", r)
			}
			var list struct{ Items []domain.Resource }
			e.mustJSON(t, http.MethodGet, "/api/v1/resources", e.tokens[domain.RoleAnalyst], nil, http.StatusOK, &list)
			if len(list.Items) != 1 {
				t.Errorf("resources = %+v, want one", list.Items)
			}
			e.mustJSON(t, http.MethodPut, "/api/v1/inbound-accounts/"+acc.ID, admin, map[string]any{"resource": ""}, http.StatusOK, nil)
			e.mustJSON(t, http.MethodDelete, "/api/v1/resources/"+r.ID, admin, nil, http.StatusOK, nil)
			e.problem(t, http.MethodGet, "/api/v1/resources/"+r.ID, admin, nil, http.StatusNotFound)
			var h dirHistory
			e.mustJSON(t, http.MethodGet, "/api/v1/resources/"+r.ID+"/history", admin, nil, http.StatusOK, &h)
			if got := h.types(); !slices.Equal(got, []string{domain.ResourceCreatedName, domain.ResourceUpdatedName, domain.ResourceDeletedName}) ||
				!slices.Equal(h.Items[1].Changed, []string{"members"}) {
				t.Errorf("resource history = %+v", h)
			}
		})
	}
}

// createResource creates a resource named name as admin and returns its id.
func (e *testEnv) createResource(tb testing.TB, name string) string {
	tb.Helper()
	var r struct{ ID string }
	e.mustJSON(tb, http.MethodPost, "/api/v1/resources", e.tokens[domain.RoleAdmin], map[string]any{"name": name}, http.StatusCreated, &r)
	return r.ID
}

// createUser creates a user as admin and returns its id.
func (e *testEnv) createUser(tb testing.TB) (string, int64) {
	tb.Helper()
	name := uniq("user")
	var u dirWritten
	e.mustJSON(tb, http.MethodPost, "/api/v1/users", e.tokens[domain.RoleAdmin], map[string]any{"user_name": name, "email": name + "@example.org"},
		http.StatusCreated, &u)
	return u.ID, u.Position
}

// createLocation creates a location as admin and returns its id.
func (e *testEnv) createLocation(tb testing.TB) (string, int64) {
	tb.Helper()
	var l dirWritten
	e.mustJSON(tb, http.MethodPost, "/api/v1/locations", e.tokens[domain.RoleAdmin], map[string]any{"name": uniq("loc")}, http.StatusCreated, &l)
	return l.ID, l.Position
}

func init() {
	withUser := func(suffix string, body any) recipe {
		return func(tb testing.TB, e *testEnv) (string, any) {
			id, _ := e.createUser(tb)
			return "/api/v1/users/" + id + suffix, body
		}
	}
	withLocation := func(suffix string, body any) recipe {
		return func(tb testing.TB, e *testEnv) (string, any) {
			id, pos := e.createLocation(tb)
			return fmt.Sprintf("/api/v1/locations/%s%s?min_position=%d", id, suffix, pos), body
		}
	}
	withResource := func(suffix string, body any) recipe {
		return func(tb testing.TB, e *testEnv) (string, any) {
			return "/api/v1/resources/" + e.createResource(tb, uniq("team")) + suffix, body
		}
	}
	for k, r := range map[string]recipe{
		"POST /api/v1/users": func(testing.TB, *testEnv) (string, any) {
			return "/api/v1/users", map[string]any{"user_name": uniq("u"), "email": uniq("u") + "@example.org"}
		},
		"PUT /api/v1/users/:id":         withUser("", map[string]any{"name": "changed"}),
		"DELETE /api/v1/users/:id":      withUser("", nil),
		"GET /api/v1/users/:id/history": withUser("/history", nil),
		"POST /api/v1/locations": func(testing.TB, *testEnv) (string, any) {
			return "/api/v1/locations", map[string]any{"name": uniq("loc")}
		},
		"GET /api/v1/locations/:id":         withLocation("", nil),
		"PUT /api/v1/locations/:id":         withLocation("", map[string]any{"name": "changed"}),
		"DELETE /api/v1/locations/:id":      withLocation("", nil),
		"GET /api/v1/locations/:id/history": withLocation("/history", nil),
		"POST /api/v1/resources": func(testing.TB, *testEnv) (string, any) {
			return "/api/v1/resources", map[string]any{"name": uniq("team")}
		},
		"GET /api/v1/resources":             func(testing.TB, *testEnv) (string, any) { return "/api/v1/resources", nil },
		"GET /api/v1/resources/:id":         withResource("", nil),
		"PUT /api/v1/resources/:id":         withResource("", map[string]any{"description": "changed"}),
		"DELETE /api/v1/resources/:id":      withResource("", nil),
		"GET /api/v1/resources/:id/history": withResource("/history", nil),
	} {
		recipes[k] = r
	}
}
