package domain_test

import (
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
	id := domain.OutgoingMessageID("tkt-1", "out-1", domainName)
	if !strings.HasSuffix(id, "@"+domainName) || !strings.HasPrefix(id, "ledgerdesk.") {
		t.Errorf("OutgoingMessageID() = %q, want ledgerdesk.…@%s", id, domainName)
	}
	tests := []struct {
		name   string
		id     string
		want   string
		wantOK bool
	}{
		{"our id", id, "tkt-1", true},
		{"our id in angle brackets, the domain changed since", "<" + strings.Replace(id, domainName, "new.example", 1) + ">", "tkt-1", true},
		{"our id of a mail without ticket", domain.OutgoingMessageID("", "out-2", domainName), "", true},
		{"a foreign id with our prefix but no valid check", "ledgerdesk.tkt-1.out-1.0000000000@" + domainName, "", false},
		{"another ticket's id spliced in fails the check", strings.Replace(id, "tkt-1", "tkt-2", 1), "", false},
		{"a foreign id", "CAF=abc@mail.gmail.com", "", false},
		{"no domain", "ledgerdesk.a.b.c", "", false},
		{"empty", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := domain.ParseOwnMessageID(tc.id)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("ParseOwnMessageID(%q) = %q, %v, want %q, %v", tc.id, got, ok, tc.want, tc.wantOK)
			}
		})
	}
	if a, b := domain.OutgoingMessageID("t", "o1", domainName), domain.OutgoingMessageID("t", "o2", domainName); a == b {
		t.Errorf("OutgoingMessageID() gives %q for two different mails", a)
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
