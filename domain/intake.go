package domain

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// AccountRef names another enabled inbound account and its account_address,
// for the multi-account rule.
type AccountRef struct {
	ID      string
	Address string
}

// MailInput is everything DecideMail needs to decide what one received mail
// means. The application layer loads it, guided by MailLookups; DecideMail
// itself reads nothing and calls no clock.
type MailInput struct {
	// Mail is the MailReceived being decided.
	Mail MailReceived
	// Account is the inbound account that fetched it (Mail.AccountID), with
	// defaults applied.
	Account InboundAccount
	// Settings are the global settings.
	Settings Settings
	// MessageIDKey keys our Message-IDs: those the decision queues and those
	// it recognises in the mail. It comes from the server's secret (cmd) and
	// is never stored in an event.
	MessageIDKey MessageIDKey
	// Referenced is the ticket the mail refers to, found by the first of, in
	// this order: the ticket with number Lookups.TicketNumber; the ticket of
	// the first of Lookups.Own that names it (OwnMessageID.Names); the
	// ticket that holds the first of Lookups.MessageIDs that any ticket holds. Nil when none is
	// found, which includes a reference to an unknown ticket (RULES.md 3.1).
	// For a bounce, Lookups holds only our own ids, so it is the ticket of
	// our returned mail.
	Referenced *Ticket
	// Sender is the directory user with the sender's address, nil if none.
	Sender *User
	// SenderIsResourceMember: the sender is a member of Referenced's resource
	// (IsResourceMember over ResourceMembers).
	SenderIsResourceMember bool
	// ResourceMembers are the addresses of the current (not removed)
	// members of Referenced's resource, who get the "customer answered"
	// notification; nil when it has no resource or none with an address.
	ResourceMembers []Address
	// BundleCandidates are the tickets created from mails whose sender is
	// Lookups.SenderEmail and received since Lookups.BundleSince (only loaded
	// when the account has auto_bundle). DecideMail checks subject and
	// polling interval itself; extra candidates are harmless.
	BundleCandidates []Ticket
	// TakenUserNames are the user names in use, lower case (for a user
	// auto-created from the local part).
	TakenUserNames map[string]bool
	// AutoUserIDTaken: a user with the id an auto-created user would get
	// (UserIDFor the sender's address) exists but no longer has that
	// address (an admin changed it), so none is auto-created.
	AutoUserIDTaken bool
	// Location is the location of Lookups.SenderDomain (LocationIDFor), nil
	// if it does not exist yet.
	Location *Location
	// OtherAccounts are the other enabled inbound accounts.
	OtherAccounts []AccountRef
	// DuplicateOf is a ticket that already holds a mail with this
	// Message-ID, nil if none.
	DuplicateOf *Ticket
	// NextTicketNumber is the number a new ticket gets (from the counter);
	// unused when no ticket is created.
	NextTicketNumber int64
	// Now is when the decision is made; it stamps the events. The rules
	// themselves measure time with Mail.ReceivedAt, so replaying a decision
	// later gives the same answer.
	Now time.Time
}

// Lookups tells the application layer what to load for MailInput.
type Lookups struct {
	// TicketNumber is the number in the subject reference, 0 if none.
	TicketNumber int64
	// Own are our own Message-IDs found in the bounced message's id,
	// In-Reply-To and References (newest first), in that order, without
	// duplicates and without those of mails of no ticket. Load each one's
	// ticket (TicketID) and take the first that it names (Names): an id
	// whose check is not keyed names only a ticket that holds it.
	Own []OwnMessageID
	// MessageIDs are In-Reply-To and References (newest first), to find a
	// ticket that holds one of them (a customer answering a mail of the
	// ticket that was not ours, or a Cc of the thread).
	MessageIDs []string
	// MessageID is the mail's own Message-ID, for MailInput.DuplicateOf.
	MessageID string
	// SenderEmail is the normalised sender address (MailInput.Sender,
	// BundleCandidates).
	SenderEmail string
	// SenderDomain is its domain (MailInput.Location), "" if none.
	SenderDomain string
	// BundleSince is the start of the polling interval before the mail's
	// (zero unless the account has auto_bundle): candidates received since
	// then may be bundled.
	BundleSince time.Time
}

