package domain

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// NumberPlaceholder marks where the ticket number goes in a reference format.
const NumberPlaceholder = "<number>"

// DefaultReferenceFormat is the default subject reference, e.g. "[Ticket#1001]".
const DefaultReferenceFormat = "[Ticket#<number>]"

// FirstTicketNumber is the number the application layer hands out first.
// Numbers then increase by one; they are short enough to read on the phone.
const FirstTicketNumber int64 = 1001

// maxNumberDigits keeps every parsed number inside int64.
const maxNumberDigits = 18

// ValidateReferenceFormat reports whether format can be written into and
// found again in subjects: it must contain NumberPlaceholder exactly once,
// the text before it must contain a letter, so that a bare number in a
// subject ("invoice 2024") is never taken for a ticket reference, and no
// digit may follow it, so that the number's end is unambiguous.
func ValidateReferenceFormat(format string) error {
	if n := strings.Count(format, NumberPlaceholder); n != 1 {
		return fmt.Errorf("reference format %q must contain %s exactly once, found %d", format, NumberPlaceholder, n)
	}
	prefix, suffix, _ := strings.Cut(format, NumberPlaceholder)
	if !strings.ContainsFunc(prefix, unicode.IsLetter) {
		return fmt.Errorf("reference format %q needs a letter before %s", format, NumberPlaceholder)
	}
	if s := strings.TrimLeftFunc(suffix, unicode.IsSpace); s != "" && s[0] >= '0' && s[0] <= '9' {
		return fmt.Errorf("reference format %q must not have a digit right after %s", format, NumberPlaceholder)
	}
	if strings.ContainsAny(format, "\r\n") {
		return errors.New("reference format must be a single line")
	}
	return nil
}

// FormatTicketReference writes number into format, e.g. "[Ticket#1001]".
// An invalid format falls back to DefaultReferenceFormat so that outgoing
// mail always carries a reference ParseTicketReference can find.
func FormatTicketReference(number int64, format string) string {
	if ValidateReferenceFormat(format) != nil {
		format = DefaultReferenceFormat
	}
	return strings.Replace(format, NumberPlaceholder, strconv.FormatInt(number, 10), 1)
}

// ParseTicketReference finds the leftmost ticket reference written with
// format in subject and returns its number. The match ignores letter case
// and whitespace around and inside the reference, so reply and forward
// prefixes ("RE: AW: WG: Fwd: SV: Antw:") and mail clients that re-space
// subjects do not hide it. A number of more than 18 digits, zero, or an
// invalid format gives ok=false. It never panics on any input.
func ParseTicketReference(subject, format string) (number int64, ok bool) {
	if ValidateReferenceFormat(format) != nil {
		return 0, false
	}
	p, s, _ := strings.Cut(format, NumberPlaceholder)
	prefix := []rune(strings.ToLower(p))
	suffix := []rune(strings.ToLower(s))
	subj := []rune(strings.ToLower(subject))
	for i := range subj {
		j, ok := matchLiteral(subj, i, prefix)
		if !ok {
			continue
		}
		j = skipSpace(subj, j)
		start := j
		for j < len(subj) && subj[j] >= '0' && subj[j] <= '9' {
			j++
		}
		digits := j - start
		if digits == 0 || digits > maxNumberDigits {
			continue
		}
		if _, ok := matchLiteral(subj, skipSpace(subj, j), suffix); !ok {
			continue
		}
		n, err := strconv.ParseInt(string(subj[start:j]), 10, 64)
		if err != nil || n <= 0 {
			continue
		}
		return n, true
	}
	return 0, false
}

// matchLiteral matches lit against s at i, ignoring whitespace in both
// after the first character ("[ Ticket # 1001 ]" matches "[Ticket#<number>]").
// Both are lower-cased.
func matchLiteral(s []rune, i int, lit []rune) (end int, ok bool) {
	j := 0
	for j < len(lit) {
		if unicode.IsSpace(lit[j]) {
			j++
			continue
		}
		if j > 0 {
			i = skipSpace(s, i)
		}
		if i >= len(s) || s[i] != lit[j] {
			return 0, false
		}
		i++
		j++
	}
	return i, true
}

func skipSpace(s []rune, i int) int {
	for i < len(s) && unicode.IsSpace(s[i]) {
		i++
	}
	return i
}

// ownMessageIDPrefix starts every Message-ID ledgerdesk generates.
const ownMessageIDPrefix = "ledgerdesk."

// MessageIDKey keys the check value of our own Message-IDs (HMAC-SHA256),
// so that nobody without the server's secret can make a Message-ID that
// names a ticket and have a reply or a bounce attached to it. cmd derives
// it from the server's secret key (DeriveMessageIDKey) and hands it to the
// decisions as input; it is never stored: it has no exported field, encodes
// to {} in JSON and prints as "MessageIDKey(redacted)". The zero key signs
// but verifies nothing (see OwnMessageID.Names).
type MessageIDKey struct{ k []byte }

