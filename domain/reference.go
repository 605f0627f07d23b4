package domain

import (
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

// OutgoingMessageID returns the Message-ID (without angle brackets) of an
// outgoing mail of ticket ticketID: "ledgerdesk.<ticket>.<mail>.<check>@domain".
// The ticket id (empty for mail that belongs to no ticket, written "none")
// lets ParseOwnMessageID find the ticket from a reply's In-Reply-To or
// References or from a bounce. The check part is derived from both ids, so a
// Message-ID from another system that happens to share the prefix is not
// taken for ours. outgoingMailID is unique per queued mail, so the id is
// unique (RFC 5322 section 3.6.4). An empty domain becomes "ledgerdesk.invalid".
func OutgoingMessageID(ticketID, outgoingMailID, domain string) string {
	if domain == "" {
		domain = "ledgerdesk.invalid"
	}
	t := ticketID
	if t == "" {
		t = "none"
	}
	return ownMessageIDPrefix + t + "." + outgoingMailID + "." + messageIDCheck(t, outgoingMailID) + "@" + domain
}

func messageIDCheck(ticketID, outgoingMailID string) string {
	return hashID("message-id", ticketID, outgoingMailID)[:10]
}

// ParseOwnMessageID reports whether id (with or without angle brackets) was
// made by OutgoingMessageID and returns the ticket id in it; ticketID is empty
// for our mails that belong to no ticket (error mails before a ticket exists).
// The domain is not checked: it may change with the settings while replies to
// old mails keep arriving.
func ParseOwnMessageID(id string) (ticketID string, ok bool) {
	id = strings.TrimSpace(id)
	id = strings.TrimPrefix(id, "<")
	id = strings.TrimSuffix(id, ">")
	local, _, found := strings.Cut(id, "@")
	if !found || !strings.HasPrefix(local, ownMessageIDPrefix) {
		return "", false
	}
	parts := strings.Split(strings.TrimPrefix(local, ownMessageIDPrefix), ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return "", false
	}
	if messageIDCheck(parts[0], parts[1]) != parts[2] {
		return "", false
	}
	if parts[0] == "none" {
		return "", true
	}
	return parts[0], true
}

// normalizeMessageID strips angle brackets and surrounding space, the form
// in which Message-IDs are compared and stored.
func normalizeMessageID(id string) string {
	id = strings.TrimSpace(id)
	id = strings.TrimPrefix(id, "<")
	return strings.TrimSuffix(id, ">")
}
