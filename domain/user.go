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
	// Removed: an admin removed the user. The user stays in the directory
	// (their tickets keep them as requester, and their address stays
	// theirs) but is no member, fallback user or location of anything new.
	Removed bool `json:"removed,omitempty"`
}

// Exists reports whether the user was created.
func (u User) Exists() bool { return u.ID != "" }

// Location is a location (customer) in the directory.
type Location struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Domain  string `json:"domain,omitempty"`
	Version int64  `json:"version"`
	// Removed: an admin removed the location; users keep naming it.
	Removed bool `json:"removed,omitempty"`
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
		if e.UserName != "" {
			u.UserName = e.UserName
		}
	case UserRemoved:
		if e.UserID != u.ID {
			return u
		}
		u.Removed = true
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
	case LocationUpdated:
		if e.LocationID != l.ID {
			return l
		}
		l.Name, l.Domain = e.Name, e.Domain
	case LocationRemoved:
		if e.LocationID != l.ID {
			return l
		}
		l.Removed = true
	default:
		return l
	}
	l.Version++
	return l
}

// CreateUser is an admin's command to add a user. TakenUserNames holds the
// lower-cased user names in use. The directory is one for admin-managed and
// auto-created users: EmailOwner is the id of the user that has Email
// already (in any letter case, removed users included), "" when none.
// Location is the state of LocationID's stream (checked when LocationID is
// set).
type CreateUser struct {
	UserID         string
	UserName       string
	Email          string
	Name           string
	LocationID     string
	TakenUserNames map[string]bool
	EmailOwner     string
	Location       Location
	Actor          string
	At             time.Time
}

// UpdateUser replaces a user's user name, email, name and location; an
// empty UserName keeps it. TakenUserNames, EmailOwner and Location as in
// CreateUser (the user's own name and address count as free).
type UpdateUser struct {
	UserName       string
	Email          string
	Name           string
	LocationID     string
	TakenUserNames map[string]bool
	EmailOwner     string
	Location       Location
	Actor          string
	At             time.Time
}

// RemoveUser is an admin's command to remove a user. FallbackFor are the
// inbound accounts whose fallback_user_id names the user: while any do, the
// user cannot be removed (ErrUserInUse names them).
type RemoveUser struct {
	FallbackFor []string
	Actor       string
	At          time.Time
}

// Errors of the user directory.
var (
	// ErrEmailTaken: another user has the address; the error names them.
	ErrEmailTaken = errors.New("domain: another user has this e-mail address")
	// ErrUserInUse: inbound accounts name the user as their fallback user;
	// the error names them.
	ErrUserInUse = errors.New("domain: user is the fallback user of inbound accounts")
)

// checkLocation refuses a location id that names no current location.
func checkLocation(id string, l Location) error {
	switch {
	case id == "":
		return nil
	case !l.Exists() || l.ID != id:
		return fmt.Errorf("location_id: %q is no location", id)
	case l.Removed:
		return fmt.Errorf("location_id: location %q was removed", id)
	}
	return nil
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
	if err := checkLocation(cmd.LocationID, cmd.Location); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create user: %w: %w", ErrInvalid, err)
	}
	if u.Exists() {
		return nil, fmt.Errorf("create user %s: %w", cmd.UserID, ErrAlreadyExists)
	}
	if cmd.EmailOwner != "" {
		return nil, fmt.Errorf("email: %w: %s", ErrEmailTaken, cmd.EmailOwner)
	}
	return []Event{UserCreated{UserID: cmd.UserID, UserName: cmd.UserName, Email: normalizeEmail(cmd.Email), Name: cmd.Name, LocationID: cmd.LocationID, At: cmd.At, Actor: cmd.Actor}}, nil
}