// DeriveMessageIDKey derives the Message-ID key from the server's secret key
// (HKDF-SHA256, RFC 5869), so that the secret itself never keys anything but
// the secret box. An empty secret gives the zero key.
func DeriveMessageIDKey(secret []byte) MessageIDKey {
	if len(secret) == 0 {
		return MessageIDKey{}
	}
	k, err := hkdf.Key(sha256.New, secret, nil, "ledgerdesk message-id check v1", sha256.Size)
	if err != nil { // only for a length beyond 255 hashes
		return MessageIDKey{}
	}
	return MessageIDKey{k: k}
}

// String keeps the key out of logs and error messages.
func (MessageIDKey) String() string { return "MessageIDKey(redacted)" }

// GoString keeps the key out of %#v.
func (k MessageIDKey) GoString() string { return k.String() }

// IsZero reports whether no key was given.
func (k MessageIDKey) IsZero() bool { return len(k.k) == 0 }

// keyedCheckPrefix marks a keyed check value; the unkeyed ones that came
// before are 10 hex digits and never contain it.
const keyedCheckPrefix = "k"

// check is the keyed check value of a Message-ID: "k" and 24 hex digits
// (96 bits) of HMAC-SHA256 over both ids, length-prefixed.
func (k MessageIDKey) check(ticketID, outgoingMailID string) string {
	mac := hmac.New(sha256.New, k.k)
	writeLengthPrefixed(mac, "message-id", ticketID, outgoingMailID)
	return keyedCheckPrefix + hex.EncodeToString(mac.Sum(nil))[:24]
}

// OutgoingMessageID returns the Message-ID (without angle brackets) of an
// outgoing mail of ticket ticketID: "ledgerdesk.<ticket>.<mail>.<check>@domain".
// The ticket id (empty for mail that belongs to no ticket, written "none")
// lets ParseOwnMessageID find the ticket from a reply's In-Reply-To or
// References or from a bounce. The check is keyed with key, so only this
// server can make an id that names a ticket (see ParseOwnMessageID).
// outgoingMailID is unique per queued mail, so the id is unique (RFC 5322
// section 3.6.4). An empty domain becomes "ledgerdesk.invalid".
func OutgoingMessageID(ticketID, outgoingMailID, domain string, key MessageIDKey) string {
	if domain == "" {
		domain = "ledgerdesk.invalid"
	}
	t := ticketID
	if t == "" {
		t = "none"
	}
	return ownMessageIDPrefix + t + "." + outgoingMailID + "." + key.check(t, outgoingMailID) + "@" + domain
}

// unkeyedCheck is the check value of the Message-IDs made before they were
// keyed: a plain hash anyone can compute from the two ids.
func unkeyedCheck(ticketID, outgoingMailID string) string {
	return hashID("message-id", ticketID, outgoingMailID)[:10]
}

// OwnMessageID is one of our Message-IDs found in a mail.
type OwnMessageID struct {
	// TicketID is the ticket the id names, "" for our mails of no ticket.
	TicketID string
	// MessageID is the id, normalised (no angle brackets).
	MessageID string
	// Keyed: its check verified under the key. Otherwise the id has the
	// unkeyed check of the ids made before they were keyed, or a keyed check
	// that does not verify (made under a key since rotated, or forged).
	Keyed bool
}

// Names reports whether o refers to ticket t. A keyed id names the ticket
// in it. Any other id of our form names it only when t holds that very
// Message-ID, that is when t queued a mail with it: so every mail sent
// before the ids were keyed (or under a rotated key) is still recognised,
// for good, while an id made up by someone who knows a ticket's id, which
// the ticket never sent, names nothing.
func (o OwnMessageID) Names(t Ticket) bool {
	if !t.Exists() || o.TicketID == "" || o.TicketID != t.ID {
		return false
	}
	return o.Keyed || t.HoldsMessageID(o.MessageID)
}

// ParseOwnMessageID reports whether id (with or without angle brackets) has
// the form OutgoingMessageID makes, and with which ticket and check. A
// 10-hex-digit check must be the unkeyed one of the ids before keys; a keyed
// check is verified under key (Keyed). The domain is not checked: it may
// change with the settings while replies to old mails keep arriving.
func ParseOwnMessageID(id string, key MessageIDKey) (OwnMessageID, bool) {
	id = normalizeMessageID(id)
	local, _, found := strings.Cut(id, "@")
	if !found || !strings.HasPrefix(local, ownMessageIDPrefix) {
		return OwnMessageID{}, false
	}
	parts := strings.Split(strings.TrimPrefix(local, ownMessageIDPrefix), ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return OwnMessageID{}, false
	}
	o := OwnMessageID{TicketID: parts[0], MessageID: id}
	if o.TicketID == "none" {
		o.TicketID = ""
	}
	switch check := parts[2]; {
	case strings.HasPrefix(check, keyedCheckPrefix) && len(check) == 25:
		o.Keyed = !key.IsZero() && hmac.Equal([]byte(check), []byte(key.check(parts[0], parts[1])))
	case check != unkeyedCheck(parts[0], parts[1]):
		return OwnMessageID{}, false
	}
	return o, true
}

// normalizeMessageID strips angle brackets and surrounding space, the form
// in which Message-IDs are compared and stored.
func normalizeMessageID(id string) string {
	id = strings.TrimSpace(id)
	id = strings.TrimPrefix(id, "<")
	return strings.TrimSuffix(id, ">")
}
