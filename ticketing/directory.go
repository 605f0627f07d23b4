package ticketing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// The directory: users (auto-created by the intake or managed by an admin,
// one per address), locations and resources (teams). Users and locations
// live in their own streams; intake_users indexes users by address and
// user name for the intake and for the admin's commands alike, written in
// the transaction of the events it indexes.

// resourceMembers returns the addresses of the current members of
// resourceID: the users the resource lists, read from their streams, less
// removed users and users without an address. A resource id that names no
// resource (a bare string of earlier versions) has no members.
func resourceMembers(ctx context.Context, tx eventstore.Tx, resources domain.Resources, resourceID string) ([]domain.Address, error) {
	r, ok := resources.ByID[resourceID]
	if !ok || len(r.Members) == 0 {
		return nil, nil
	}
	streams := make([]string, len(r.Members))
	for i, id := range r.Members {
		streams[i] = domain.UserStream(id)
	}
	evs, err := tx.ReadStreams(ctx, streams)
	if err != nil {
		return nil, fmt.Errorf("read the members of resource %s: %w", resourceID, err)
	}
	users := map[string]domain.User{}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", re.Stream, err)
		}
		id := strings.TrimPrefix(re.Stream, domain.UserStream(""))
		users[id] = domain.EvolveUser(users[id], ev)
	}
	var out []domain.Address
	for _, id := range r.Members {
		if u := users[id]; u.Exists() && !u.Removed && u.Email != "" {
			out = append(out, domain.Address{Name: u.Name, Email: u.Email})
		}
	}
	return out, nil
}

// loadResourceMembers fills in the member rule's input for a mail that
// references a ticket: the addresses of the ticket's resource's members,
// and whether the sender is one of them.
func (pm *ProcessManager) loadResourceMembers(ctx context.Context, tx eventstore.Tx, in *domain.MailInput, senderEmail string) error {
	if in.Referenced == nil || in.Referenced.ResourceID == "" {
		return nil
	}
	pm.mu.Lock()
	resources, err := pm.resources.load(ctx, tx)
	pm.mu.Unlock()
	if err != nil {
		return err
	}
	members, err := resourceMembers(ctx, tx, resources, in.Referenced.ResourceID)
	if err != nil {
		return err
	}
	in.ResourceMembers = members
	in.SenderIsResourceMember = domain.IsResourceMember(members, senderEmail)
	return nil
}

// reindexUser sets the user's row of intake_users to the user's current
// state, folded from the stream: the admin's commands index in their own
// transaction, and the intake's subscription, which sees the same events
// later, then writes the same row again instead of an older address.
func reindexUser(ctx context.Context, tx eventstore.Tx, userID string) error {
	evs, err := tx.ReadStream(ctx, domain.UserStream(userID), 1, 0)
	if err != nil {
		return fmt.Errorf("read user %s: %w", userID, err)
	}
	var u domain.User
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("read user %s: %w", userID, err)
		}
		u = domain.EvolveUser(u, ev)
	}
	if !u.Exists() {
		return nil
	}
	_, err = tx.Exec(ctx, `INSERT INTO intake_users (user_id, email, user_name) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, user_name = excluded.user_name`,
		u.ID, strings.ToLower(strings.TrimSpace(u.Email)), strings.ToLower(u.UserName))
	if err != nil {
		return fmt.Errorf("index user %s: %w", userID, err)
	}
	return nil
}

// Directory runs an admin's commands on users and locations: load the
// aggregate and what its rules need (the addresses and user names in use),
// decide, append at the version read, index, retrying when another writer
// got there first.
type Directory struct {
	store eventstore.Store
}

// NewDirectory returns the directory's command handler over store.
func NewDirectory(store eventstore.Store) *Directory { return &Directory{store: store} }

// UserFields are the fields of a user an admin sets.
type UserFields struct {
	UserName   string
	Email      string
	Name       string
	LocationID string
}

