package domain

import (
	"encoding/json"
	"fmt"
)

// eventType is one registered event type: its current schema version, how
// to decode the current version, and upcasters from older versions, each
// turning version v's payload into version v+1's.
type eventType struct {
	version   int
	decode    func([]byte) (Event, error)
	upcasters map[int]func(json.RawMessage) (json.RawMessage, error)
}

func decoder[T Event]() func([]byte) (Event, error) {
	return func(b []byte) (Event, error) {
		var e T
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, err
		}
		return e, nil
	}
}

// registry maps every stored name to its type. Names are never removed:
// every event ever stored must stay readable.
var registry = map[string]eventType{
	MailReceivedName:            {version: MailReceivedSchemaVersion, decode: decoder[MailReceived]()},
	MailFailedName:              {version: MailFailedSchemaVersion, decode: decoder[MailFailed]()},
	MailSkippedName:             {version: MailSkippedSchemaVersion, decode: decoder[MailSkipped]()},
	MailboxPolledName:           {version: MailboxPolledSchemaVersion, decode: decoder[MailboxPolled]()},
	MailboxDeliveryChangedName:  {version: MailboxDeliveryChangedSchemaVersion, decode: decoder[MailboxDeliveryChanged]()},
	TicketCreatedName:           {version: TicketCreatedSchemaVersion, decode: decoder[TicketCreated](), upcasters: map[int]func(json.RawMessage) (json.RawMessage, error){1: upcastTicketCreatedV1}},
	MailAppendedName:            {version: MailAppendedSchemaVersion, decode: decoder[MailAppended]()},
	MailBundledName:             {version: MailBundledSchemaVersion, decode: decoder[MailBundled]()},
	MailRejectedName:            {version: MailRejectedSchemaVersion, decode: decoder[MailRejected]()},
	TicketReactivatedName:       {version: TicketReactivatedSchemaVersion, decode: decoder[TicketReactivated]()},
	StatusLeftUnchangedName:     {version: StatusLeftUnchangedSchemaVersion, decode: decoder[StatusLeftUnchanged]()},
	TicketStatusChangedName:     {version: TicketStatusChangedSchemaVersion, decode: decoder[TicketStatusChanged]()},
	TicketAssignedName:          {version: TicketAssignedSchemaVersion, decode: decoder[TicketAssigned]()},
	TicketClosedName:            {version: TicketClosedSchemaVersion, decode: decoder[TicketClosed]()},
	TicketReopenedName:          {version: TicketReopenedSchemaVersion, decode: decoder[TicketReopened]()},
	TicketCategoryChangedName:   {version: TicketCategoryChangedSchemaVersion, decode: decoder[TicketCategoryChanged]()},
	TicketPriorityChangedName:   {version: TicketPriorityChangedSchemaVersion, decode: decoder[TicketPriorityChanged]()},
	NoteAddedName:               {version: NoteAddedSchemaVersion, decode: decoder[NoteAdded]()},
	DeliveryFailureRecordedName: {version: DeliveryFailureRecordedSchemaVersion, decode: decoder[DeliveryFailureRecorded]()},
	UserAutoCreatedName:         {version: UserAutoCreatedSchemaVersion, decode: decoder[UserAutoCreated]()},
	UserCreatedName:             {version: UserCreatedSchemaVersion, decode: decoder[UserCreated]()},
	UserUpdatedName:             {version: UserUpdatedSchemaVersion, decode: decoder[UserUpdated]()},
	LocationAutoCreatedName:     {version: LocationAutoCreatedSchemaVersion, decode: decoder[LocationAutoCreated]()},
	LocationCreatedName:         {version: LocationCreatedSchemaVersion, decode: decoder[LocationCreated]()},
	ErrorMailQueuedName:         {version: ErrorMailQueuedSchemaVersion, decode: decoder[ErrorMailQueued]()},
	AutoReplyQueuedName:         {version: AutoReplyQueuedSchemaVersion, decode: decoder[AutoReplyQueued]()},
	NotificationQueuedName:      {version: NotificationQueuedSchemaVersion, decode: decoder[NotificationQueued]()},
	AutoMailSuppressedName:      {version: AutoMailSuppressedSchemaVersion, decode: decoder[AutoMailSuppressed]()},
	ReplyQueuedName:             {version: ReplyQueuedSchemaVersion, decode: decoder[ReplyQueued]()},
	InboundAccountCreatedName:   {version: InboundAccountCreatedSchemaVersion, decode: decoder[InboundAccountCreated]()},
	InboundAccountUpdatedName:   {version: InboundAccountUpdatedSchemaVersion, decode: decoder[InboundAccountUpdated]()},
	InboundAccountDeletedName:   {version: InboundAccountDeletedSchemaVersion, decode: decoder[InboundAccountDeleted]()},
	OutboundAccountCreatedName:  {version: OutboundAccountCreatedSchemaVersion, decode: decoder[OutboundAccountCreated]()},
	OutboundAccountUpdatedName:  {version: OutboundAccountUpdatedSchemaVersion, decode: decoder[OutboundAccountUpdated]()},
	OutboundAccountDeletedName:  {version: OutboundAccountDeletedSchemaVersion, decode: decoder[OutboundAccountDeleted]()},
	SettingsChangedName:         {version: SettingsChangedSchemaVersion, decode: decoder[SettingsChanged]()},
	APITokenIssuedName:          {version: APITokenIssuedSchemaVersion, decode: decoder[APITokenIssued]()},
	APITokenRevokedName:         {version: APITokenRevokedSchemaVersion, decode: decoder[APITokenRevoked]()},
	OutboundMailSentName:        {version: OutboundMailSentSchemaVersion, decode: decoder[OutboundMailSent]()},
	OutboundMailFailedName:      {version: OutboundMailFailedSchemaVersion, decode: decoder[OutboundMailFailed]()},
	OutboundMailSuppressedName:  {version: OutboundMailSuppressedSchemaVersion, decode: decoder[OutboundMailSuppressed]()},
	TemplateSavedName:           {version: TemplateSavedSchemaVersion, decode: decoder[TemplateSaved]()},

	OAuthConnectionCreatedName:    {version: OAuthConnectionCreatedSchemaVersion, decode: decoder[OAuthConnectionCreated]()},
	OAuthConnectionUpdatedName:    {version: OAuthConnectionUpdatedSchemaVersion, decode: decoder[OAuthConnectionUpdated]()},
	OAuthConnectionDeletedName:    {version: OAuthConnectionDeletedSchemaVersion, decode: decoder[OAuthConnectionDeleted]()},
	OAuthConnectionAuthorizedName: {version: OAuthConnectionAuthorizedSchemaVersion, decode: decoder[OAuthConnectionAuthorized]()},
	OAuthTokenRefreshedName:       {version: OAuthTokenRefreshedSchemaVersion, decode: decoder[OAuthTokenRefreshed]()},
	OAuthTokenRefreshFailedName:   {version: OAuthTokenRefreshFailedSchemaVersion, decode: decoder[OAuthTokenRefreshFailed]()},
	OAuthRefreshTokenResealedName: {version: OAuthRefreshTokenResealedSchemaVersion, decode: decoder[OAuthRefreshTokenResealed]()},

	UserRemovedName:     {version: UserRemovedSchemaVersion, decode: decoder[UserRemoved]()},
	LocationUpdatedName: {version: LocationUpdatedSchemaVersion, decode: decoder[LocationUpdated]()},
	LocationRemovedName: {version: LocationRemovedSchemaVersion, decode: decoder[LocationRemoved]()},
	ResourceCreatedName: {version: ResourceCreatedSchemaVersion, decode: decoder[ResourceCreated]()},
	ResourceUpdatedName: {version: ResourceUpdatedSchemaVersion, decode: decoder[ResourceUpdated]()},
	ResourceDeletedName: {version: ResourceDeletedSchemaVersion, decode: decoder[ResourceDeleted]()},

	SubscriberEventSetAsideName: {version: SubscriberEventSetAsideSchemaVersion, decode: decoder[SubscriberEventSetAside]()},
	SubscriberEventRetriedName:  {version: SubscriberEventRetriedSchemaVersion, decode: decoder[SubscriberEventRetried]()},
}

