package domain_test

import (
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// FuzzDecideMail feeds arbitrary header values through the intake decision:
// it must never panic, never fail on a consistent input, and always record
// its decision in at least one event that names the mail.
func FuzzDecideMail(f *testing.F) {
	f.Add("Re: [Ticket#1001] x", "max@customer.example", "<a@b>", "", "", false, true, int64(0))
	f.Add("", "", "", "auto-replied", "bulk", true, false, int64(-5))
	f.Add("AW: WG:", "MAILER-DAEMON@x", "ledgerdesk.none.x.y@z", "no", "list", false, true, int64(1<<40))
	f.Fuzz(func(t *testing.T, subject, from, inReplyTo, autoSubmitted, precedence string, returnPathEmpty, bundle bool, offset int64) {
		in := baseInput()
		in.Mail.Subject, in.Mail.From.Email, in.Mail.InReplyTo = subject, from, inReplyTo
		in.Mail.AutoSubmitted, in.Mail.Precedence, in.Mail.ReturnPathEmpty = autoSubmitted, precedence, returnPathEmpty
		in.Mail.ReceivedAt = t0.Add(time.Duration(offset%(1<<40)) * time.Second)
		in.Now = t0
		in.Account.AutoBundle = bundle
		in.Account.CreateUnknownUsers = true
		in.Account.CreateLocationFromDomain = true
		in.Account.AutoReplyTemplate = "received"
		in.BundleCandidates = []domain.Ticket{bundleCandidate(t, t0)}
		_ = domain.MailLookups(in.Mail, in.Account, in.Settings, in.MessageIDKey)
		got, err := domain.DecideMail(in)
		if err != nil {
			t.Fatalf("DecideMail() error = %v", err)
		}
		if len(got) == 0 {
			t.Fatal("DecideMail() recorded no decision")
		}
		for _, e := range got {
			if _, _, _, err := domain.MarshalEvent(e); err != nil {
				t.Fatalf("MarshalEvent(%T) error = %v", e, err)
			}
		}
	})
}