// DirectoryResult is what a directory command wrote: the aggregate's id,
// its events (none when nothing changed), the global position of the last
// one and the stream's version.
type DirectoryResult struct {
	ID       string
	Events   []domain.Event
	Position int64
	Version  int64
}

func (d *Directory) retry(ctx context.Context, what string, try func(ctx context.Context, tx eventstore.Tx) (DirectoryResult, error)) (DirectoryResult, error) {
	var lastErr error
	for range commandRetries {
		var res DirectoryResult
		err := d.store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			var err error
			res, err = try(ctx, tx)
			return err
		})
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, eventstore.ErrVersionConflict) {
			return DirectoryResult{}, fmt.Errorf("ticketing: %s: %w", what, err)
		}
		lastErr = err
	}
	return DirectoryResult{}, fmt.Errorf("ticketing: %s: gave up after %d conflicting writes: %w", what, commandRetries, lastErr)
}

// emailOwner returns the user that has email in the directory, "" if none.
func emailOwner(ctx context.Context, tx eventstore.Tx, email string) (string, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	if email == "" {
		return "", nil
	}
	var id string
	err := tx.QueryRow(ctx, `SELECT user_id FROM intake_users WHERE email = $1 ORDER BY user_id LIMIT 1`, email).Scan(&id)
	if errors.Is(err, eventstore.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up user %s: %w", email, err)
	}
	return id, nil
}

func userNameTaken(ctx context.Context, tx eventstore.Tx, name string) (map[string]bool, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	rows, err := tx.Query(ctx, `SELECT user_name FROM intake_users WHERE user_name = $1`, name)
	if err != nil {
		return nil, fmt.Errorf("taken user names: %w", err)
	}
	defer func() { _ = rows.Close() }()
	taken := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("taken user names: %w", err)
		}
		taken[n] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("taken user names: %w", err)
	}
	return taken, nil
}

// appendStream appends evs to stream at version and returns the result.
func appendStream(ctx context.Context, tx eventstore.Tx, stream string, version int64, evs []domain.Event, actor string, at time.Time) (DirectoryResult, error) {
	res := DirectoryResult{Events: evs, Version: version}
	if len(evs) == 0 {
		return res, nil
	}
	news := make([]eventstore.NewEvent, 0, len(evs))
	for _, e := range evs {
		name, sv, payload, err := domain.MarshalEvent(e)
		if err != nil {
			return res, err
		}
		news = append(news, eventstore.NewEvent{Type: name, SchemaVersion: sv, Payload: payload,
			Metadata: eventstore.Metadata{Actor: actor, OccurredAt: at}})
	}
	ar, err := tx.Append(ctx, eventstore.AppendRequest{Stream: stream, ExpectedVersion: version, Events: news})
	if err != nil {
		return res, err
	}
	res.Position, res.Version = ar.LastPosition, ar.StreamVersions[stream]
	return res, nil
}

func (l *loaded) streamVersion(stream string) int64 { return l.versions[stream] }

