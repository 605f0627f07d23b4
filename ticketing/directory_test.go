package ticketing

import (
	"context"
	"errors"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// TestDirectory_MembersAreTheCurrentUsersWithAddresses: the member rule's
// input holds the resource's members as the directory has them now, less
// removed users and users without an address, with their current address.
func TestDirectory_MembersAreTheCurrentUsersWithAddresses(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		ctx := context.Background()
		dir := NewDirectory(store)
		create := func(name, email string) string {
			res, err := dir.CreateUser(ctx, UserFields{UserName: name, Email: email, Name: name}, "id-"+name, "admin", t0)
			if err != nil {
				t.Fatal(err)
			}
			return res.ID
		}
		anna, bert, carl, dora := create("anna", "anna@desk.example"), create("bert", "bert@desk.example"), create("carl", ""), create("dora", "dora@desk.example")
		if _, err := dir.UpdateUser(ctx, anna, UserFields{UserName: "anna", Email: "Anna.K@desk.example", Name: "Anna K"}, "admin", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := dir.RemoveUser(ctx, bert, nil, "admin", t0); err != nil {
			t.Fatal(err)
		}
		// A second user cannot take an address, whatever its case.
		if _, err := dir.CreateUser(ctx, UserFields{UserName: "dora2", Email: "DORA@desk.example"}, "id-dora2", "admin", t0); !errors.Is(err, domain.ErrEmailTaken) {
			t.Errorf("CreateUser(dora's address) error = %v, want ErrEmailTaken", err)
		}
		// The removed user keeps the address.
		if _, err := dir.UpdateUser(ctx, dora, UserFields{UserName: "dora", Email: "bert@desk.example"}, "admin", t0); !errors.Is(err, domain.ErrEmailTaken) {
			t.Errorf("UpdateUser(to bert's address) error = %v, want ErrEmailTaken", err)
		}
		appendEvent(t, store, domain.ResourcesStream, eventstore.NoStream, "", domain.ResourceCreated{Resource: domain.Resource{ID: "r1",
			Name: "1st level", Members: []string{anna, bert, carl, dora, "gone"}}, Actor: "admin"})

		var got []domain.Address
		err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			s, err := (&registry[domain.Resources]{stream: domain.ResourcesStream, evolve: domain.EvolveResources}).load(ctx, tx)
			if err != nil {
				return err
			}
			got, err = resourceMembers(ctx, tx, s, "r1")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []domain.Address{{Name: "Anna K", Email: "anna.k@desk.example"}, {Name: "dora", Email: "dora@desk.example"}}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("resourceMembers() = %v, want %v", got, want)
		}
		if domain.IsResourceMember(got, "bert@desk.example") || !domain.IsResourceMember(got, "ANNA.K@desk.example") {
			t.Error("a removed user counts as a member, or a current one does not")
		}
	})
}
