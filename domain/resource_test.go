package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func resourceRefs() domain.ResourceRefs {
	anna := domain.EvolveUser(domain.User{}, domain.UserCreated{UserID: "u-anna", UserName: "anna", Email: "anna@desk.example", At: t0, Actor: "admin"})
	gone := domain.EvolveUser(domain.User{}, domain.UserCreated{UserID: "u-gone", UserName: "gone", Email: "gone@desk.example", At: t0, Actor: "admin"})
	gone = domain.EvolveUser(gone, domain.UserRemoved{UserID: "u-gone", At: t0, Actor: "admin"})
	out := domain.EvolveOutboundAccounts(domain.OutboundAccounts{}, domain.OutboundAccountCreated{Account: smtpAccount("out-1")})
	return domain.ResourceRefs{Users: map[string]domain.User{"u-anna": anna, "u-gone": gone}, Outbound: out}
}

func TestDecideResources(t *testing.T) {
	t.Parallel()
	refs := resourceRefs()
	var s domain.Resources
	ev, err := domain.DecideCreateResource(s, domain.Resource{ID: "r1", Name: " 1st level ", Members: []string{"u-anna", "u-anna", " "},
		OutboundAccountID: "out-1"}, refs, "admin")
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideCreateResource()", []domain.Event{domain.ResourceCreated{Resource: domain.Resource{ID: "r1", Name: "1st level",
		Members: []string{"u-anna"}, OutboundAccountID: "out-1"}, Actor: "admin"}}, ev)
	s = domain.EvolveResources(s, ev[0])

	_, err = domain.DecideCreateResource(s, domain.Resource{ID: "r2", Name: "1ST LEVEL"}, refs, "admin")
	if !errors.Is(err, domain.ErrResourceNameTaken) {
		t.Errorf("DecideCreateResource(same name) error = %v, want ErrResourceNameTaken", err)
	}
	_, err = domain.DecideCreateResource(s, domain.Resource{ID: "r2", Name: "2nd", Members: []string{"u-nobody", "u-gone"}, OutboundAccountID: "out-9"}, refs, "admin")
	for _, want := range []string{`members: "u-nobody" is no user`, `members: user "u-gone" was removed`, `outbound_account_id: "out-9"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecideCreateResource(bad references) error = %v, want it to say %s", err, want)
		}
	}

	// A member removed from the directory since may stay listed.
	refs.Users["u-anna"] = domain.EvolveUser(refs.Users["u-anna"], domain.UserRemoved{UserID: "u-anna", At: t0, Actor: "admin"})
	ev, err = domain.DecideUpdateResource(s, domain.Resource{ID: "r1", Name: "First level", Members: []string{"u-anna"}}, refs, "admin")
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideUpdateResource()", []domain.Event{domain.ResourceUpdated{Resource: domain.Resource{ID: "r1", Name: "First level",
		Members: []string{"u-anna"}}, Changed: []string{"name", "outbound_account_id"}, Actor: "admin"}}, ev)
	s = domain.EvolveResources(s, ev[0])
	if ev, err := domain.DecideUpdateResource(s, s.ByID["r1"], refs, "admin"); err != nil || ev != nil {
		t.Errorf("DecideUpdateResource(unchanged) = %v, %v, want nothing", ev, err)
	}

	in := domain.EvolveInboundAccounts(domain.InboundAccounts{}, domain.InboundAccountCreated{Account: domain.InboundAccount{ID: "acc-1", Resource: "r1"}})
	if _, err := domain.DecideDeleteResource(s, in, "r1", "admin"); !errors.Is(err, domain.ErrResourceInUse) || !strings.Contains(err.Error(), "acc-1") {
		t.Errorf("DecideDeleteResource(used) error = %v, want ErrResourceInUse naming acc-1", err)
	}
	ev, err = domain.DecideDeleteResource(s, domain.InboundAccounts{}, "r1", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if s = domain.EvolveResources(s, ev[0]); len(s.ByID) != 0 {
		t.Errorf("after ResourceDeleted: %v, want no resources", s.ByID)
	}
}

func TestMigrateLegacyResources(t *testing.T) {
	t.Parallel()
	s := domain.EvolveResources(domain.Resources{}, domain.ResourceCreated{Resource: domain.Resource{ID: "abc", Name: "2nd level"}})
	in := domain.InboundAccounts{ByID: map[string]domain.InboundAccount{
		"a1": {ID: "a1", Resource: "1st level"}, "a2": {ID: "a2", Resource: "abc"}, "a3": {ID: "a3"},
	}}
	out := domain.OutboundAccounts{ByID: map[string]domain.OutboundAccount{"o1": {ID: "o1", Resources: []string{"1st level", "2nd level"}}}}
	got := domain.MigrateLegacyResources(s, in, out, "system")
	diffEvents(t, "MigrateLegacyResources()", []domain.Event{
		domain.ResourceCreated{Resource: domain.Resource{ID: "1st level", Name: "1st level", Members: []string{}}, Actor: "system"},
		domain.ResourceCreated{Resource: domain.Resource{ID: "2nd level", Name: "2nd level (2)", Members: []string{}}, Actor: "system"},
	}, got)
	for _, e := range got {
		s = domain.EvolveResources(s, e)
	}
	if again := domain.MigrateLegacyResources(s, in, out, "system"); len(again) != 0 {
		t.Errorf("MigrateLegacyResources() a second time = %v, want nothing", again)
	}
}

func TestSendingAccountFor_resourceAccountFirst(t *testing.T) {
	t.Parallel()
	def, team := smtpAccount("out-default"), smtpAccount("out-team")
	def.Default, team.Default = true, false
	accounts := domain.OutboundAccounts{ByID: map[string]domain.OutboundAccount{def.ID: def, team.ID: team}}
	resources := domain.Resources{ByID: map[string]domain.Resource{"r1": {ID: "r1", Name: "team", OutboundAccountID: "out-team"}}}
	if a, ok := domain.SendingAccountFor(accounts, resources, "r1", ""); !ok || a.ID != "out-team" {
		t.Errorf("SendingAccountFor(r1) = %s, %v, want the resource's out-team", a.ID, ok)
	}
	if a, ok := domain.SendingAccountFor(accounts, resources, "legacy", ""); !ok || a.ID != "out-default" {
		t.Errorf("SendingAccountFor(legacy) = %s, %v, want the default", a.ID, ok)
	}
	team.Enabled = false
	accounts.ByID[team.ID] = team
	if a, ok := domain.SendingAccountFor(accounts, resources, "r1", ""); !ok || a.ID != "out-default" {
		t.Errorf("SendingAccountFor(r1, its account disabled) = %s, %v, want the default", a.ID, ok)
	}
}

func TestIsResourceMember(t *testing.T) {
	t.Parallel()
	members := []domain.Address{{Email: "anna@desk.example"}}
	if !domain.IsResourceMember(members, " Anna@Desk.Example") || domain.IsResourceMember(members, "max@customer.example") ||
		domain.IsResourceMember(members, "") {
		t.Error("IsResourceMember() does not compare addresses ignoring case")
	}
}
