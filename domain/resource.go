package domain

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ResourcesStream holds every resource (team) event; one stream, so that a
// write expects the version of the registry it decided on (unique names).
const ResourcesStream = "resources"

// Resource is a team that tickets are given to (seed 000's "Ressource"):
// its members are directory users, whose addresses decide who is a member
// (no_status_change_for_resource_members) and who is told that a customer
// answered; OutboundAccountID sends the mail of its tickets (RULES.md
// section 4). Resources of earlier versions were bare strings in accounts
// and tickets: MigrateLegacyResources makes each such string a resource
// whose id is that string, so every stored reference keeps its meaning.
type Resource struct {
	ID                string   `json:"id"`
	Name              string   `json:"name"`
	Description       string   `json:"description,omitempty"`
	Members           []string `json:"members"`
	OutboundAccountID string   `json:"outbound_account_id,omitempty"`
}

// Stored names and schema versions of the resource events.
const (
	ResourceCreatedName = "ResourceCreated"
	ResourceUpdatedName = "ResourceUpdated"
	ResourceDeletedName = "ResourceDeleted"

	ResourceCreatedSchemaVersion = 1
	ResourceUpdatedSchemaVersion = 1
	ResourceDeletedSchemaVersion = 1
)

// ResourceCreated records a new resource.
type ResourceCreated struct {
	Resource Resource `json:"resource"`
	Actor    string   `json:"actor"`
}

// EventName implements Event.
func (ResourceCreated) EventName() string { return ResourceCreatedName }

// ResourceUpdated records a resource's whole new state and which fields
// changed.
type ResourceUpdated struct {
	Resource Resource `json:"resource"`
	Changed  []string `json:"changed"`
	Actor    string   `json:"actor"`
}

// EventName implements Event.
func (ResourceUpdated) EventName() string { return ResourceUpdatedName }

// ResourceDeleted records that a resource is gone.
type ResourceDeleted struct {
	ResourceID string `json:"resource_id"`
	Actor      string `json:"actor"`
}

// EventName implements Event.
func (ResourceDeleted) EventName() string { return ResourceDeletedName }

// Errors of the resource registry.
var (
	ErrResourceNotFound  = errors.New("domain: resource not found")
	ErrResourceNameTaken = errors.New("domain: a resource with that name exists")
	// ErrResourceInUse refuses deleting a resource that inbound accounts
	// give their new tickets to; the error names them.
	ErrResourceInUse = errors.New("domain: resource is used by inbound accounts")
)

// Resources is the registry of resources.
type Resources struct {
	ByID map[string]Resource
}

// EvolveResources folds one resource event into the registry.
func EvolveResources(s Resources, e Event) Resources {
	if s.ByID == nil {
		s.ByID = map[string]Resource{}
	}
	switch e := e.(type) {
	case ResourceCreated:
		s.ByID[e.Resource.ID] = e.Resource
	case ResourceUpdated:
		s.ByID[e.Resource.ID] = e.Resource
	case ResourceDeleted:
		delete(s.ByID, e.ResourceID)
	}
	return s
}

// ResourceRefs is what a resource's references are checked against: the
// directory's users (members must exist and not be removed) and the
// outgoing accounts.
type ResourceRefs struct {
	Users    map[string]User
	Outbound OutboundAccounts
}

// normalized trims the name and drops empty and repeated members, keeping
// their order.
func (r Resource) normalized() Resource {
	r.Name = strings.TrimSpace(r.Name)
	members := make([]string, 0, len(r.Members))
	for _, m := range r.Members {
		if m = strings.TrimSpace(m); m != "" && !slices.Contains(members, m) {
			members = append(members, m)
		}
	}
	r.Members = members
	return r
}

// validate reports every problem, each naming its API field, against cur,
// the resource before (zero for a new one): members kept from before may
// have been removed from the directory since, and an outgoing account kept
// may have been deleted (routing then falls back); only what changes must
// name current users and an existing account.
func (r Resource) validate(refs ResourceRefs, cur Resource) error {
	var errs []error
	if r.Name == "" {
		errs = append(errs, errors.New("name: must not be empty"))
	}
	for _, m := range r.Members {
		if slices.Contains(cur.Members, m) {
			continue
		}
		u, ok := refs.Users[m]
		switch {
		case !ok || !u.Exists():
			errs = append(errs, fmt.Errorf("members: %q is no user", m))
		case u.Removed:
			errs = append(errs, fmt.Errorf("members: user %q was removed", m))
		}
	}
	if r.OutboundAccountID != "" && r.OutboundAccountID != cur.OutboundAccountID {
		if _, ok := refs.Outbound.ByID[r.OutboundAccountID]; !ok {
			errs = append(errs, fmt.Errorf("outbound_account_id: %q is no outgoing account", r.OutboundAccountID))
		}
	}
	return errors.Join(errs...)
}

func (s Resources) nameTaken(name, exceptID string) bool {
	return nameTaken(s.ByID, name, exceptID, func(r Resource) string { return r.Name })
}

