package domain

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// This file holds the outbound saga's events (what happened to each queued
// mail) and the mail templates registry. Each queued mail's fate goes to
// its own stream, OutboundMailStream(OutgoingMailID), so the saga never
// races the ticket's writers; every event names its ticket for the
// ticket's history.

// Stored names and schema versions.
const (
	OutboundMailSentName       = "OutboundMailSent"
	OutboundMailFailedName     = "OutboundMailFailed"
	OutboundMailSuppressedName = "OutboundMailSuppressed"
	TemplateSavedName          = "TemplateSaved"

	OutboundMailSentSchemaVersion       = 1
	OutboundMailFailedSchemaVersion     = 1
	OutboundMailSuppressedSchemaVersion = 1
	TemplateSavedSchemaVersion          = 1
)

// OutboundMailStream is the stream of one queued mail's fate.
func OutboundMailStream(outgoingMailID string) string { return "outbound-mail-" + outgoingMailID }

// Per-recipient limit of automatic mails (RULES.md section 4): at most
// RecipientLimit within RecipientWindow, counted over the mails the saga
// let through, by their queue time.
const (
	RecipientLimit  = 10
	RecipientWindow = 3 * time.Hour
)

// Why the saga did not send a queued mail (OutboundMailSuppressed.Code).
const (
	SuppressAutomaticMail  = "automatic_mail"  // the mail answered was sent by a machine (IsAutomatic)
	SuppressSystemAddress  = "system_address"  // mailer-daemon, postmaster, no-reply, abuse, root ...
	SuppressOwnAddress     = "own_address"     // one of our inbound or outgoing accounts
	SuppressRecipientLimit = "recipient_limit" // RecipientLimit reached within RecipientWindow
	SuppressNoRecipient    = "no_recipient"    // nobody to send to
	SuppressExpired        = "expired"         // queued too long ago to be worth sending (e.g. before the saga ran)
)

// OutboundMailSent records that the SMTP server accepted the mail. Reply
// is the server's final reply text; Attempt counts from 1.
type OutboundMailSent struct {
	OutgoingMailID string    `json:"outgoing_mail_id"`
	MessageID      string    `json:"message_id"`
	TicketID       string    `json:"ticket_id,omitempty"`
	Kind           string    `json:"kind"`
	AccountID      string    `json:"account_id"`
	From           string    `json:"from"`
	To             []string  `json:"to"`
	Subject        string    `json:"subject"`
	Attempt        int       `json:"attempt"`
	Reply          string    `json:"reply,omitempty"`
	SentAt         time.Time `json:"sent_at"`
}

// EventName implements Event.
func (OutboundMailSent) EventName() string { return OutboundMailSentName }

// OutboundMailFailed records one failed attempt. Permanent failures (5xx,
// a bad configuration, the attempt limit) end the mail's saga; otherwise
// NextAttemptAt says when it is tried again.
type OutboundMailFailed struct {
	OutgoingMailID string    `json:"outgoing_mail_id"`
	MessageID      string    `json:"message_id"`
	TicketID       string    `json:"ticket_id,omitempty"`
	Kind           string    `json:"kind"`
	AccountID      string    `json:"account_id,omitempty"`
	To             []string  `json:"to,omitempty"`
	Attempt        int       `json:"attempt"`
	Stage          string    `json:"stage"`
	Code           int       `json:"code,omitempty"`
	Reply          string    `json:"reply"`
	Permanent      bool      `json:"permanent"`
	NextAttemptAt  time.Time `json:"next_attempt_at,omitempty"`
	At             time.Time `json:"at"`
}

// EventName implements Event.
func (OutboundMailFailed) EventName() string { return OutboundMailFailedName }

// OutboundMailSuppressed records that the saga's loop protection kept a
// queued mail from being sent, and why.
type OutboundMailSuppressed struct {
	OutgoingMailID string    `json:"outgoing_mail_id"`
	TicketID       string    `json:"ticket_id,omitempty"`
	Kind           string    `json:"kind"`
	To             string    `json:"to,omitempty"`
	Code           string    `json:"code"`
	Reason         string    `json:"reason"`
	At             time.Time `json:"at"`
}

