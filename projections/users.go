package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// Subscriber names of the directory projections; see
// TicketsName for what changing them means.
const (
	UsersName     = "projection.users.v1"
	LocationsName = "projection.locations.v1"
)

// Users projects the user streams ("user-<id>") into the table users, one
// row per user, idempotent and in order by stream version as Tickets is.
type Users struct {
	*view
	table string
	// Options tunes the subscription (zero: the store's defaults).
	Options eventstore.SubscribeOptions
}

// NewUsers returns the user projection over store; reader reads its table.
func NewUsers(store eventstore.Store, reader Reader, logger *slog.Logger) *Users {
	return newUsers(store, reader, logger, "")
}

func newUsers(store eventstore.Store, reader Reader, logger *slog.Logger, suffix string) *Users {
	return &Users{view: newView("users", UsersName, store, reader, logger), table: "users" + suffix}
}

// Run keeps the table up to date until ctx ends.
func (p *Users) Run(ctx context.Context) error { return p.run(ctx, p.Handle, p.Options) }

// Handle applies one event through tx (the subscription's handler).
func (p *Users) Handle(ctx context.Context, tx eventstore.Tx, ev eventstore.RecordedEvent) error {
	id, ok := streamID(ev.Stream, domain.UserStream(""))
	if !ok {
		return nil
	}
	e, err := domain.UnmarshalEvent(ev.Type, ev.SchemaVersion, ev.Payload)
	if err != nil {
		p.logger.Error("users: undecodable event applied as a version bump only", "position", ev.Position,
			"type", ev.Type, "stream", ev.Stream, "err", err)
	}
	var u struct {
		userName, email, name, location string
		auto                            bool
		at                              time.Time
	}
	create := false
	switch e := e.(type) {
	case domain.UserAutoCreated:
		create, u.userName, u.email, u.name, u.location, u.auto, u.at = true, e.UserName, e.Email, e.Name, e.LocationID, true, e.At
	case domain.UserCreated:
		create, u.userName, u.email, u.name, u.location, u.at = true, e.UserName, e.Email, e.Name, e.LocationID, e.At
	case domain.UserUpdated:
		if e.UserName != "" {
			return p.update(ctx, tx, ev, `email = $3, name = $4, location_id = $5, updated_at = $6, user_name = $7`,
				e.Email, e.Name, e.LocationID, e.At.UTC(), e.UserName)
		}
		return p.update(ctx, tx, ev, `email = $3, name = $4, location_id = $5, updated_at = $6`,
			e.Email, e.Name, e.LocationID, e.At.UTC())
	case domain.UserRemoved:
		return p.update(ctx, tx, ev, `removed = TRUE, updated_at = $3`, e.At.UTC())
	default:
		return p.update(ctx, tx, ev, `updated_at = updated_at`)
	}
	if !create {
		return nil
	}
	if u.at.IsZero() {
		u.at = ev.RecordedAt
	}
	_, err = tx.Exec(ctx, `INSERT INTO `+p.table+` (id, user_name, email, name, location_id, auto_created, created_at,
		updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (id) DO NOTHING`,
		id, u.userName, u.email, u.name, u.location, u.auto, u.at.UTC(), ev.StreamVersion)
	if err != nil {
		return fmt.Errorf("projections: create user %s: %w", id, err)
	}
	return nil
}

// update sets the row's columns (set uses $3...) at the event's version,
// guarded like Tickets.Handle.
func (p *Users) update(ctx context.Context, tx eventstore.Tx, ev eventstore.RecordedEvent, set string, args ...any) error {
	id, _ := streamID(ev.Stream, domain.UserStream(""))
	return guardedUpdate(ctx, tx, p.logger, p.table, id, ev, set, args...)
}

func guardedUpdate(ctx context.Context, tx eventstore.Tx, logger *slog.Logger, table, id string,
	ev eventstore.RecordedEvent, set string, args ...any,
) error {
	all := append([]any{id, ev.StreamVersion}, args...)
	all = append(all, ev.StreamVersion-1)
	n, err := tx.Exec(ctx, `UPDATE `+table+` SET version = $2, `+set+` WHERE id = $1 AND version = $`+strconv.Itoa(len(all)), all...)
	if err != nil {
		return fmt.Errorf("projections: %s %s version %d: %w", table, id, ev.StreamVersion, err)
	}
	if n > 0 {
		return nil
	}
	g, err := checkVersion(ctx, tx, table, id, ev.StreamVersion)
	if err != nil {
		return fmt.Errorf("projections: %s %s version %d: %w", table, id, ev.StreamVersion, err)
	}
	switch g {
	case guardSeen:
		return nil
	case guardMissing:
		logger.Error("projection: event of a stream without its creation skipped", "table", table,
			"position", ev.Position, "type", ev.Type, "stream", ev.Stream)
		return nil
	}
	return fmt.Errorf("projections: %s %s: event version %d arrived before an earlier one", table, id, ev.StreamVersion)
}

