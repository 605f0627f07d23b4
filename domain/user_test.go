package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestUniqueUserName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		email string
		taken map[string]bool
		want  string
	}{
		{"a free local part is used as it is, in lower case", "Max.Mustermann@customer.example", nil, "max.mustermann"},
		{"a taken local part gets the suffix 2", "max@a.example", map[string]bool{"max": true}, "max2"},
		{"the smallest free suffix is used", "max@a.example", map[string]bool{"max": true, "max2": true, "max3": true, "max5": true}, "max4"},
		{"an address without local part becomes user", "@a.example", nil, "user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := domain.UniqueUserName(tc.email, tc.taken); got != tc.want {
				t.Errorf("UniqueUserName(%q) = %q, want %q", tc.email, got, tc.want)
			}
		})
	}
}

func TestDecideUsersAndLocations(t *testing.T) {
	t.Parallel()
	var u domain.User
	ev, err := domain.DecideCreateUser(u, domain.CreateUser{UserID: "u1", UserName: "anna", Email: "Anna@Ours.example", Name: "Anna", Actor: "admin", At: t0})
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideCreateUser()", []domain.Event{domain.UserCreated{UserID: "u1", UserName: "anna", Email: "anna@ours.example", Name: "Anna", At: t0, Actor: "admin"}}, ev)
	u = domain.EvolveUser(u, ev[0])
	if _, err := domain.DecideCreateUser(u, domain.CreateUser{UserID: "u1", UserName: "anna2", Actor: "admin", At: t0}); !errors.Is(err, domain.ErrAlreadyExists) {
		t.Errorf("DecideCreateUser(existing) error = %v, want ErrAlreadyExists", err)
	}
	if _, err := domain.DecideCreateUser(domain.User{}, domain.CreateUser{UserID: "u2", UserName: "Anna", TakenUserNames: map[string]bool{"anna": true}, Actor: "admin", At: t0}); !errors.Is(err, domain.ErrInvalid) {
		t.Errorf("DecideCreateUser(taken name) error = %v, want ErrInvalid", err)
	}
	l1 := domain.Location{ID: "l1", Name: "HQ", Version: 1}
	if _, err := domain.DecideUpdateUser(u, domain.UpdateUser{Email: "anna@ours.example", LocationID: "l1", Actor: "admin", At: t0}); !errors.Is(err, domain.ErrInvalid) {
		t.Errorf("DecideUpdateUser(unknown location) error = %v, want ErrInvalid", err)
	}
	ev, err = domain.DecideUpdateUser(u, domain.UpdateUser{Email: "anna@ours.example", Name: "Anna K.", LocationID: "l1", Location: l1, Actor: "admin", At: t0})
	if err != nil {
		t.Fatal(err)
	}
	u = domain.EvolveUser(u, ev[0])
	want := domain.User{ID: "u1", UserName: "anna", Email: "anna@ours.example", Name: "Anna K.", LocationID: "l1", CreatedAt: t0, Version: 2}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Errorf("EvolveUser() (-want +got):\n%s", diff)
	}
	if ev, err := domain.DecideUpdateUser(u, domain.UpdateUser{Email: "anna@ours.example", Name: "Anna K.", LocationID: "l1", Actor: "admin", At: t0}); err != nil || ev != nil {
		t.Errorf("DecideUpdateUser(unchanged) = %v, %v, want no events", ev, err)
	}
}