// CreateUser adds a user. Its id is UserIDFor(email), the id the intake
// would give an unknown sender with that address, while that stream is
// unused: the intake and the admin then cannot both create a user for one
// address (one of the two appends conflicts). Otherwise, and for a user
// without an address, it is fallbackID.
func (d *Directory) CreateUser(ctx context.Context, f UserFields, fallbackID, actor string, at time.Time) (DirectoryResult, error) {
	return d.retry(ctx, "create user", func(ctx context.Context, tx eventstore.Tx) (DirectoryResult, error) {
		l := &loaded{versions: map[string]int64{}}
		id := fallbackID
		var u domain.User
		if f.Email != "" {
			derived := domain.UserIDFor(f.Email)
			var err error
			if u, err = l.user(ctx, tx, derived); err != nil {
				return DirectoryResult{}, err
			}
			if !u.Exists() {
				id = derived
			}
		}
		if id == fallbackID {
			var err error
			if u, err = l.user(ctx, tx, id); err != nil {
				return DirectoryResult{}, err
			}
		}
		cmd := domain.CreateUser{UserID: id, UserName: strings.TrimSpace(f.UserName), Email: f.Email, Name: f.Name,
			LocationID: f.LocationID, Actor: actor, At: at}
		var err error
		if cmd.TakenUserNames, err = userNameTaken(ctx, tx, cmd.UserName); err != nil {
			return DirectoryResult{}, err
		}
		if cmd.EmailOwner, err = emailOwner(ctx, tx, f.Email); err != nil {
			return DirectoryResult{}, err
		}
		if f.LocationID != "" {
			if cmd.Location, err = l.location(ctx, tx, f.LocationID); err != nil {
				return DirectoryResult{}, err
			}
		}
		evs, err := domain.DecideCreateUser(u, cmd)
		if err != nil {
			return DirectoryResult{}, err
		}
		stream := domain.UserStream(id)
		res, err := appendStream(ctx, tx, stream, l.streamVersion(stream), evs, actor, at)
		if err != nil {
			return res, err
		}
		res.ID = id
		return res, reindexUser(ctx, tx, id)
	})
}

// UpdateUser changes a user's user name, address, name and location.
func (d *Directory) UpdateUser(ctx context.Context, id string, f UserFields, actor string, at time.Time) (DirectoryResult, error) {
	return d.retry(ctx, "update user "+id, func(ctx context.Context, tx eventstore.Tx) (DirectoryResult, error) {
		l := &loaded{versions: map[string]int64{}}
		u, err := l.user(ctx, tx, id)
		if err != nil {
			return DirectoryResult{}, err
		}
		cmd := domain.UpdateUser{UserName: f.UserName, Email: f.Email, Name: f.Name, LocationID: f.LocationID, Actor: actor, At: at}
		if cmd.TakenUserNames, err = userNameTaken(ctx, tx, f.UserName); err != nil {
			return DirectoryResult{}, err
		}
		if cmd.EmailOwner, err = emailOwner(ctx, tx, f.Email); err != nil {
			return DirectoryResult{}, err
		}
		if f.LocationID != "" {
			if cmd.Location, err = l.location(ctx, tx, f.LocationID); err != nil {
				return DirectoryResult{}, err
			}
		}
		evs, err := domain.DecideUpdateUser(u, cmd)
		if err != nil {
			return DirectoryResult{}, err
		}
		stream := domain.UserStream(id)
		res, err := appendStream(ctx, tx, stream, l.streamVersion(stream), evs, actor, at)
		if err != nil || len(evs) == 0 {
			res.ID = id
			return res, err
		}
		res.ID = id
		return res, reindexUser(ctx, tx, id)
	})
}

// RemoveUser removes a user; fallbackFor are the inbound accounts that name
// the user as their fallback user (the removal is then refused).
func (d *Directory) RemoveUser(ctx context.Context, id string, fallbackFor []string, actor string, at time.Time) (DirectoryResult, error) {
	return d.retry(ctx, "remove user "+id, func(ctx context.Context, tx eventstore.Tx) (DirectoryResult, error) {
		l := &loaded{versions: map[string]int64{}}
		u, err := l.user(ctx, tx, id)
		if err != nil {
			return DirectoryResult{}, err
		}
		evs, err := domain.DecideRemoveUser(u, domain.RemoveUser{FallbackFor: fallbackFor, Actor: actor, At: at})
		if err != nil {
			return DirectoryResult{}, err
		}
		stream := domain.UserStream(id)
		res, err := appendStream(ctx, tx, stream, l.streamVersion(stream), evs, actor, at)
		res.ID = id
		return res, err
	})
}

// User returns a user as its stream has it (the zero User if none).
func (d *Directory) User(ctx context.Context, id string) (domain.User, error) {
	users, err := d.Users(ctx, []string{id})
	return users[id], err
}