// User is one row of the users view.
type User struct {
	ID          string    `json:"id"`
	UserName    string    `json:"user_name"`
	Email       string    `json:"email"`
	Name        string    `json:"name"`
	LocationID  string    `json:"location_id"`
	AutoCreated bool      `json:"auto_created"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Version     int64     `json:"version"`
	// Removed: an admin removed the user; their tickets keep them.
	Removed bool `json:"removed"`
}

// UserPage is one page of ListUsers; NextCursor is empty on the last.
type UserPage struct {
	Items      []User `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// ErrUserNotFound is returned by User for an id the view does not hold.
var ErrUserNotFound = errors.New("projections: user not found")

const userColumns = `id, user_name, email, name, location_id, auto_created, created_at, updated_at, version, removed`

// ListUsers returns a page of users by user name (then id); cursor is the
// NextCursor of the page before.
func (p *Users) ListUsers(ctx context.Context, limit int, cur string) (UserPage, error) {
	var items []User
	next, err := listByName(ctx, p.reader, p.table, userColumns, "user_name", limit, cur, func(rows eventstore.Rows) (string, string, error) {
		var u User
		if err := rows.Scan(&u.ID, &u.UserName, &u.Email, &u.Name, &u.LocationID, &u.AutoCreated, &u.CreatedAt,
			&u.UpdatedAt, &u.Version, &u.Removed); err != nil {
			return "", "", err
		}
		u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
		items = append(items, u)
		return u.UserName, u.ID, nil
	})
	if err != nil {
		return UserPage{}, fmt.Errorf("projections: list users: %w", err)
	}
	if items == nil {
		items = []User{}
	}
	return UserPage{Items: items, NextCursor: next}, nil
}

// User returns one user.
func (p *Users) User(ctx context.Context, id string) (User, error) {
	rows, err := p.reader.Query(ctx, `SELECT `+userColumns+` FROM `+p.table+` WHERE id = $1`, id)
	if err != nil {
		return User{}, fmt.Errorf("projections: user %s: %w", id, err)
	}
	defer func() { _ = rows.Close() }()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return User{}, fmt.Errorf("projections: user %s: %w", id, err)
		}
		return User{}, fmt.Errorf("projections: user %s: %w", id, ErrUserNotFound)
	}
	var u User
	if err := rows.Scan(&u.ID, &u.UserName, &u.Email, &u.Name, &u.LocationID, &u.AutoCreated, &u.CreatedAt,
		&u.UpdatedAt, &u.Version, &u.Removed); err != nil {
		return User{}, fmt.Errorf("projections: user %s: %w", id, err)
	}
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return u, nil
}

// nameCursor is the keyset position of the name-ordered lists.
type nameCursor struct {
	Name string `json:"k"`
	ID   string `json:"i"`
}

// listByName pages table by (key, id); scan reads one row and returns its
// key and id.
func listByName(ctx context.Context, r Reader, table, columns, key string, limit int, cur string,
	scan func(eventstore.Rows) (string, string, error),
) (string, error) {
	if limit <= 0 {
		limit = 50
	}
	q := `SELECT ` + columns + ` FROM ` + table
	args := []any{}
	if cur != "" {
		var c nameCursor
		if err := decodeOpaque(cur, &c); err != nil {
			return "", err
		}
		q += ` WHERE (` + key + ` > $1 OR (` + key + ` = $1 AND id > $2))`
		args = append(args, c.Name, c.ID)
	}
	args = append(args, int64(limit+1))
	q += ` ORDER BY ` + key + `, id LIMIT $` + strconv.Itoa(len(args))
	rows, err := r.Query(ctx, q, args...)
	if err != nil {
		return "", err
	}
	defer func() { _ = rows.Close() }()
	var n int
	var last nameCursor
	for rows.Next() {
		if n == limit {
			return encodeOpaque(last), nil
		}
		k, id, err := scan(rows)
		if err != nil {
			return "", err
		}
		last = nameCursor{Name: k, ID: id}
		n++
	}
	return "", rows.Err()
}

// Locations projects the location streams ("location-<id>") into the table
// locations, one row per location.
type Locations struct {
	*view
	table string
	// Options tunes the subscription (zero: the store's defaults).
	Options eventstore.SubscribeOptions
}