func TestDecideUsers_oneAddressOneUserAndRemoval(t *testing.T) {
	t.Parallel()
	anna := domain.EvolveUser(domain.User{}, domain.UserCreated{UserID: "u1", UserName: "anna", Email: "anna@ours.example", At: t0, Actor: "admin"})
	// The address belongs to someone else, auto-created or not.
	if _, err := domain.DecideCreateUser(domain.User{}, domain.CreateUser{UserID: "u2", UserName: "anna2", Email: "ANNA@ours.example",
		EmailOwner: "u1", Actor: "admin", At: t0}); !errors.Is(err, domain.ErrEmailTaken) {
		t.Errorf("DecideCreateUser(address of u1) error = %v, want ErrEmailTaken", err)
	}
	if _, err := domain.DecideUpdateUser(anna, domain.UpdateUser{Email: "max@customer.example", EmailOwner: "u9", Actor: "admin", At: t0}); !errors.Is(err, domain.ErrEmailTaken) {
		t.Errorf("DecideUpdateUser(address of u9) error = %v, want ErrEmailTaken", err)
	}
	// Her own address and a new user name.
	ev, err := domain.DecideUpdateUser(anna, domain.UpdateUser{UserName: "anna.k", Email: "anna@ours.example", EmailOwner: "u1", Actor: "admin", At: t0})
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideUpdateUser(user name)", []domain.Event{domain.UserUpdated{UserID: "u1", UserName: "anna.k", Email: "anna@ours.example", At: t0, Actor: "admin"}}, ev)
	anna = domain.EvolveUser(anna, ev[0])
	if anna.UserName != "anna.k" {
		t.Errorf("user name after UserUpdated = %q, want anna.k", anna.UserName)
	}
	// The fallback user of accounts stays until they name another.
	if _, err := domain.DecideRemoveUser(anna, domain.RemoveUser{FallbackFor: []string{"acc-1", "acc-2"}, Actor: "admin", At: t0}); !errors.Is(err, domain.ErrUserInUse) ||
		!strings.Contains(err.Error(), "acc-1, acc-2") {
		t.Errorf("DecideRemoveUser(fallback) error = %v, want ErrUserInUse naming acc-1, acc-2", err)
	}
	ev, err = domain.DecideRemoveUser(anna, domain.RemoveUser{Actor: "admin", At: t0})
	if err != nil {
		t.Fatal(err)
	}
	anna = domain.EvolveUser(anna, ev[0])
	if !anna.Removed || !anna.Exists() {
		t.Errorf("after UserRemoved: %+v, want an existing, removed user", anna)
	}
	if ev, err := domain.DecideRemoveUser(anna, domain.RemoveUser{Actor: "admin", At: t0}); err != nil || ev != nil {
		t.Errorf("DecideRemoveUser(removed) = %v, %v, want nothing", ev, err)
	}
	if _, err := domain.DecideUpdateUser(anna, domain.UpdateUser{Email: "anna@ours.example", Name: "x", Actor: "admin", At: t0}); !errors.Is(err, domain.ErrInvalid) {
		t.Errorf("DecideUpdateUser(removed) error = %v, want ErrInvalid", err)
	}
	// Locations change and go, and a removed one is no one's new location.
	loc := domain.EvolveLocation(domain.Location{}, domain.LocationCreated{LocationID: "l1", Name: "HQ", At: t0, Actor: "admin"})
	ev, err = domain.DecideUpdateLocation(loc, domain.UpdateLocation{Name: "Head office", Domain: "Ours.Example", Actor: "admin", At: t0})
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideUpdateLocation()", []domain.Event{domain.LocationUpdated{LocationID: "l1", Name: "Head office", Domain: "ours.example", At: t0, Actor: "admin"}}, ev)
	loc = domain.EvolveLocation(loc, ev[0])
	ev, err = domain.DecideRemoveLocation(loc, "admin", t0)
	if err != nil {
		t.Fatal(err)
	}
	loc = domain.EvolveLocation(loc, ev[0])
	if _, err := domain.DecideCreateUser(domain.User{}, domain.CreateUser{UserID: "u3", UserName: "bert", LocationID: "l1", Location: loc,
		Actor: "admin", At: t0}); !errors.Is(err, domain.ErrInvalid) {
		t.Errorf("DecideCreateUser(removed location) error = %v, want ErrInvalid", err)
	}

	auto := domain.EvolveUser(domain.User{}, domain.UserAutoCreated{UserID: "u3", UserName: "max", Email: customer, At: t0, CausedBy: "m1"})
	if !auto.AutoCreated || auto.Version != 1 {
		t.Errorf("EvolveUser(UserAutoCreated) = %+v, want an auto-created user", auto)
	}

	autoLoc := domain.EvolveLocation(domain.Location{}, domain.LocationAutoCreated{LocationID: domain.LocationIDFor("customer.example"), Name: "customer.example", Domain: "customer.example"})
	if _, err := domain.DecideCreateLocation(autoLoc, domain.CreateLocation{LocationID: autoLoc.ID, Name: "Customer", Actor: "admin", At: t0}); !errors.Is(err, domain.ErrAlreadyExists) {
		t.Errorf("DecideCreateLocation(existing) error = %v, want ErrAlreadyExists", err)
	}
	if domain.LocationIDFor("Customer.Example ") != autoLoc.ID {
		t.Error("LocationIDFor() depends on the domain's case or spaces")
	}
}
