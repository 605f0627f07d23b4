// Package domain holds ledgerdesk's rules as pure decisions: given the state
// the application layer loaded and an input (a received mail, an agent's or
// admin's command), a Decide function returns the events that record what
// it means, and an Evolve function folds events back into state. Nothing
// here does I/O, reads the clock or draws random numbers (purity_test.go
// enforces it): time and ids arrive as input or are derived from the input
// (MailIDFor, TicketIDFor, UserIDFor, LocationIDFor, OutgoingMailIDFor), so
// a re-delivered mail gives the same events and replaying history gives the
// same answers forever.
//
// Deciders and their state:
//
//	DecideMail(MailInput) / MailLookups           intake of a MailReceived (intake.go)
//	DecideTicket(Ticket, Settings, MessageIDKey, TicketCommand) agent commands; EvolveTicket (ticket.go)
//	DecideCreateUser, DecideUpdateUser, DecideCreateLocation; EvolveUser, EvolveLocation (user.go)
//	DecideCreate/Update/DeleteInboundAccount; EvolveInboundAccounts (account.go)
//	DecideCreate/Update/DeleteOutboundAccount; EvolveOutboundAccounts; SendingAccount (outbound.go)
//	DecideChangeSettings; EvolveSettings (account.go)
//	DecideIssueToken, DecideRevokeToken; EvolveTokens (token.go)
//
// Events are stored with MarshalEvent and read with UnmarshalEvent
// (codec.go), which upcasts old schema versions.
//
// # Rules and the tests that cover them
//
// RULES.md section numbers; subtests of TestDecideMail unless named otherwise.
//
//	2.7 multi-account: first account_address in To, then Cc, imports
//	    "a mail addressed first to another account we read is skipped by this one"
//	    "an account named in To imports the mail even when another account comes first in Cc"
//	    "with neither account in To the first account in Cc imports"
//	2.7 the same Message-ID never makes two tickets
//	    "the same Message-ID arriving through a second account is skipped as a duplicate"
//	    "deciding the same mail again gives no events", TestDecideMail_redelivery
//	3.1 reference by subject, tolerant of reply prefixes
//	    "a reply quoting an open ticket's number is appended and marks it customer answered"
//	    "RE: AW: WG: Fwd: noise around the reference does not hide it"
//	    TestMailLookups, TestParseTicketReference, FuzzParseTicketReference
//	3.1 reference by In-Reply-To/References without a subject reference
//	    "a reply threaded by In-Reply-To to our own Message-ID, without a subject reference, is appended"
//	    "a reply threaded by References to the ticket's first mail, without a subject reference, is appended"
//	    TestOwnMessageID
//	3.1 our Message-IDs are keyed (MessageIDKey); an unkeyed one names only a ticket that sent it
//	    "a ticket named only by a forged Message-ID is inconsistent input"
//	    "a bounce of a Message-ID made before the keys is recorded on the ticket that sent it"
//	    "a bounce of a forged Message-ID naming a ticket creates nothing"
//	    TestOwnMessageID_Names, TestMessageIDKey_StaysSecret, ticketing.TestProcessManager_OwnMessageIDsAreKeyed
//	3.1 open ticket: confirmed_unread, or StatusLeftUnchanged
//	    "a second customer answer leaves the status as it is and says why"
//	    "a resource member's reply with no_status_change_for_resource_members leaves the status and sends no notification"
//	    "a resource member's reply without the global option changes the status like anyone's"
//	3.1 closed ticket and the reactivation window (inclusive at its end)
//	    "a reply exactly at the end of the reactivation window reactivates the ticket"
//	    "a reply one second after the reactivation window is rejected with the ticket-closed mail"
//	    "a resource member's reply to a recently closed ticket reactivates it as always, without notification"
//	    "an out-of-office reply to a long-closed ticket is rejected without an error mail"
//	    "an out-of-office reply to an open ticket is appended without marking it customer answered"
//	    "an out-of-office reply to a recently closed ticket is appended but does not reactivate it"
//	3.1 reference to an unknown ticket counts as none
//	    "a subject reference to an unknown ticket counts as no reference and opens a ticket"
//	3.2 no_new_tickets
//	    "a mail without reference on a no_new_tickets account is rejected with the error mail"
//	    "a mail with a valid reference on a no_new_tickets account is appended to its ticket"
//	    "an automatic mail without reference on a no_new_tickets account gets no error mail"
//	3.3 auto_bundle: same sender and subject, same or previous polling interval
//	    (intervals are floor(ReceivedAt unix seconds / poll_interval), see PollInterval)
//	    "the same sender and subject in the same polling interval is bundled into the ticket"
//	    "the same sender and subject in the next polling interval is bundled into the ticket"
//	    "the same sender and subject in the interval after the next opens a new ticket"
//	    "the same sender with another subject is not bundled"
//	    "without auto_bundle the same sender and subject opens a new ticket"
//	    TestPollInterval
//	3.4 TicketCreated with the account's category, priority and resource; requester
//	    "a first mail from a known user opens a ticket with the account's category, priority and resource"
//	    "an unknown sender with create_unknown_users becomes a user named after the local part"
//	    "an auto-created user whose local part is taken gets the next free numeric suffix", TestUniqueUserName
//	    "the first unknown sender of a domain creates its location, and the user belongs to it"
//	    "a second unknown sender of a known domain reuses its location instead of creating it again"
//	    "an unknown sender without create_unknown_users goes to the fallback user"
//	    "an unknown sender with neither user creation nor a fallback user keeps the bare address"
//	3.5 auto-reply on a new ticket, with loop protection (section 4)
//	    "a new ticket on an account with an auto-reply template queues the auto-reply with the reference"
//	    "the auto-reply goes to the Reply-To address when there is one"
//	    "auto-replies switched off in the settings are recorded as suppressed"
//	    "an automatic mail opens a ticket but is never answered automatically"
//	    "a mail from a no-reply address gets no auto-reply"
//	    "a mail from another of our own accounts gets no auto-reply (no mail loop between accounts)"
//	    TestIsAutomatic
//	3.6 bounces never create tickets; ours are recorded on the ticket
//	    "a delivery status notification about our auto-reply is recorded on its ticket"
//	    "a bounce that quotes a ticket number but not one of our Message-IDs creates nothing"
//	    "a mail with an empty Return-Path never opens a ticket"
//	    TestIsBounce
//	ticket numbers, reference format, own Message-IDs
//	    TestFormatTicketReference, TestParseTicketReference, TestOwnMessageID, TestMailIDFor
//	agent commands: status, close, reopen, assign, category, priority, note, reply
//	    TestDecideTicket, TestTicket_Evolve, TestTicket_lifecycle, TestTicket_EvolveIgnoresOthers
//	users, locations, API tokens
//	    TestDecideUsersAndLocations, TestUniqueUserName, TestDecideTokens
//	1, 4 accounts and settings: validation naming fields, port 25 refused, one default
//	    TestInboundAccount_Validate, TestDecideInboundAccounts, TestOutboundAccount_Validate,
//	    TestDecideOutboundAccounts, TestSendingAccount, TestSettings
//	events: stable names, snake_case JSON, upcasting, registry complete
//	    TestMarshalEvent_roundTrip, TestEventRegistry_complete, TestUnmarshalEvent_errors,
//	    TestUnmarshalEvent_upcastsTicketCreatedV1
//	purity: TestPurity_dependencies, TestPurity_sourceFiles, TestPurity_checkerCatches
//
// Choices where RULES.md is silent: the reactivation window and bundling
// measure time with the mail's ReceivedAt (when it was fetched), never the
// decision time; a location is created for an unknown sender's domain with
// create_location_from_domain whether or not the user is created; an
// automatic mail may still create or join a ticket, but never changes a
// ticket's status, never reactivates it (as in Zammad and osTicket, see
// LANDSCAPE.md) and is never answered automatically; "customer answered"
// notifications go to the ticket's resource and are not sent without one.
package domain
