package ticketing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// testKey keys our Message-IDs in the tests, as the server's secret does.
var testKey = domain.DeriveMessageIDKey([]byte("a test secret of thirty-two bytes"))

// unkeyedMessageID is a Message-ID as ledgerdesk made them before they
// were keyed: its check value is a plain hash of the two ids, which anyone
// who knows a ticket id can compute.
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

func TestProcessManager_OwnMessageIDsAreKeyed(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		pm := NewProcessManager(store, func() time.Time { return t0.Add(24 * time.Hour) }, testKey, nil)
		account := domain.InboundAccount{ID: "acc", Name: "support", Enabled: true, Protocol: "imap", Host: "mail.example",
			Username: "support", AccountAddress: "support@desk.example", SenderAddress: "support@desk.example",
			AutoReplyTemplate: "default"}.WithDefaults()
		appendEvent(t, store, InboundAccountsStream, eventstore.NoStream, "acc-1", domain.InboundAccountCreated{Account: account, Actor: "test"})

		// given a ticket, its auto-reply queued with our Message-ID, and a
		// mail it sent before Message-IDs were keyed
		m1 := mail(1, "Printer on fire", nil)
		pos := appendEvent(t, store, MailStream(m1.MailID), eventstore.NoStream, m1.MailID, m1)
		runUntil(t, store, pm, pos)
		ticketID := domain.TicketIDFor(m1.MailID)
		var autoReplyID string
		evs, _ := store.ReadStream(context.Background(), domain.TicketStream(ticketID), 1, 0)
		for _, re := range evs {
			if re.Type == domain.AutoReplyQueuedName {
				var ar domain.AutoReplyQueued
				_ = json.Unmarshal(re.Payload, &ar)
				autoReplyID = ar.MessageID
			}
		}
		if autoReplyID == "" {
			t.Fatal("no auto-reply queued")
		}
		oldID := unkeyedMessageID(ticketID, "sent-long-ago", "desk.example")
		v := int64(len(evs))
		appendEvent(t, store, domain.TicketStream(ticketID), v, "old-reply", domain.ReplyQueued{
			OutgoingMail: domain.OutgoingMail{OutgoingMailID: "sent-long-ago", MessageID: oldID}, TicketID: ticketID,
			To: []domain.Address{{Email: "erika@customer.example"}}, Subject: "Re: Printer on fire", Body: "We are on it.",
			QueuedAt: t0.Add(time.Hour), Actor: "token:agent"})

		for i, tc := range []struct {
			name      string
			inReplyTo string
			attaches  bool
		}{
			{"a forged id with the check anyone can compute does not attach",
				unkeyedMessageID(ticketID, "never-sent", "desk.example"), false},
			{"a forged id in the keyed form with a wrong check does not attach",
				"ledgerdesk." + ticketID + ".never-sent.k000000000000000000000000@desk.example", false},
			{"a genuine id attaches", autoReplyID, true},
			{"an id of a mail sent before the keys attaches", oldID, true},
		} {
			// when a mail without subject reference answers that id
			m := mail(10+i, "no reference here", func(m *domain.MailReceived) {
				m.InReplyTo = tc.inReplyTo
				m.From = domain.Address{Email: "someone@else.example"}
			})
			pos := appendEvent(t, store, MailStream(m.MailID), eventstore.NoStream, m.MailID, m)
			runUntil(t, store, pm, pos)
			// then it joins the ticket, or opens a ticket of its own
			attached := false
			for _, id := range loadTicket(t, store, ticketID).MailIDs {
				attached = attached || id == m.MailID
			}
			own := loadTicket(t, store, domain.TicketIDFor(m.MailID)).Exists()
			if attached != tc.attaches || own == tc.attaches {
				t.Errorf("%s: attached to ticket %v, own ticket %v; want attached %v", tc.name, attached, own, tc.attaches)
			}
		}
	})
}