// MailLookups returns what the application layer must load to decide m;
// key verifies our Message-IDs in it (MailInput.MessageIDKey).
func MailLookups(m MailReceived, account InboundAccount, settings Settings, key MessageIDKey) Lookups {
	l := Lookups{
		MessageID:   normalizeMessageID(m.MessageID),
		SenderEmail: normalizeEmail(m.From.Email),
	}
	l.SenderDomain = emailDomain(l.SenderEmail)
	// A bounce belongs to the ticket of our returned mail and nothing else:
	// its subject and foreign ids are not looked up.
	bounce, _ := IsBounce(m)
	if n, ok := ParseTicketReference(m.Subject, referenceFormat(settings)); ok && !bounce {
		l.TicketNumber = n
	}
	for _, id := range threadIDs(m) {
		if o, ok := ParseOwnMessageID(id, key); ok {
			if o.TicketID != "" {
				l.Own = append(l.Own, o) // threadIDs has no duplicates
			}
			continue
		}
		if !bounce && id != normalizeMessageID(m.BouncedMessageID) && !contains(l.MessageIDs, id) {
			l.MessageIDs = append(l.MessageIDs, id)
		}
	}
	if account.AutoBundle {
		secs := pollSeconds(account)
		l.BundleSince = time.Unix((PollInterval(m.ReceivedAt, secs)-1)*secs, 0).UTC()
	}
	return l
}

// threadIDs lists the bounced message's id, In-Reply-To and References
// (newest first), normalised, without empties.
func threadIDs(m MailReceived) []string {
	var ids []string
	add := func(id string) {
		if id = normalizeMessageID(id); id != "" && !contains(ids, id) {
			ids = append(ids, id)
		}
	}
	add(m.BouncedMessageID)
	add(m.InReplyTo)
	for i := len(m.References) - 1; i >= 0; i-- {
		add(m.References[i])
	}
	return ids
}

// PollInterval returns the index of the polling interval that contains t:
// floor(unix seconds / intervalSeconds). Intervals are aligned to the Unix
// epoch rather than to the poller's actual runs, which the domain does not
// see: the answer depends only on the mail's ReceivedAt and the account's
// poll_interval, so it is the same on every replay. Bundling joins a mail to
// a ticket whose first mail is in the same or the previous interval.
func PollInterval(t time.Time, intervalSeconds int64) int64 {
	if intervalSeconds <= 0 {
		intervalSeconds = 300
	}
	s := t.Unix()
	q := s / intervalSeconds
	if s%intervalSeconds != 0 && s < 0 {
		q--
	}
	return q
}

func pollSeconds(a InboundAccount) int64 {
	if a.PollIntervalSeconds <= 0 {
		return 300
	}
	return int64(a.PollIntervalSeconds)
}

func referenceFormat(s Settings) string {
	if ValidateReferenceFormat(s.ReferenceFormat) != nil {
		return DefaultReferenceFormat
	}
	return s.ReferenceFormat
}

// DecideMail decides what a received mail means (RULES.md sections 2.7 and
// 3), in this order, the first that applies:
//
//  1. Another account ledgerdesk reads is addressed before this one in To,
//     then Cc: MailSkipped (other_account).
//  2. A ticket already holds the Message-ID: MailSkipped (duplicate); no
//     events when that ticket holds this very mail (a decision re-run).
//  3. A bounce (IsBounce): DeliveryFailureRecorded on the ticket of our
//     bounced mail, otherwise MailSkipped (bounce). Never a ticket.
//  4. A referenced ticket: open, MailAppended and TicketStatusChanged to
//     confirmed_unread (or StatusLeftUnchanged for a resource member with
//     no_status_change_for_resource_members, or when already so); closed
//     within the reactivation window (inclusive), TicketReactivated and
//     MailAppended; closed longer, MailRejected and the ticket_closed error
//     mail. An automatic mail (IsAutomatic) is appended with
//     StatusLeftUnchanged instead of changing or reactivating the ticket.
//  5. No reference on a no_new_tickets account: MailRejected and the error mail.
//  6. auto_bundle and a ticket from the same sender with the same subject
//     whose first mail arrived in the same or previous polling interval:
//     MailBundled.
//  7. Otherwise TicketCreated, preceded by LocationAutoCreated and
//     UserAutoCreated as needed, followed by AutoReplyQueued when the
//     account has an auto_reply_template.
//
// Automatic mail is never answered automatically: where an automatic mail
// would be queued and loop protection forbids it, AutoMailSuppressed
// records why. An error means the input is malformed (ErrInvalid) or
// inconsistent (ErrInconsistentInput), never that the mail is bad.
func DecideMail(in MailInput) ([]Event, error) {
	if err := checkMailInput(in); err != nil {
		return nil, err
	}
	d := intake{in: in, m: in.Mail, sender: normalizeEmail(in.Mail.From.Email)}
	if ev, done := d.multiAccount(); done {
		return ev, nil
	}
	if ev, done := d.duplicate(); done {
		return ev, nil
	}
	if bounce, why := IsBounce(d.m); bounce {
		return d.bounce(why), nil
	}
	if in.Referenced != nil {
		return d.reply(*in.Referenced), nil
	}
	if in.Account.NoNewTickets {
		return d.reject("", RejectNoNewTickets, "the account opens no new tickets and the mail references none",
			TemplateError, AutoMailError), nil
	}
	if ev, done := d.bundle(); done {
		return ev, nil
	}
	return d.create()
}

