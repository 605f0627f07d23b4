package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"time"
	"unicode/utf8"
)

// Stored names of the intake events. They never change.
const (
	MailReceivedName = "MailReceived"
	MailFailedName   = "MailFailed"
	MailSkippedName  = "MailSkipped"
)

// Schema versions of the intake events' payloads.
const (
	MailReceivedSchemaVersion = 1
	MailFailedSchemaVersion   = 1
	MailSkippedSchemaVersion  = 1
)

// Address is a mailbox address as found in a header (RFC 5322 section 3.4).
// Email is the addr-spec as written; compare addresses with SameAddress.
type Address struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email"`
}

// Attachment describes one MIME part kept as an attachment. PartPath locates
// the part inside the stored raw mail (e.g. "1.2"), so the bytes are read
// from the blob on demand and never copied into events.
type Attachment struct {
	PartPath    string `json:"part_path"`
	Filename    string `json:"filename,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	ContentID   string `json:"content_id,omitempty"`
	Size        int64  `json:"size"`
	Inline      bool   `json:"inline,omitempty"`
}

// MailReceived records that a mail was fetched from an inbound account and
// its raw bytes stored under BlobRef. It is the input of DecideMail and the
// cause named by every ticket event that follows from the mail.
//
// The ingestion code builds it from the MIME parser's output. MailID is
// MailIDFor(AccountID, SourceKey), so a mail fetched again after a crash has
// the same id and the same derived ids downstream.
type MailReceived struct {
	MailID     string    `json:"mail_id"`
	AccountID  string    `json:"account_id"`
	SourceKey  string    `json:"source_key"` // IMAP UIDVALIDITY+UID, POP3 UIDL or Graph id
	BlobRef    string    `json:"blob_ref"`
	Size       int64     `json:"size"`
	ReceivedAt time.Time `json:"received_at"` // when ledgerdesk fetched it

	// MessageID is the Message-ID without angle brackets; the parser derives a
	// deterministic one from the raw bytes when the header is missing.
	MessageID  string   `json:"message_id"`
	InReplyTo  string   `json:"in_reply_to,omitempty"`
	References []string `json:"references,omitempty"`
	Subject    string   `json:"subject"`

	From        Address   `json:"from"`
	ReplyTo     []Address `json:"reply_to,omitempty"`
	To          []Address `json:"to,omitempty"`
	Cc          []Address `json:"cc,omitempty"`
	DeliveredTo []string  `json:"delivered_to,omitempty"`
	ReturnPath  string    `json:"return_path,omitempty"`
	// ReturnPathEmpty is true for "Return-Path: <>", the null reverse-path
	// of bounces and other automatic mail (RFC 5321 section 4.5.5).
	ReturnPathEmpty bool `json:"return_path_empty,omitempty"`
	// Date is the Date header; zero when absent or unparseable.
	Date time.Time `json:"date,omitempty"`

	AutoSubmitted string `json:"auto_submitted,omitempty"` // RFC 3834 section 5
	Precedence    string `json:"precedence,omitempty"`
	// LoopHeaders maps lower-case header names to values for the headers that
	// mark automatic mail (x-autoreply, list-id, x-loop, ...). See IsAutomatic.
	LoopHeaders map[string]string `json:"loop_headers,omitempty"`

	// ContentType is the top-level media type, e.g. "multipart/report".
	ContentType string `json:"content_type,omitempty"`
	// ReportType is the report-type parameter, "delivery-status" for DSNs
	// (RFC 3464).
	ReportType string `json:"report_type,omitempty"`
	// BouncedMessageID is the Message-ID of the returned message, read from
	// the DSN's message/rfc822 or text/rfc822-headers part.
	BouncedMessageID string `json:"bounced_message_id,omitempty"`

	// TextBody and HTMLBody are the decoded bodies, each at most a prefix
	// whose JSON encoding takes MailBodyPrefixBytes (see BodyPrefix), so that
	// an event stays small whatever the mail. When a body was cut, its
	// ...Truncated flag is set and ...Size is the whole body's size in bytes;
	// the whole body is in the raw mail (BlobRef), where readers that need
	// it parse it from. Mails received before the bound carry their bodies
	// whole and the flags unset (the zero value keeps the old meaning).
	TextBody    string       `json:"text_body,omitempty"`
	HTMLBody    string       `json:"html_body,omitempty"`
	Attachments []Attachment `json:"attachments,omitempty"`
	// Warnings lists what the parser had to repair.
	Warnings []string `json:"warnings,omitempty"`

	TextBodyTruncated bool  `json:"text_body_truncated,omitempty"`
	TextBodySize      int64 `json:"text_body_size,omitempty"`
	HTMLBodyTruncated bool  `json:"html_body_truncated,omitempty"`
	HTMLBodySize      int64 `json:"html_body_size,omitempty"`

	// ImagesAsAttachments is the account's images_as_attachments when the
	// mail was imported (seed 003): the images its HTML shows inline (cid:,
	// RFC 2392) are then shown to agents as attachments, not in the body.
	// It travels with the mail, so every later reading of it (the account
	// changed or deleted since) shows it as it was imported. The raw mail
	// is never changed.
	ImagesAsAttachments bool `json:"images_as_attachments,omitempty"`
}

// EventName implements Event.
func (MailReceived) EventName() string { return MailReceivedName }

// MailFailed records a mail that could not be imported: unparseable beyond
// repair, rejected, or larger than the account's max_mail_size (Oversize; then
// nothing was downloaded and BlobRef is empty). See RULES.md section 2.4.
type MailFailed struct {
	MailID     string    `json:"mail_id"`
	AccountID  string    `json:"account_id"`
	SourceKey  string    `json:"source_key"`
	BlobRef    string    `json:"blob_ref,omitempty"`
	Size       int64     `json:"size"`
	ReceivedAt time.Time `json:"received_at"`
	Reason     string    `json:"reason"`
	Oversize   bool      `json:"oversize,omitempty"`
}

// EventName implements Event.
func (MailFailed) EventName() string { return MailFailedName }

// Reasons a mail is skipped (MailSkipped.Code). The set only grows.
const (
	// SkipOtherAccount: another account ledgerdesk reads is addressed first
	// and imports the mail (multi-account rule, RULES.md section 2.7).
	SkipOtherAccount = "other_account"
	// SkipDuplicate: a ticket already holds a mail with this Message-ID.
	SkipDuplicate = "duplicate_message_id"
	// SkipBounce: a bounce about a message that was not ours.
	SkipBounce = "bounce"
)

// MailSkipped records a mail that was received but deliberately not turned
// into or added to a ticket. Code is one of the Skip* constants, Reason the
// words for the admin. ImportedBy names the account that imports the mail
// instead, when Code is SkipOtherAccount; DuplicateOf names the ticket
// that already holds it, when Code is SkipDuplicate.
type MailSkipped struct {
	MailID      string    `json:"mail_id"`
	AccountID   string    `json:"account_id"`
	SourceKey   string    `json:"source_key"`
	BlobRef     string    `json:"blob_ref,omitempty"`
	Size        int64     `json:"size"`
	ReceivedAt  time.Time `json:"received_at"`
	MessageID   string    `json:"message_id,omitempty"`
	Code        string    `json:"code,omitempty"`
	Reason      string    `json:"reason"`
	ImportedBy  string    `json:"imported_by,omitempty"`
	DuplicateOf string    `json:"duplicate_of,omitempty"`
}

// EventName implements Event.
func (MailSkipped) EventName() string { return MailSkippedName }

// MailIDFor derives the id of a fetched mail from its account and its
// source key (IMAP UIDVALIDITY+UID, POP3 UIDL, Graph id): the hex of the first
// 16 bytes of SHA-256 over both, 32 characters. The same mail fetched again
// gets the same id, so redelivery yields no second event and no second ticket.
func MailIDFor(accountID, sourceKey string) string {
	return hashID("mail", accountID, sourceKey)
}

// hashID is the deterministic id scheme of the package: hex of the first 16
// bytes of SHA-256 over the kind and the parts, each length-prefixed so that
// ("ab","c") and ("a","bc") differ.
func hashID(kind string, parts ...string) string {
	h := sha256.New()
	writeLengthPrefixed(h, append([]string{kind}, parts...)...)
	sum := h.Sum(nil)
	return hex.EncodeToString(sum[:16])
}

// writeLengthPrefixed writes each part to h after its length (8 bytes,
// little-endian).
func writeLengthPrefixed(h hash.Hash, parts ...string) {
	for _, s := range parts {
		var n [8]byte
		l := uint64(len(s))
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(s))
	}
}

// MailBodyPrefixBytes bounds each of MailReceived's TextBody and HTMLBody,
// counted in the bytes of their JSON encoding: a control byte there takes
// six, so a bound on the string alone would let an event grow sixfold.
const MailBodyPrefixBytes = 64 << 10

// BodyPrefix returns the longest prefix of body, cut between characters,
// whose encoding/json encoding (quotes excluded) takes at most limit bytes,
// and whether that cut anything off.
func BodyPrefix(body string, limit int) (prefix string, truncated bool) {
	if len(body)*6 <= limit {
		return body, false // even all escaped it fits
	}
	n := 0
	for i, r := range body {
		w := jsonRuneLen(r)
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(body[i:]); size == 1 {
				w = 6 // an invalid byte is written as \ufffd
			}
		}
		if n+w > limit {
			return body[:i], true
		}
		n += w
	}
	return body, false
}

// jsonRuneLen is how many bytes encoding/json writes for r in a string:
// its default escaping of control characters, quote, backslash, the HTML
// characters <, > and &, and U+2028 and U+2029.
func jsonRuneLen(r rune) int {
	switch {
	case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
		return 2
	case r < 0x20 || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029':
		return 6
	default:
		return utf8.RuneLen(r)
	}
}
