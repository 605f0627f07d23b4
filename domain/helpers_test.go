package domain_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// Fixed times; no test reads the wall clock. t0 is the start of a 300 s
// polling interval (10:00:00 UTC).
var (
	t0        = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	closedAt  = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	createdAt = time.Date(2026, 2, 20, 8, 0, 0, 0, time.UTC)
)

const (
	accID      = "acc-support"
	ourAddr    = "helpdesk@ours.example"
	ourSender  = "support@ours.example"
	otherAccID = "acc-sales"
	otherAddr  = "sales@ours.example"
	customer   = "max@customer.example"
	domainName = "ours.example"
)

var (
	firstMailID = domain.MailIDFor(accID, "7:100")
	ticketID    = domain.TicketIDFor(firstMailID)
)

// newMail is the mail under decision: Max writes to the support account.
func newMail() domain.MailReceived {
	return domain.MailReceived{
		MailID:     domain.MailIDFor(accID, "7:101"),
		AccountID:  accID,
		SourceKey:  "7:101",
		BlobRef:    "sha256-abc",
		Size:       2048,
		ReceivedAt: t0.Add(90 * time.Second),
		MessageID:  "<m101@customer.example>",
		Subject:    "Printer broken",
		From:       domain.Address{Name: "Max Mustermann", Email: "Max@Customer.example"},
		To:         []domain.Address{{Name: "Helpdesk", Email: ourAddr}},
		TextBody:   "It prints nothing.",
	}
}

func supportAccount() domain.InboundAccount {
	return domain.InboundAccount{
		ID: accID, Name: "Support", Enabled: true, Protocol: domain.ProtocolIMAP, Host: "imap.ours.example",
		Port: 993, Security: domain.SecurityTLS, Username: "helpdesk", Folder: "INBOX",
		PollIntervalSeconds: 300, AfterImport: domain.AfterImportDelete,
		AccountAddress: ourAddr, SenderAddress: ourSender, SenderName: "Support",
		Resource: "res-1st-level", Category: "hardware", Priority: "normal",
	}
}

// testKey keys our Message-IDs in the tests, as the server's secret does.
var testKey = domain.DeriveMessageIDKey([]byte("a test secret of thirty-two bytes"))

// unkeyedMessageID is a Message-ID as ledgerdesk made them before they
// were keyed: its check is a plain hash of the two ids, which anyone who
// knows a ticket's id can compute.
func unkeyedMessageID(ticketID, outID, domainName string) string {
	h := sha256.New()
	for _, p := range []string{"message-id", ticketID, outID} {
		var n [8]byte
		for i := range n {
			n[i] = byte(uint64(len(p)) >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return "ledgerdesk." + ticketID + "." + outID + "." + hex.EncodeToString(h.Sum(nil))[:10] + "@" + domainName
}

func testSettings() domain.Settings {
	s := domain.DefaultSettings()
	s.MessageIDDomain = domainName
	return s
}

// ticketCreated is the history's start: ticket 1001 opened from Max's
// first mail at createdAt.
func ticketCreated() domain.TicketCreated {
	return domain.TicketCreated{
		TicketID: ticketID, Number: 1001, Reference: "[Ticket#1001]", Subject: "Printer broken",
		Status: domain.StatusNew, Requester: domain.Requester{UserID: "u-max", Email: customer, Name: "Max Mustermann", Source: domain.RequesterDirectory},
		ResourceID: "res-1st-level", Category: "hardware", Priority: "normal", AccountID: accID,
		MessageID: "first@customer.example", SenderEmail: customer, MailReceivedAt: createdAt, CreatedAt: createdAt,
		CausedBy: firstMailID,
	}
}

func closed(at time.Time) domain.TicketClosed {
	return domain.TicketClosed{TicketID: ticketID, From: domain.StatusInProgress, ClosedAt: at, Actor: "agent-anna"}
}

func statusChanged(from, to domain.TicketStatus) domain.TicketStatusChanged {
	return domain.TicketStatusChanged{TicketID: ticketID, From: from, To: to, At: createdAt.Add(time.Hour), Actor: "agent-anna"}
}

// fold replays a history into a ticket, as the application layer does.
func fold(tb testing.TB, events ...domain.Event) domain.Ticket {
	tb.Helper()
	var t domain.Ticket
	for _, e := range events {
		t = domain.EvolveTicket(t, e)
	}
	if !t.Exists() {
		tb.Fatalf("fold: history %v creates no ticket", events)
	}
	return t
}

func ptr[T any](v T) *T { return &v }

func diffEvents(tb testing.TB, fn string, want, got []domain.Event) {
	tb.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		tb.Errorf("%s (-want +got):\n%s", fn, diff)
	}
}
