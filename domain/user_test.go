package domain_test

import (
	"errors"
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
	ev, err = domain.DecideUpdateUser(u, domain.UpdateUser{Email: "anna@ours.example", Name: "Anna K.", LocationID: "l1", Actor: "admin", At: t0})
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

	auto := domain.EvolveUser(domain.User{}, domain.UserAutoCreated{UserID: "u3", UserName: "max", Email: customer, At: t0, CausedBy: "m1"})
	if !auto.AutoCreated || auto.Version != 1 {
		t.Errorf("EvolveUser(UserAutoCreated) = %+v, want an auto-created user", auto)
	}

	loc := domain.EvolveLocation(domain.Location{}, domain.LocationAutoCreated{LocationID: domain.LocationIDFor("customer.example"), Name: "customer.example", Domain: "customer.example"})
	if _, err := domain.DecideCreateLocation(loc, domain.CreateLocation{LocationID: loc.ID, Name: "Customer", Actor: "admin", At: t0}); !errors.Is(err, domain.ErrAlreadyExists) {
		t.Errorf("DecideCreateLocation(existing) error = %v, want ErrAlreadyExists", err)
	}
	if domain.LocationIDFor("Customer.Example ") != loc.ID {
		t.Error("LocationIDFor() depends on the domain's case or spaces")
	}
}
