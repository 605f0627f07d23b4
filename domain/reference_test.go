package domain_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestParseTicketReference(t *testing.T) {
	t.Parallel()
	const def = domain.DefaultReferenceFormat
	tests := []struct {
		name    string
		subject string
		format  string
		want    int64
		wantOK  bool
	}{
		{"a plain reference", "[Ticket#1001] Printer broken", def, 1001, true},
		{"reply and forward prefixes in several languages", "RE: AW: WG: Fwd: SV: Antw: [Ticket#1001] Printer broken", def, 1001, true},
		{"letter case and spaces inside the reference", "re:[ TICKET # 1001 ]", def, 1001, true},
		{"a reference at the end", "Printer broken [Ticket#42]", def, 42, true},
		{"the leftmost of two references", "[Ticket#7] was [Ticket#8]", def, 7, true},
		{"no reference", "Printer broken", def, 0, false},
		{"a bare number is no reference", "Invoice 2024", def, 0, false},
		{"an unclosed reference", "[Ticket#1001 Printer", def, 0, false},
		{"a reference without digits", "[Ticket#] Printer", def, 0, false},
		{"ticket zero is no ticket", "[Ticket#0]", def, 0, false},
		{"nineteen digits overflow and are refused", "[Ticket#9999999999999999999]", def, 0, false},
		{"a custom format", "AW: Re: (HD-1234) Drucker", "(HD-<number>)", 1234, true},
		{"a custom format without suffix stops at the digits", "HD-77 Drucker", "HD-<number>", 77, true},
		{"a format without a placeholder finds nothing", "[Ticket#1001]", "[Ticket#]", 0, false},
		{"a format without letters before the number finds nothing", "#1001 printer", "#<number>", 0, false},
		{"a format with a digit right after the number finds nothing", "T#120", "T#<number>0", 0, false},
		{"a broken reference before a valid one is skipped", "[Ticket#abc] [Ticket#5]", def, 5, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := domain.ParseTicketReference(tc.subject, tc.format)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("ParseTicketReference(%q, %q) = %d, %v, want %d, %v", tc.subject, tc.format, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestFormatTicketReference(t *testing.T) {
	t.Parallel()
	if got := domain.FormatTicketReference(1001, domain.DefaultReferenceFormat); got != "[Ticket#1001]" {
		t.Errorf("FormatTicketReference(1001, default) = %q, want [Ticket#1001]", got)
	}
	if got := domain.FormatTicketReference(5, "(HD-<number>)"); got != "(HD-5)" {
		t.Errorf("FormatTicketReference(5, custom) = %q, want (HD-5)", got)
	}
	if got := domain.FormatTicketReference(5, "broken"); got != "[Ticket#5]" {
		t.Errorf("FormatTicketReference(5, invalid) = %q, want the default format", got)
	}
}

// FuzzParseTicketReference checks that parsing never panics and that a
// formatted reference is always found again, whatever surrounds it.
func FuzzParseTicketReference(f *testing.F) {
	for _, s := range []string{"RE: AW: WG: Fwd:", "", "[Ticket#", "Ticket#12]", "\u00a0Re:\t", "[Ticket#1001]", "ümlaut İ ß"} {
		f.Add(s, int64(1001), domain.DefaultReferenceFormat)
	}
	f.Add("Antw:", int64(1), "(HD-<number>)")
	f.Add("x", int64(9), "Ticket <number> ")
	f.Fuzz(func(t *testing.T, noise string, n int64, format string) {
		if _, ok := domain.ParseTicketReference(noise, format); ok && domain.ValidateReferenceFormat(format) != nil {
			t.Fatalf("ParseTicketReference(%q, invalid %q) ok", noise, format)
		}
		if n <= 0 || domain.ValidateReferenceFormat(format) != nil {
			return
		}
		ref := domain.FormatTicketReference(n, format)
		// The reference first, then anything: the leftmost match is ours.
		subject := ref + " " + noise
		if got, ok := domain.ParseTicketReference(subject, format); !ok || got != n {
			t.Fatalf("ParseTicketReference(%q, %q) = %d, %v, want %d", subject, format, got, ok, n)
		}
		// Reply noise that holds no reference before it.
		if _, found := domain.ParseTicketReference(noise, format); !found && !strings.ContainsAny(noise, "0123456789") {
			subject = noise + " " + ref
			if got, ok := domain.ParseTicketReference(subject, format); !ok || got != n {
				t.Fatalf("ParseTicketReference(%q, %q) = %d, %v, want %d", subject, format, got, ok, n)
			}
		}
	})
}

func TestOwnMessageID(t *testing.T) {
	t.Parallel()
	id := domain.OutgoingMessageID("tkt-1", "out-1", domainName, testKey)
	if !strings.HasSuffix(id, "@"+domainName) || !strings.HasPrefix(id, "ledgerdesk.tkt-1.out-1.k") {
		t.Errorf("OutgoingMessageID() = %q, want ledgerdesk.tkt-1.out-1.k…@%s", id, domainName)
	}
	otherKey := domain.DeriveMessageIDKey([]byte("another server's secret"))
	old := unkeyedMessageID("tkt-1", "out-0", domainName)
	tests := []struct {
		name   string
		id     string
		key    domain.MessageIDKey
		want   domain.OwnMessageID
		wantOK bool
	}{
		{"our id", id, testKey, domain.OwnMessageID{TicketID: "tkt-1", MessageID: id, Keyed: true}, true},
		{"our id in angle brackets, the domain changed since", "<" + strings.Replace(id, domainName, "new.example", 1) + ">", testKey,
			domain.OwnMessageID{TicketID: "tkt-1", MessageID: strings.Replace(id, domainName, "new.example", 1), Keyed: true}, true},
		{"our id of a mail without ticket", domain.OutgoingMessageID("", "out-2", domainName, testKey), testKey,
			domain.OwnMessageID{MessageID: domain.OutgoingMessageID("", "out-2", domainName, testKey), Keyed: true}, true},
		{"an id made before the keys has our form but is not keyed", old, testKey,
			domain.OwnMessageID{TicketID: "tkt-1", MessageID: old}, true},
		{"another ticket's id spliced in fails the key", strings.Replace(id, "tkt-1", "tkt-2", 1), testKey,
			domain.OwnMessageID{TicketID: "tkt-2", MessageID: strings.Replace(id, "tkt-1", "tkt-2", 1)}, true},
		{"a forged keyed check is not keyed", "ledgerdesk.tkt-1.out-9.k000000000000000000000000@x", testKey,
			domain.OwnMessageID{TicketID: "tkt-1", MessageID: "ledgerdesk.tkt-1.out-9.k000000000000000000000000@x"}, true},
		{"an id keyed under another key (rotated) is not keyed under this one", id, otherKey,
			domain.OwnMessageID{TicketID: "tkt-1", MessageID: id}, true},
		{"without a key nothing verifies", id, domain.MessageIDKey{}, domain.OwnMessageID{TicketID: "tkt-1", MessageID: id}, true},
		{"a foreign id with our prefix but no valid check", "ledgerdesk.tkt-1.out-1.0000000000@" + domainName, testKey, domain.OwnMessageID{}, false},
		{"a foreign id", "CAF=abc@mail.gmail.com", testKey, domain.OwnMessageID{}, false},
		{"no domain", "ledgerdesk.a.b.c", testKey, domain.OwnMessageID{}, false},
		{"empty", "", testKey, domain.OwnMessageID{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := domain.ParseOwnMessageID(tc.id, tc.key)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("ParseOwnMessageID(%q) = %+v, %v, want %+v, %v", tc.id, got, ok, tc.want, tc.wantOK)
			}
		})
	}
	if a, b := domain.OutgoingMessageID("t", "o1", domainName, testKey), domain.OutgoingMessageID("t", "o2", domainName, testKey); a == b {
		t.Errorf("OutgoingMessageID() gives %q for two different mails", a)
	}
	if a, b := domain.OutgoingMessageID("t", "o1", domainName, testKey), domain.OutgoingMessageID("t", "o1", domainName, otherKey); a == b {
		t.Errorf("OutgoingMessageID() gives %q under two keys", a)
	}
}

func TestOwnMessageID_Names(t *testing.T) {
	t.Parallel()
	sent := unkeyedMessageID("tkt-1", "sent", domainName)
	tk := domain.EvolveTicket(domain.EvolveTicket(domain.Ticket{},
		domain.TicketCreated{TicketID: "tkt-1", Number: 1001, Status: domain.StatusNew}),
		domain.ReplyQueued{TicketID: "tkt-1", OutgoingMail: domain.OutgoingMail{OutgoingMailID: "sent", MessageID: sent}})
	for _, tc := range []struct {
		name string
		id   string
		want bool
	}{
		{"a keyed id names its ticket", domain.OutgoingMessageID("tkt-1", "any", domainName, testKey), true},
		{"an unkeyed id of a mail the ticket sent names it", sent, true},
		{"an unkeyed id of a mail the ticket never sent names nothing", unkeyedMessageID("tkt-1", "forged", domainName), false},
		{"a keyed id with a wrong check names nothing", "ledgerdesk.tkt-1.any.k000000000000000000000000@x", false},
		{"a keyed id of another ticket names nothing", domain.OutgoingMessageID("tkt-2", "any", domainName, testKey), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o, ok := domain.ParseOwnMessageID(tc.id, testKey)
			if got := ok && o.Names(tk); got != tc.want {
				t.Errorf("ParseOwnMessageID(%q).Names(ticket) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
	if o, _ := domain.ParseOwnMessageID(sent, testKey); o.Names(domain.Ticket{}) {
		t.Error("an id names a ticket that does not exist")
	}
}

func TestMessageIDKey_StaysSecret(t *testing.T) {
	t.Parallel()
	k := domain.DeriveMessageIDKey([]byte("a secret that must not leak"))
	if k.IsZero() || !domain.DeriveMessageIDKey(nil).IsZero() {
		t.Fatalf("DeriveMessageIDKey: zero = %v for a secret, %v for none", k.IsZero(), domain.DeriveMessageIDKey(nil).IsZero())
	}
	b, err := json.Marshal(struct{ K domain.MessageIDKey }{k})
	if err != nil || string(b) != `{"K":{}}` {
		t.Errorf("json of a key = %s, %v; want no key material", b, err)
	}
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v", k, k, k)} {
		if strings.Contains(s, "[") || !strings.Contains(s, "redacted") {
			t.Errorf("a key prints as %q", s)
		}
	}
}

func TestMailIDFor(t *testing.T) {
	t.Parallel()
	a := domain.MailIDFor("acc", "7:101")
	if len(a) != 32 {
		t.Errorf("MailIDFor() = %q, want 32 hex characters", a)
	}
	if b := domain.MailIDFor("acc", "7:101"); a != b {
		t.Errorf("MailIDFor() is not deterministic: %q, %q", a, b)
	}
	if b := domain.MailIDFor("acc7", ":101"); a == b {
		t.Errorf("MailIDFor(acc, 7:101) = MailIDFor(acc7, :101) = %q; the parts must not run together", a)
	}
}