// NewLocations returns the location projection over store.
func NewLocations(store eventstore.Store, reader Reader, logger *slog.Logger) *Locations {
	return newLocations(store, reader, logger, "")
}

func newLocations(store eventstore.Store, reader Reader, logger *slog.Logger, suffix string) *Locations {
	return &Locations{view: newView("locations", LocationsName, store, reader, logger), table: "locations" + suffix}
}

// Run keeps the table up to date until ctx ends.
func (p *Locations) Run(ctx context.Context) error { return p.run(ctx, p.Handle, p.Options) }

// Handle applies one event through tx (the subscription's handler).
func (p *Locations) Handle(ctx context.Context, tx eventstore.Tx, ev eventstore.RecordedEvent) error {
	id, ok := streamID(ev.Stream, domain.LocationStream(""))
	if !ok {
		return nil
	}
	e, err := domain.UnmarshalEvent(ev.Type, ev.SchemaVersion, ev.Payload)
	if err != nil {
		p.logger.Error("locations: undecodable event applied as a version bump only", "position", ev.Position,
			"type", ev.Type, "stream", ev.Stream, "err", err)
	}
	var name, dom string
	var when time.Time
	switch e := e.(type) {
	case domain.LocationAutoCreated:
		name, dom, when = e.Name, e.Domain, e.At
	case domain.LocationCreated:
		name, dom, when = e.Name, e.Domain, e.At
	case domain.LocationUpdated:
		return guardedUpdate(ctx, tx, p.logger, p.table, id, ev, `name = $3, domain = $4`, e.Name, e.Domain)
	case domain.LocationRemoved:
		return guardedUpdate(ctx, tx, p.logger, p.table, id, ev, `removed = TRUE`)
	default:
		return guardedUpdate(ctx, tx, p.logger, p.table, id, ev, `name = name`)
	}
	if when.IsZero() {
		when = ev.RecordedAt
	}
	_, err = tx.Exec(ctx, `INSERT INTO `+p.table+` (id, name, domain, created_at, version) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO NOTHING`, id, name, dom, when.UTC(), ev.StreamVersion)
	if err != nil {
		return fmt.Errorf("projections: create location %s: %w", id, err)
	}
	return nil
}

// Location is one row of the locations view.
type Location struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Domain    string    `json:"domain"`
	CreatedAt time.Time `json:"created_at"`
	Version   int64     `json:"version"`
	Removed   bool      `json:"removed"`
}

// LocationPage is one page of ListLocations.
type LocationPage struct {
	Items      []Location `json:"items"`
	NextCursor string     `json:"next_cursor"`
}

// ListLocations returns a page of locations by name (then id).
func (p *Locations) ListLocations(ctx context.Context, limit int, cur string) (LocationPage, error) {
	var items []Location
	next, err := listByName(ctx, p.reader, p.table, locationColumns, "name", limit, cur,
		func(rows eventstore.Rows) (string, string, error) {
			var l Location
			if err := rows.Scan(&l.ID, &l.Name, &l.Domain, &l.CreatedAt, &l.Version, &l.Removed); err != nil {
				return "", "", err
			}
			l.CreatedAt = l.CreatedAt.UTC()
			items = append(items, l)
			return l.Name, l.ID, nil
		})
	if err != nil {
		return LocationPage{}, fmt.Errorf("projections: list locations: %w", err)
	}
	if items == nil {
		items = []Location{}
	}
	return LocationPage{Items: items, NextCursor: next}, nil
}

const locationColumns = `id, name, domain, created_at, version, removed`

// ErrLocationNotFound is returned by Location for an id the view does not
// hold.
var ErrLocationNotFound = errors.New("projections: location not found")

// Location returns one location.
func (p *Locations) Location(ctx context.Context, id string) (Location, error) {
	rows, err := p.reader.Query(ctx, `SELECT `+locationColumns+` FROM `+p.table+` WHERE id = $1`, id)
	if err != nil {
		return Location{}, fmt.Errorf("projections: location %s: %w", id, err)
	}
	defer func() { _ = rows.Close() }()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Location{}, fmt.Errorf("projections: location %s: %w", id, err)
		}
		return Location{}, fmt.Errorf("projections: location %s: %w", id, ErrLocationNotFound)
	}
	var l Location
	if err := rows.Scan(&l.ID, &l.Name, &l.Domain, &l.CreatedAt, &l.Version, &l.Removed); err != nil {
		return Location{}, fmt.Errorf("projections: location %s: %w", id, err)
	}
	l.CreatedAt = l.CreatedAt.UTC()
	return l, nil
}