func checkMailInput(in MailInput) error {
	var errs []error
	if in.Mail.MailID == "" {
		errs = append(errs, errors.New("mail.mail_id: is empty"))
	}
	if in.Account.ID == "" || in.Mail.AccountID != in.Account.ID {
		errs = append(errs, fmt.Errorf("account: id %q is not the mail's account %q", in.Account.ID, in.Mail.AccountID))
	}
	if in.Now.IsZero() {
		errs = append(errs, errors.New("now: time is zero"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("decide mail %s: %w: %w", in.Mail.MailID, ErrInvalid, err)
	}
	if t := in.Referenced; t != nil {
		l := MailLookups(in.Mail, in.Account, in.Settings, in.MessageIDKey)
		matches := t.Exists() && l.TicketNumber == t.Number
		for _, o := range l.Own {
			matches = matches || o.Names(*t)
		}
		for _, id := range l.MessageIDs {
			matches = matches || t.HoldsMessageID(id)
		}
		if !matches {
			return fmt.Errorf("decide mail %s: %w: ticket %q (number %d) is not referenced by the mail",
				in.Mail.MailID, ErrInconsistentInput, t.ID, t.Number)
		}
	}
	return nil
}

// intake holds one decision's input and shorthands.
type intake struct {
	in     MailInput
	m      MailReceived
	sender string // normalised From address
}

func (d intake) skipped(code, reason string) MailSkipped {
	return MailSkipped{
		MailID: d.m.MailID, AccountID: d.m.AccountID, SourceKey: d.m.SourceKey, BlobRef: d.m.BlobRef,
		Size: d.m.Size, ReceivedAt: d.m.ReceivedAt, MessageID: normalizeMessageID(d.m.MessageID),
		Code: code, Reason: reason,
	}
}

// multiAccount applies RULES.md 2.7: the account whose account_address
// comes first in To, then Cc, imports. A mail addressed to none of them
// (Bcc, aliases, an account without account_address) is imported by the
// account that fetched it; two such accounts are caught by the duplicate
// rule.
func (d intake) multiAccount() ([]Event, bool) {
	own := normalizeEmail(d.in.Account.AccountAddress)
	for _, a := range append(append([]Address(nil), d.m.To...), d.m.Cc...) {
		addr := normalizeEmail(a.Email)
		if addr == "" {
			continue
		}
		if own != "" && addr == own {
			return nil, false
		}
		for _, o := range d.in.OtherAccounts {
			if o.ID != d.in.Account.ID && o.Address != "" && normalizeEmail(o.Address) == addr {
				s := d.skipped(SkipOtherAccount, fmt.Sprintf("account %s (%s) is addressed first and imports the mail", o.ID, addr))
				s.ImportedBy = o.ID
				return []Event{s}, true
			}
		}
	}
	return nil, false
}

func (d intake) duplicate() ([]Event, bool) {
	t := d.in.DuplicateOf
	if t == nil || !t.Exists() {
		return nil, false
	}
	if contains(t.MailIDs, d.m.MailID) {
		return nil, true // this very mail is in the ticket: already decided
	}
	s := d.skipped(SkipDuplicate, fmt.Sprintf("ticket %d already holds Message-ID %s", t.Number, normalizeMessageID(d.m.MessageID)))
	s.DuplicateOf = t.ID
	return []Event{s}, true
}

// bounce attaches a bounce of our own mail to its ticket (RULES.md 3.6).
func (d intake) bounce(why string) []Event {
	for _, id := range threadIDs(d.m) {
		o, own := ParseOwnMessageID(id, d.in.MessageIDKey)
		if !own || o.TicketID == "" {
			continue
		}
		if t := d.in.Referenced; t != nil && o.Names(*t) {
			return []Event{DeliveryFailureRecorded{TicketID: t.ID, BouncedMessageID: id, Reason: why, At: d.in.Now, CausedBy: d.m.MailID}}
		}
	}
	return []Event{d.skipped(SkipBounce, "bounce ("+why+") of a mail that is not one of our tickets'")}
}

// reply handles a mail that references ticket t (RULES.md 3.1).
func (d intake) reply(t Ticket) []Event {
	appended := MailAppended{
		TicketID: t.ID, MessageID: normalizeMessageID(d.m.MessageID), From: d.m.From, Subject: d.m.Subject,
		MailReceivedAt: d.m.ReceivedAt, At: d.in.Now, CausedBy: d.m.MailID,
	}
	memberQuiet := d.in.SenderIsResourceMember && d.in.Settings.NoStatusChangeForResourceMembers
	window := d.in.Settings.ReactivationWindow()
	inWindow := !d.m.ReceivedAt.After(t.ClosedAt.Add(window))
	if auto, why := IsAutomatic(d.m); auto && (t.Open() || inWindow) {
		return []Event{appended, StatusLeftUnchanged{TicketID: t.ID, Status: t.Status, Code: UnchangedAutomatic,
			Reason: "automatic mail (" + why + ") changes no status", At: d.in.Now, CausedBy: d.m.MailID}}
	}
	if t.Open() {
		ev := []Event{appended}
		switch {
		case memberQuiet:
			ev = append(ev, StatusLeftUnchanged{TicketID: t.ID, Status: t.Status, Code: UnchangedResourceMember,
				Reason: "the sender is a member of the ticket's resource and no_status_change_for_resource_members is set",
				At:     d.in.Now, CausedBy: d.m.MailID})
			return ev
		case t.Status == StatusConfirmedUnread:
			ev = append(ev, StatusLeftUnchanged{TicketID: t.ID, Status: t.Status, Code: UnchangedAlready,
				Reason: "the ticket already waits for an agent after a customer answer", At: d.in.Now, CausedBy: d.m.MailID})
		default:
			ev = append(ev, TicketStatusChanged{TicketID: t.ID, From: t.Status, To: StatusConfirmedUnread, At: d.in.Now, CausedBy: d.m.MailID})
		}
		return append(ev, d.customerAnswered(t)...)
	}
	if inWindow {
		ev := []Event{
			TicketReactivated{TicketID: t.ID, Status: StatusConfirmedUnread, ClosedAt: t.ClosedAt,
				WindowSeconds: int64(window / time.Second), At: d.in.Now, CausedBy: d.m.MailID},
			appended,
		}
		if memberQuiet {
			return ev
		}
		return append(ev, d.customerAnswered(t)...)
	}
	return d.reject(t.ID, RejectTicketClosed,
		fmt.Sprintf("ticket %d was closed at %s, longer than the reactivation window of %s before the mail arrived",
			t.Number, t.ClosedAt.UTC().Format(time.RFC3339), window),
		TemplateTicketClosed, AutoMailTicketClosed)
}

// customerAnswered queues the "customer answered" notification to the
// ticket's resource, when switched on and there is a resource to tell.
func (d intake) customerAnswered(t Ticket) []Event {
	if !d.in.Settings.CustomerAnsweredMails || t.ResourceID == "" {
		return nil
	}
	outID := OutgoingMailIDFor(AutoMailCustomerAnswered, d.m.MailID)
	return []Event{NotificationQueued{
		OutgoingMail: OutgoingMail{OutgoingMailID: outID, MessageID: OutgoingMessageID(t.ID, outID, d.in.Settings.MessageIDDomain, d.in.MessageIDKey)},
		TicketID:     t.ID, Kind: AutoMailCustomerAnswered, ResourceID: t.ResourceID, QueuedAt: d.in.Now, CausedBy: d.m.MailID,
		To: d.in.ResourceMembers, Subject: t.Subject,
	}}
}

// reject records that the mail changes no ticket and answers the sender with
// the error template, unless loop protection forbids it.
func (d intake) reject(ticketID, code, reason, template, kind string) []Event {
	ev := []Event{MailRejected{TicketID: ticketID, Code: code, Reason: reason, At: d.in.Now, CausedBy: d.m.MailID}}
	to := d.replyAddress()
	if why := d.autoMailBlocked(to, d.in.Settings.ErrorMails, "error mails are switched off"); why != "" {
		return append(ev, AutoMailSuppressed{TicketID: ticketID, Kind: kind, To: to.Email, Reason: why, At: d.in.Now, CausedBy: d.m.MailID})
	}
	outID := OutgoingMailIDFor(kind, d.m.MailID)
	return append(ev, ErrorMailQueued{
		OutgoingMail: d.answerThreading(ticketID, outID),
		TicketID:     ticketID, AccountID: d.in.Account.ID, Template: template, To: to,
		Subject: replySubject(d.m.Subject), Reason: reason, QueuedAt: d.in.Now, CausedBy: d.m.MailID,
	})
}

// answerThreading threads an automatic answer to the received mail.
func (d intake) answerThreading(ticketID, outID string) OutgoingMail {
	o := OutgoingMail{OutgoingMailID: outID, MessageID: OutgoingMessageID(ticketID, outID, d.in.Settings.MessageIDDomain, d.in.MessageIDKey)}
	if id := normalizeMessageID(d.m.MessageID); id != "" {
		o.InReplyTo = id
		for _, r := range d.m.References {
			if r = normalizeMessageID(r); r != "" {
				o.References = append(o.References, r)
			}
		}
		o.References = append(o.References, id)
	}
	return o
}

// replyAddress is where an answer to the mail goes: the first valid
// Reply-To, else From (RFC 5322 section 3.6.2).
func (d intake) replyAddress() Address {
	for _, a := range d.m.ReplyTo {
		if validEmail(a.Email) {
			return Address{Name: a.Name, Email: normalizeEmail(a.Email)}
		}
	}
	return Address{Name: d.m.From.Name, Email: normalizeEmail(d.m.From.Email)}
}

// autoMailBlocked says why no automatic mail may go to to, or "".
func (d intake) autoMailBlocked(to Address, enabled bool, disabledWhy string) string {
	if !enabled {
		return disabledWhy
	}
	own := []string{d.in.Account.AccountAddress, d.in.Account.SenderAddress}
	for _, o := range d.in.OtherAccounts {
		own = append(own, o.Address)
	}
	if to.Email != "" && !validEmail(to.Email) {
		return "invalid address " + to.Email
	}
	return autoMailBlocked(d.m, to.Email, own)
}

// bundle applies auto_bundle (RULES.md 3.3).
func (d intake) bundle() ([]Event, bool) {
	if !d.in.Account.AutoBundle || d.sender == "" {
		return nil, false
	}
	secs := pollSeconds(d.in.Account)
	mailIv := PollInterval(d.m.ReceivedAt, secs)
	var best *Ticket
	var bestIv int64
	for i := range d.in.BundleCandidates {
		c := &d.in.BundleCandidates[i]
		if !c.Open() || normalizeEmail(c.SenderEmail) != d.sender || !sameSubject(c.Subject, d.m.Subject) {
			continue
		}
		iv := PollInterval(c.MailReceivedAt, secs)
		if diff := mailIv - iv; diff < 0 || diff > 1 {
			continue
		}
		if best == nil || c.MailReceivedAt.After(best.MailReceivedAt) ||
			(c.MailReceivedAt.Equal(best.MailReceivedAt) && c.Number > best.Number) {
			best, bestIv = c, iv
		}
	}
	if best == nil {
		return nil, false
	}
	return []Event{MailBundled{
		TicketID: best.ID, MessageID: normalizeMessageID(d.m.MessageID), From: d.m.From, Subject: d.m.Subject,
		MailReceivedAt: d.m.ReceivedAt, TicketInterval: bestIv, MailInterval: mailIv, IntervalSeconds: secs,
		At: d.in.Now, CausedBy: d.m.MailID,
	}}, true
}

// sameSubject compares subjects ignoring case and runs of whitespace; reply
// prefixes are not stripped, since "Re: x" answers a mail rather than
// repeating it.
func sameSubject(a, b string) bool {
	return strings.EqualFold(strings.Join(strings.Fields(a), " "), strings.Join(strings.Fields(b), " "))
}

// create opens a new ticket (RULES.md 3.4 and 3.5).
func (d intake) create() ([]Event, error) {
	if d.in.NextTicketNumber <= 0 {
		return nil, fmt.Errorf("decide mail %s: %w: next ticket number %d", d.m.MailID, ErrInconsistentInput, d.in.NextTicketNumber)
	}
	var ev []Event
	acc := d.in.Account
	req := Requester{Email: d.sender, Name: d.m.From.Name, Source: RequesterAddress}
	locationID := ""
	switch {
	case d.in.Sender != nil && d.in.Sender.Exists():
		u := d.in.Sender
		req = Requester{UserID: u.ID, Email: d.sender, Name: u.Name, Source: RequesterDirectory}
		if req.Name == "" {
			req.Name = d.m.From.Name
		}
		locationID = u.LocationID
	default:
		domain := emailDomain(d.sender)
		if acc.CreateLocationFromDomain && validEmail(d.sender) {
			if l := d.in.Location; l != nil && l.Exists() {
				locationID = l.ID
			} else {
				locationID = LocationIDFor(domain)
				ev = append(ev, LocationAutoCreated{LocationID: locationID, Name: domain, Domain: domain, At: d.in.Now, CausedBy: d.m.MailID})
			}
		}
		switch {
		case acc.CreateUnknownUsers && validEmail(d.sender) && !d.in.AutoUserIDTaken:
			u := UserAutoCreated{
				UserID: UserIDFor(d.sender), UserName: UniqueUserName(d.sender, d.in.TakenUserNames),
				Email: d.sender, Name: d.m.From.Name, LocationID: locationID, At: d.in.Now, CausedBy: d.m.MailID,
			}
			ev = append(ev, u)
			req = Requester{UserID: u.UserID, Email: d.sender, Name: u.Name, Source: RequesterAutoCreated}
		case acc.FallbackUserID != "":
			req = Requester{UserID: acc.FallbackUserID, Email: d.sender, Name: d.m.From.Name, Source: RequesterFallback}
		}
	}
	ticketID := TicketIDFor(d.m.MailID)
	format := referenceFormat(d.in.Settings)
	ev = append(ev, TicketCreated{
		TicketID: ticketID, Number: d.in.NextTicketNumber, Reference: FormatTicketReference(d.in.NextTicketNumber, format),
		Subject: d.m.Subject, Status: StatusNew, Requester: req, LocationID: locationID,
		ResourceID: acc.Resource, Category: acc.Category, Priority: acc.Priority, AccountID: acc.ID,
		MessageID: normalizeMessageID(d.m.MessageID), SenderEmail: d.sender,
		MailReceivedAt: d.m.ReceivedAt, CreatedAt: d.in.Now, CausedBy: d.m.MailID,
	})
	if acc.AutoReplyTemplate == "" {
		return ev, nil
	}
	to := d.replyAddress()
	if why := d.autoMailBlocked(to, d.in.Settings.AutoReplies, "auto replies are switched off"); why != "" {
		return append(ev, AutoMailSuppressed{TicketID: ticketID, Kind: AutoMailNewTicket, To: to.Email, Reason: why, At: d.in.Now, CausedBy: d.m.MailID}), nil
	}
	outID := OutgoingMailIDFor(AutoMailNewTicket, d.m.MailID)
	return append(ev, AutoReplyQueued{
		OutgoingMail: d.answerThreading(ticketID, outID),
		TicketID:     ticketID, AccountID: acc.ID, Template: acc.AutoReplyTemplate, To: to,
		Subject: withReference(d.m.Subject, d.in.NextTicketNumber, format), QueuedAt: d.in.Now, CausedBy: d.m.MailID,
	}), nil
}
