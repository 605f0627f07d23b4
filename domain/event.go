package domain

// Event is a fact the domain decided. Every event is a plain past-tense
// struct; EventName returns its stable stored name, which equals the Go type
// name on the day the event was introduced and never changes afterwards, even
// if the Go type is renamed (stored history must stay readable). Each event
// type also has a constant <Name>SchemaVersion; a change to the meaning or
// shape of the payload bumps it and adds an upcaster (see codec.go).
type Event interface {
	EventName() string
}