// EventName implements Event.
func (OutboundMailSuppressed) EventName() string { return OutboundMailSuppressedName }

// AutoMailGuard decides whether an automatic mail may go to a recipient
// (RULES.md section 4): not to a system address, not to our own accounts'
// addresses, and not beyond the per-recipient limit, where recent is the
// number of automatic mails already let through to to within
// RecipientWindow. The header checks of the answered mail are IsAutomatic's
// (the intake applies them; the saga applies them again). It returns the
// Suppress* code and a reason, or "" when the mail may go.
func AutoMailGuard(to string, own []string, recent int) (code, reason string) {
	addr := normalizeEmail(to)
	switch {
	case addr == "" || !validEmail(addr):
		return SuppressNoRecipient, fmt.Sprintf("no valid recipient address (%q)", to)
	case noAutoMailLocalParts[localPart(addr)] || noReplyPattern.MatchString(localPart(addr)):
		return SuppressSystemAddress, "system address " + addr
	}
	for _, o := range own {
		if o != "" && normalizeEmail(o) == addr {
			return SuppressOwnAddress, "own account address " + addr
		}
	}
	if recent >= RecipientLimit {
		return SuppressRecipientLimit, fmt.Sprintf("%d automatic mails to %s within %s already (limit %d)", recent, addr, RecipientWindow, RecipientLimit)
	}
	return "", ""
}

// noReplyPattern catches the no-reply spellings the fixed list misses
// ("noreply-billing", "do.not.reply"), Zammad's and OTRS's
// send_no_auto_response pattern widened.
var noReplyPattern = regexp.MustCompile(`^(mailer-daemon|postmaster|abuse|root)$|no[-_.]?reply|do[-_.]?not[-_.]?reply|^bounces?([-+_.]|$)`)

// Template is a stored mail template: Subject and Body are Go text/template
// sources (the application layer checks they parse before saving).
type Template struct {
	Name      string    `json:"name"`
	Subject   string    `json:"subject"`
	Body      string    `json:"body"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// TemplateSaved records a template's whole new text.
type TemplateSaved struct {
	Template Template `json:"template"`
	Actor    string   `json:"actor"`
}

// EventName implements Event.
func (TemplateSaved) EventName() string { return TemplateSavedName }

// Templates is the registry of stored templates (the shipped defaults are
// the application layer's and are overridden by a stored one of the same
// name).
type Templates struct {
	ByName map[string]Template
}

// EvolveTemplates folds one event into the registry.
func EvolveTemplates(s Templates, e Event) Templates {
	next := Templates{ByName: make(map[string]Template, len(s.ByName)+1)}
	for k, v := range s.ByName {
		next.ByName[k] = v
	}
	if e, ok := e.(TemplateSaved); ok {
		next.ByName[e.Template.Name] = e.Template
	}
	return next
}

var templateName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// ValidTemplateName reports whether name can name a template: lower-case
// letters, digits, "_", "." and "-", at most 64 characters.
func ValidTemplateName(name string) bool { return templateName.MatchString(name) }

// DecideSaveTemplate records t under its name; saving the same text again
// records nothing.
func DecideSaveTemplate(s Templates, t Template, actor string) ([]Event, error) {
	var errs []error
	if !ValidTemplateName(t.Name) {
		errs = append(errs, fmt.Errorf("name: %q must be 1 to 64 of a-z, 0-9, _, ., - starting with a letter or digit", t.Name))
	}
	if strings.TrimSpace(t.Subject) == "" || strings.ContainsAny(t.Subject, "\r\n") {
		errs = append(errs, errors.New("subject: must be one non-empty line"))
	}
	if strings.TrimSpace(t.Body) == "" {
		errs = append(errs, errors.New("body: must not be empty"))
	}
	errs = append(errs, checkActor(actor, t.UpdatedAt)...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("save template: %w: %w", ErrInvalid, err)
	}
	if cur, ok := s.ByName[t.Name]; ok && cur.Subject == t.Subject && cur.Body == t.Body {
		return nil, nil
	}
	t.UpdatedBy = actor
	return []Event{TemplateSaved{Template: t, Actor: actor}}, nil
}