// DecideUpdateUser validates cmd; an update that changes nothing gives no
// event. A removed user cannot be changed.
func DecideUpdateUser(u User, cmd UpdateUser) ([]Event, error) {
	errs := checkActor(cmd.Actor, cmd.At)
	if cmd.Email != "" && !validEmail(cmd.Email) {
		errs = append(errs, fmt.Errorf("email: %q is not a mail address", cmd.Email))
	}
	userName := strings.TrimSpace(cmd.UserName)
	if userName == "" {
		userName = u.UserName
	} else if !strings.EqualFold(userName, u.UserName) && cmd.TakenUserNames[strings.ToLower(userName)] {
		errs = append(errs, fmt.Errorf("user_name: %q is taken", userName))
	}
	if cmd.LocationID != u.LocationID {
		if err := checkLocation(cmd.LocationID, cmd.Location); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("update user: %w: %w", ErrInvalid, err)
	}
	if !u.Exists() {
		return nil, fmt.Errorf("update user: %w", ErrNotFound)
	}
	if u.Removed {
		return nil, fmt.Errorf("update user %s: %w: the user was removed", u.ID, ErrInvalid)
	}
	if cmd.EmailOwner != "" && cmd.EmailOwner != u.ID {
		return nil, fmt.Errorf("email: %w: %s", ErrEmailTaken, cmd.EmailOwner)
	}
	email := normalizeEmail(cmd.Email)
	if u.UserName == userName && u.Email == email && u.Name == cmd.Name && u.LocationID == cmd.LocationID {
		return nil, nil
	}
	ev := UserUpdated{UserID: u.ID, Email: email, Name: cmd.Name, LocationID: cmd.LocationID, At: cmd.At, Actor: cmd.Actor}
	if userName != u.UserName {
		ev.UserName = userName
	}
	return []Event{ev}, nil
}

// DecideRemoveUser removes a user from the directory. Their tickets keep
// them as requester (shown as removed); removing twice records nothing.
func DecideRemoveUser(u User, cmd RemoveUser) ([]Event, error) {
	if errs := checkActor(cmd.Actor, cmd.At); len(errs) > 0 {
		return nil, fmt.Errorf("remove user: %w: %w", ErrInvalid, errors.Join(errs...))
	}
	if !u.Exists() {
		return nil, fmt.Errorf("remove user: %w", ErrNotFound)
	}
	if u.Removed {
		return nil, nil
	}
	if len(cmd.FallbackFor) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrUserInUse, strings.Join(cmd.FallbackFor, ", "))
	}
	return []Event{UserRemoved{UserID: u.ID, At: cmd.At, Actor: cmd.Actor}}, nil
}

// UpdateLocation replaces a location's name and domain.
type UpdateLocation struct {
	Name   string
	Domain string
	Actor  string
	At     time.Time
}

// DecideUpdateLocation validates cmd; no change gives no event.
func DecideUpdateLocation(l Location, cmd UpdateLocation) ([]Event, error) {
	errs := checkActor(cmd.Actor, cmd.At)
	if strings.TrimSpace(cmd.Name) == "" {
		errs = append(errs, errors.New("name: is empty"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("update location: %w: %w", ErrInvalid, err)
	}
	if !l.Exists() {
		return nil, fmt.Errorf("update location: %w", ErrNotFound)
	}
	if l.Removed {
		return nil, fmt.Errorf("update location %s: %w: the location was removed", l.ID, ErrInvalid)
	}
	dom := strings.ToLower(strings.TrimSpace(cmd.Domain))
	if l.Name == cmd.Name && l.Domain == dom {
		return nil, nil
	}
	return []Event{LocationUpdated{LocationID: l.ID, Name: cmd.Name, Domain: dom, At: cmd.At, Actor: cmd.Actor}}, nil
}

// DecideRemoveLocation removes a location; its users keep naming it.
func DecideRemoveLocation(l Location, actor string, at time.Time) ([]Event, error) {
	if errs := checkActor(actor, at); len(errs) > 0 {
		return nil, fmt.Errorf("remove location: %w: %w", ErrInvalid, errors.Join(errs...))
	}
	if !l.Exists() {
		return nil, fmt.Errorf("remove location: %w", ErrNotFound)
	}
	if l.Removed {
		return nil, nil
	}
	return []Event{LocationRemoved{LocationID: l.ID, At: at, Actor: actor}}, nil
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
