package domain

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// UserIDFor derives the id of a user created from a mail address, so that
// the same unknown sender always maps to the same user id (two mails from
// them racing give one user: the second append conflicts on the stream).
func UserIDFor(email string) string { return hashID("user", normalizeEmail(email)) }

// LocationIDFor derives the id of the location of a mail domain; the
// application layer appends LocationAutoCreated to its stream expecting it
// not to exist, which makes "once per domain" hold under concurrency.
func LocationIDFor(domain string) string {
	return hashID("location", strings.ToLower(strings.TrimSpace(domain)))
}

// UserStream and LocationStream name the aggregates' event streams.
func UserStream(id string) string { return "user-" + id }

// LocationStream names a location's event stream.
func LocationStream(id string) string { return "location-" + id }

// User is a person in the directory. The zero User does not exist.
type User struct {
	ID          string    `json:"id"`
	UserName    string    `json:"user_name"`
	Email       string    `json:"email"`
	Name        string    `json:"name,omitempty"`
	LocationID  string    `json:"location_id,omitempty"`
	AutoCreated bool      `json:"auto_created,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	Version     int64     `json:"version"`
}

// Exists reports whether the user was created.
func (u User) Exists() bool { return u.ID != "" }

// Location is a location (customer) in the directory.
type Location struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Domain  string `json:"domain,omitempty"`
	Version int64  `json:"version"`
}

// Exists reports whether the location was created.
func (l Location) Exists() bool { return l.ID != "" }

// EvolveUser folds one event into u; events of other users are ignored.
func EvolveUser(u User, e Event) User {
	switch e := e.(type) {
	case UserAutoCreated:
		if u.Exists() {
			return u
		}
		u = User{ID: e.UserID, UserName: e.UserName, Email: e.Email, Name: e.Name, LocationID: e.LocationID, AutoCreated: true, CreatedAt: e.At}
	case UserCreated:
		if u.Exists() {
			return u
		}
		u = User{ID: e.UserID, UserName: e.UserName, Email: e.Email, Name: e.Name, LocationID: e.LocationID, CreatedAt: e.At}
	case UserUpdated:
		if e.UserID != u.ID {
			return u
		}
		u.Email, u.Name, u.LocationID = e.Email, e.Name, e.LocationID
	default:
		return u
	}
	u.Version++
	return u
}

// EvolveLocation folds one event into l.
func EvolveLocation(l Location, e Event) Location {
	switch e := e.(type) {
	case LocationAutoCreated:
		if l.Exists() {
			return l
		}
		l = Location{ID: e.LocationID, Name: e.Name, Domain: e.Domain}
	case LocationCreated:
		if l.Exists() {
			return l
		}
		l = Location{ID: e.LocationID, Name: e.Name, Domain: e.Domain}
	default:
		return l
	}
	l.Version++
	return l
}

// CreateUser is an admin's command to add a user. TakenUserNames holds the
// lower-cased user names in use.
type CreateUser struct {
	UserID         string
	UserName       string
	Email          string
	Name           string
	LocationID     string
	TakenUserNames map[string]bool
	Actor          string
	At             time.Time
}

// UpdateUser replaces a user's email, name and location.
type UpdateUser struct {
	Email      string
	Name       string
	LocationID string
	Actor      string
	At         time.Time
}

// DecideCreateUser validates cmd against u, the state of cmd.UserID's stream.
func DecideCreateUser(u User, cmd CreateUser) ([]Event, error) {
	errs := checkActor(cmd.Actor, cmd.At)
	if cmd.UserID == "" {
		errs = append(errs, errors.New("user_id: is empty"))
	}
	if strings.TrimSpace(cmd.UserName) == "" {
		errs = append(errs, errors.New("user_name: is empty"))
	} else if cmd.TakenUserNames[strings.ToLower(cmd.UserName)] {
		errs = append(errs, fmt.Errorf("user_name: %q is taken", cmd.UserName))
	}
	if cmd.Email != "" && !validEmail(cmd.Email) {
		errs = append(errs, fmt.Errorf("email: %q is not a mail address", cmd.Email))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create user: %w: %w", ErrInvalid, err)
	}
	if u.Exists() {
		return nil, fmt.Errorf("create user %s: %w", cmd.UserID, ErrAlreadyExists)
	}
	return []Event{UserCreated{UserID: cmd.UserID, UserName: cmd.UserName, Email: normalizeEmail(cmd.Email), Name: cmd.Name, LocationID: cmd.LocationID, At: cmd.At, Actor: cmd.Actor}}, nil
}

// DecideUpdateUser validates cmd; an update that changes nothing gives no event.
func DecideUpdateUser(u User, cmd UpdateUser) ([]Event, error) {
	errs := checkActor(cmd.Actor, cmd.At)
	if cmd.Email != "" && !validEmail(cmd.Email) {
		errs = append(errs, fmt.Errorf("email: %q is not a mail address", cmd.Email))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("update user: %w: %w", ErrInvalid, err)
	}
	if !u.Exists() {
		return nil, fmt.Errorf("update user: %w", ErrNotFound)
	}
	email := normalizeEmail(cmd.Email)
	if u.Email == email && u.Name == cmd.Name && u.LocationID == cmd.LocationID {
		return nil, nil
	}
	return []Event{UserUpdated{UserID: u.ID, Email: email, Name: cmd.Name, LocationID: cmd.LocationID, At: cmd.At, Actor: cmd.Actor}}, nil
}

// CreateLocation is an admin's command to add a location.
type CreateLocation struct {
	LocationID string
	Name       string
	Domain     string
	Actor      string
	At         time.Time
}

// DecideCreateLocation validates cmd against l, the state of its stream.
func DecideCreateLocation(l Location, cmd CreateLocation) ([]Event, error) {
	errs := checkActor(cmd.Actor, cmd.At)
	if cmd.LocationID == "" {
		errs = append(errs, errors.New("location_id: is empty"))
	}
	if strings.TrimSpace(cmd.Name) == "" {
		errs = append(errs, errors.New("name: is empty"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create location: %w: %w", ErrInvalid, err)
	}
	if l.Exists() {
		return nil, fmt.Errorf("create location %s: %w", cmd.LocationID, ErrAlreadyExists)
	}
	return []Event{LocationCreated{LocationID: cmd.LocationID, Name: cmd.Name, Domain: strings.ToLower(strings.TrimSpace(cmd.Domain)), At: cmd.At, Actor: cmd.Actor}}, nil
}

// UniqueUserName returns the local part of email as a user name (lower case;
// "user" if it is empty), made unique against taken (lower-cased names in
// use) by appending the smallest number from 2 up that is free:
// "max", "max2", "max3". It always terminates: at most len(taken)+1 tries.
func UniqueUserName(email string, taken map[string]bool) string {
	base := localPart(email)
	if base == "" {
		base = "user"
	}
	if !taken[base] {
		return base
	}
	for i := 2; ; i++ {
		if name := base + strconv.Itoa(i); !taken[name] {
			return name
		}
	}
}