// DecideCreateResource validates a new resource and records it. The id
// comes in (the API generates it).
func DecideCreateResource(s Resources, r Resource, refs ResourceRefs, actor string) ([]Event, error) {
	r = r.normalized()
	if strings.TrimSpace(r.ID) == "" {
		return nil, errors.New("id: must not be empty")
	}
	if _, exists := s.ByID[r.ID]; exists {
		return nil, fmt.Errorf("id: %s exists", r.ID)
	}
	if err := r.validate(refs, Resource{}); err != nil {
		return nil, err
	}
	if s.nameTaken(r.Name, "") {
		return nil, fmt.Errorf("name: %w: %q", ErrResourceNameTaken, r.Name)
	}
	return []Event{ResourceCreated{Resource: r, Actor: actor}}, nil
}

// DecideUpdateResource replaces a resource; an update that changes nothing
// records nothing.
func DecideUpdateResource(s Resources, next Resource, refs ResourceRefs, actor string) ([]Event, error) {
	cur, ok := s.ByID[next.ID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrResourceNotFound, next.ID)
	}
	next = next.normalized()
	if err := next.validate(refs, cur); err != nil {
		return nil, err
	}
	if s.nameTaken(next.Name, next.ID) {
		return nil, fmt.Errorf("name: %w: %q", ErrResourceNameTaken, next.Name)
	}
	var changed []string
	add := func(name string, differ bool) {
		if differ {
			changed = append(changed, name)
		}
	}
	add("name", cur.Name != next.Name)
	add("description", cur.Description != next.Description)
	add("members", !slices.Equal(cur.Members, next.Members))
	add("outbound_account_id", cur.OutboundAccountID != next.OutboundAccountID)
	if len(changed) == 0 {
		return nil, nil
	}
	return []Event{ResourceUpdated{Resource: next, Changed: changed, Actor: actor}}, nil
}

// DecideDeleteResource removes a resource, unless inbound accounts give
// their new tickets to it (in). Tickets that name it keep the id; their
// mail is then sent by the category's or the default account.
func DecideDeleteResource(s Resources, in InboundAccounts, id, actor string) ([]Event, error) {
	if _, ok := s.ByID[id]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrResourceNotFound, id)
	}
	var usedBy []string
	for _, a := range in.ByID {
		if a.Resource == id {
			usedBy = append(usedBy, a.ID)
		}
	}
	if len(usedBy) > 0 {
		slices.Sort(usedBy)
		return nil, fmt.Errorf("%w: %s", ErrResourceInUse, strings.Join(usedBy, ", "))
	}
	return []Event{ResourceDeleted{ResourceID: id, Actor: actor}}, nil
}

// MigrateLegacyResources returns a ResourceCreated for every resource that
// inbound accounts (resource) and outgoing accounts (resources) name as a
// bare string of earlier versions and that is no resource id yet. The new
// resource's id is the string itself, so the stored references keep
// working unchanged; its name is the string too, made unique with " (2)",
// " (3)" and so on. It has no members until an admin adds them. Tickets
// assigned to other strings keep them: routing and the member rule treat
// an id that names no resource as a resource without members or account.
func MigrateLegacyResources(s Resources, in InboundAccounts, out OutboundAccounts, actor string) []Event {
	var names []string
	for _, a := range in.ByID {
		names = append(names, strings.TrimSpace(a.Resource))
	}
	for _, a := range out.ByID {
		for _, r := range a.Resources {
			names = append(names, strings.TrimSpace(r))
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	taken := Resources{ByID: map[string]Resource{}}
	for id, r := range s.ByID {
		taken.ByID[id] = r
	}
	var evs []Event
	for _, id := range names {
		if _, exists := taken.ByID[id]; id == "" || exists {
			continue
		}
		name := id
		for n := 2; taken.nameTaken(name, ""); n++ {
			name = fmt.Sprintf("%s (%d)", id, n)
		}
		r := Resource{ID: id, Name: name, Members: []string{}}
		taken.ByID[id] = r
		evs = append(evs, ResourceCreated{Resource: r, Actor: actor})
	}
	return evs
}

// IsResourceMember says whether email is one of members' addresses, in
// any letter case: membership is decided by the users' addresses.
func IsResourceMember(members []Address, email string) bool {
	email = normalizeEmail(email)
	if email == "" {
		return false
	}
	for _, m := range members {
		if normalizeEmail(m.Email) == email {
			return true
		}
	}
	return false
}

// SendingAccountFor picks the outgoing account of a ticket (RULES.md
// section 4): the outgoing account its resource names, when that one is
// enabled; else SendingAccount (outgoing accounts listing the resource, the
// category's, the default).
func SendingAccountFor(s OutboundAccounts, resources Resources, resourceID, category string) (OutboundAccount, bool) {
	if r, ok := resources.ByID[resourceID]; ok && resourceID != "" && r.OutboundAccountID != "" {
		if a, ok := s.ByID[r.OutboundAccountID]; ok && a.Enabled {
			return a, true
		}
	}
	return SendingAccount(s, resourceID, category)
}