// EventNames lists every registered stored name (unordered).
func EventNames() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	return names
}

// MarshalEvent encodes e for the event store: its stored name, its current
// schema version and its JSON payload (snake_case field names).
func MarshalEvent(e Event) (name string, schemaVersion int, payload []byte, err error) {
	if e == nil {
		return "", 0, nil, fmt.Errorf("domain: marshal event: %w: nil event", ErrUnknownEvent)
	}
	name = e.EventName()
	t, ok := registry[name]
	if !ok {
		return "", 0, nil, fmt.Errorf("domain: marshal event %q: %w", name, ErrUnknownEvent)
	}
	payload, err = json.Marshal(e)
	if err != nil {
		return "", 0, nil, fmt.Errorf("domain: marshal event %q: %w", name, err)
	}
	return name, t.version, payload, nil
}

// UnmarshalEvent decodes a stored event. A payload of an older schema
// version goes through the upcasters up to the current version first; an
// unknown name is ErrUnknownEvent and a version newer than this code
// ErrUnsupportedSchemaVersion (both wrapped with the name). The returned
// Event is the value type (TicketCreated, not *TicketCreated).
func UnmarshalEvent(name string, schemaVersion int, payload []byte) (Event, error) {
	t, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("domain: unmarshal event %q: %w", name, ErrUnknownEvent)
	}
	if schemaVersion < 1 || schemaVersion > t.version {
		return nil, fmt.Errorf("domain: unmarshal event %q: %w: %d (this code reads 1 to %d)",
			name, ErrUnsupportedSchemaVersion, schemaVersion, t.version)
	}
	raw := json.RawMessage(payload)
	for v := schemaVersion; v < t.version; v++ {
		up, ok := t.upcasters[v]
		if !ok {
			return nil, fmt.Errorf("domain: unmarshal event %q: %w: no upcaster from version %d", name, ErrUnsupportedSchemaVersion, v)
		}
		var err error
		if raw, err = up(raw); err != nil {
			return nil, fmt.Errorf("domain: unmarshal event %q: upcast from version %d: %w", name, v, err)
		}
	}
	e, err := t.decode(raw)
	if err != nil {
		return nil, fmt.Errorf("domain: unmarshal event %q version %d: %w", name, schemaVersion, err)
	}
	return e, nil
}

// upcastTicketCreatedV1 turns TicketCreated version 1, the first draft's
// shape with flat requester_user_id, requester_email and requester_name
// fields, into version 2 with a nested requester and its source (a user id
// meant a directory user, none the bare address).
func upcastTicketCreatedV1(raw json.RawMessage) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	var r Requester
	for key, dst := range map[string]*string{"requester_user_id": &r.UserID, "requester_email": &r.Email, "requester_name": &r.Name} {
		if v, ok := m[key]; ok {
			if err := json.Unmarshal(v, dst); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			delete(m, key)
		}
	}
	r.Source = RequesterAddress
	if r.UserID != "" {
		r.Source = RequesterDirectory
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	m["requester"] = b
	return json.Marshal(m)
}