// Users returns the users of ids as their streams have them; ids without a
// user are left out.
func (d *Directory) Users(ctx context.Context, ids []string) (map[string]domain.User, error) {
	out := map[string]domain.User{}
	if len(ids) == 0 {
		return out, nil
	}
	streams := make([]string, len(ids))
	for i, id := range ids {
		streams[i] = domain.UserStream(id)
	}
	evs, err := d.store.ReadStreams(ctx, streams)
	if err != nil {
		return nil, fmt.Errorf("ticketing: read %d users: %w", len(ids), err)
	}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return nil, fmt.Errorf("ticketing: read %s: %w", re.Stream, err)
		}
		id := strings.TrimPrefix(re.Stream, domain.UserStream(""))
		out[id] = domain.EvolveUser(out[id], ev)
	}
	return out, nil
}

// CreateLocation adds a location with id.
func (d *Directory) CreateLocation(ctx context.Context, id, name, dom, actor string, at time.Time) (DirectoryResult, error) {
	return d.retry(ctx, "create location", func(ctx context.Context, tx eventstore.Tx) (DirectoryResult, error) {
		l := &loaded{versions: map[string]int64{}}
		loc, err := l.location(ctx, tx, id)
		if err != nil {
			return DirectoryResult{}, err
		}
		evs, err := domain.DecideCreateLocation(loc, domain.CreateLocation{LocationID: id, Name: name, Domain: dom, Actor: actor, At: at})
		if err != nil {
			return DirectoryResult{}, err
		}
		stream := domain.LocationStream(id)
		res, err := appendStream(ctx, tx, stream, l.streamVersion(stream), evs, actor, at)
		res.ID = id
		return res, err
	})
}

// UpdateLocation changes a location's name and domain.
func (d *Directory) UpdateLocation(ctx context.Context, id, name, dom, actor string, at time.Time) (DirectoryResult, error) {
	return d.retry(ctx, "update location "+id, func(ctx context.Context, tx eventstore.Tx) (DirectoryResult, error) {
		l := &loaded{versions: map[string]int64{}}
		loc, err := l.location(ctx, tx, id)
		if err != nil {
			return DirectoryResult{}, err
		}
		evs, err := domain.DecideUpdateLocation(loc, domain.UpdateLocation{Name: name, Domain: dom, Actor: actor, At: at})
		if err != nil {
			return DirectoryResult{}, err
		}
		stream := domain.LocationStream(id)
		res, err := appendStream(ctx, tx, stream, l.streamVersion(stream), evs, actor, at)
		res.ID = id
		return res, err
	})
}

// RemoveLocation removes a location.
func (d *Directory) RemoveLocation(ctx context.Context, id, actor string, at time.Time) (DirectoryResult, error) {
	return d.retry(ctx, "remove location "+id, func(ctx context.Context, tx eventstore.Tx) (DirectoryResult, error) {
		l := &loaded{versions: map[string]int64{}}
		loc, err := l.location(ctx, tx, id)
		if err != nil {
			return DirectoryResult{}, err
		}
		evs, err := domain.DecideRemoveLocation(loc, actor, at)
		if err != nil {
			return DirectoryResult{}, err
		}
		stream := domain.LocationStream(id)
		res, err := appendStream(ctx, tx, stream, l.streamVersion(stream), evs, actor, at)
		res.ID = id
		return res, err
	})
}

// Location returns a location as its stream has it (the zero Location if
// none).
func (d *Directory) Location(ctx context.Context, id string) (domain.Location, error) {
	evs, err := d.store.ReadStream(ctx, domain.LocationStream(id), 1, 0)
	if err != nil {
		return domain.Location{}, fmt.Errorf("ticketing: location %s: %w", id, err)
	}
	var l domain.Location
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return domain.Location{}, fmt.Errorf("ticketing: location %s: %w", id, err)
		}
		l = domain.EvolveLocation(l, ev)
	}
	return l, nil
}
