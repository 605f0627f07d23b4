package domain

import "errors"

// Errors the deciders return, matched with errors.Is. A mail is never
// "invalid": what a mail means is a decision expressed as events, so these
// are for commands, for configuration and for inconsistent input from the
// application layer (a programming error there).
var (
	// ErrInvalid marks a command or configuration that breaks a rule; the
	// wrapped errors name the fields.
	ErrInvalid = errors.New("domain: invalid")
	// ErrNotFound: the command addresses an aggregate that does not exist.
	ErrNotFound = errors.New("domain: not found")
	// ErrAlreadyExists: a create command for an aggregate that exists.
	ErrAlreadyExists = errors.New("domain: already exists")
	// ErrNameTaken: another account already has the name.
	ErrNameTaken = errors.New("domain: name taken")
	// ErrTicketClosed: the command needs an open ticket.
	ErrTicketClosed = errors.New("domain: ticket closed")
	// ErrInUse: the aggregate cannot be deleted while something relies on it.
	ErrInUse = errors.New("domain: in use")
	// ErrInconsistentInput: the application layer loaded state that does not
	// match the input (e.g. a referenced ticket the mail does not reference).
	ErrInconsistentInput = errors.New("domain: inconsistent input")
	// ErrUnknownEvent: UnmarshalEvent got a stored name it does not know.
	ErrUnknownEvent = errors.New("domain: unknown event")
	// ErrUnsupportedSchemaVersion: a payload is newer than this code.
	ErrUnsupportedSchemaVersion = errors.New("domain: unsupported schema version")
)
