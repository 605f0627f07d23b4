package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func smtpAccount(id string) domain.OutboundAccount {
	return domain.OutboundAccount{
		ID: id, Name: "SMTP " + id, Enabled: true, Protocol: domain.OutboundSMTP, Host: "smtp.ours.example",
		Port: 587, Security: domain.SecurityStartTLS, Auth: domain.AuthPlain, Username: "helpdesk", Password: "sealed:xyz",
		SenderAddress: ourSender, SenderName: "Support", BodyEncoding: domain.EncodingQuotedPrintable,
	}
}

func registry(tb testing.TB, events ...domain.Event) domain.OutboundAccounts {
	tb.Helper()
	var s domain.OutboundAccounts
	for _, e := range events {
		s = domain.EvolveOutboundAccounts(s, e)
	}
	return s
}

func TestOutboundAccount_Validate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(a *domain.OutboundAccount)
		fields []string // API fields the error must name; none = valid
	}{
		{name: "a submission account on 587 with STARTTLS is valid", change: func(*domain.OutboundAccount) {}},
		{name: "port 25 is refused", change: func(a *domain.OutboundAccount) { a.Port = 25 }, fields: []string{"port: 25 is refused"}},
		{name: "a port out of range is refused", change: func(a *domain.OutboundAccount) { a.Port = 70000 }, fields: []string{"port"}},
		{name: "PLAIN over an unencrypted connection is refused", change: func(a *domain.OutboundAccount) { a.Security = domain.SecurityNone }, fields: []string{"auth"}},
		{
			name: "every problem is reported at once, each naming its field",
			change: func(a *domain.OutboundAccount) {
				a.Name, a.Host, a.Auth, a.SenderAddress, a.BodyEncoding, a.MaxSize = "", "", "ntlm", "not an address", "uu", -1
			},
			fields: []string{"name:", "host:", "auth:", "sender_address:", "body_encoding:", "max_size:"},
		},
		{name: "graph needs an OAuth connection", change: func(a *domain.OutboundAccount) { a.Protocol = domain.OutboundGraph }, fields: []string{"oauth_connection_id"}},
		{name: "an unknown protocol is refused", change: func(a *domain.OutboundAccount) { a.Protocol = "uucp" }, fields: []string{"protocol"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := smtpAccount("o1")
			tc.change(&a)
			err := a.Validate()
			if len(tc.fields) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors naming %v", tc.fields)
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("Validate() = %q, want it to contain %q", err, f)
				}
			}
		})
	}
}

func TestOutboundAccount_WithDefaults(t *testing.T) {
	t.Parallel()
	a := domain.OutboundAccount{Host: "smtp.x", Username: "u"}.WithDefaults()
	if a.Protocol != domain.OutboundSMTP || a.Port != 587 || a.Security != domain.SecurityStartTLS || a.Auth != domain.AuthPlain || a.BodyEncoding != domain.EncodingQuotedPrintable {
		t.Errorf("WithDefaults() = %+v, want smtp 587 starttls plain quoted-printable", a)
	}
	if b := (domain.OutboundAccount{Security: domain.SecurityTLS}).WithDefaults(); b.Port != 465 {
		t.Errorf("WithDefaults() with tls port = %d, want 465", b.Port)
	}
}

func TestDecideOutboundAccounts(t *testing.T) {
	t.Parallel()
	o1, o2 := smtpAccount("o1"), smtpAccount("o2")
	o1d := o1
	o1d.Default = true
	t.Run("the first account becomes the default", func(t *testing.T) {
		t.Parallel()
		got, err := domain.DecideCreateOutboundAccount(registry(t), o1, "admin")
		if err != nil {
			t.Fatal(err)
		}
		diffEvents(t, "DecideCreateOutboundAccount()", []domain.Event{domain.OutboundAccountCreated{Account: o1d, Actor: "admin"}}, got)
	})
	t.Run("a second account is not the default unless asked", func(t *testing.T) {
		t.Parallel()
		got, err := domain.DecideCreateOutboundAccount(registry(t, domain.OutboundAccountCreated{Account: o1d}), o2, "admin")
		if err != nil {
			t.Fatal(err)
		}
		diffEvents(t, "DecideCreateOutboundAccount()", []domain.Event{domain.OutboundAccountCreated{Account: o2, Actor: "admin"}}, got)
	})
	t.Run("a new default demotes the old one in the same decision", func(t *testing.T) {
		t.Parallel()
		o2d := o2
		o2d.Default = true
		got, err := domain.DecideCreateOutboundAccount(registry(t, domain.OutboundAccountCreated{Account: o1d}), o2d, "admin")
		if err != nil {
			t.Fatal(err)
		}
		diffEvents(t, "DecideCreateOutboundAccount()", []domain.Event{
			domain.OutboundAccountUpdated{Account: o1, Changed: []string{"default"}, Actor: "admin"},
			domain.OutboundAccountCreated{Account: o2d, Actor: "admin"},
		}, got)
	})
	t.Run("the default cannot be deleted while other accounts exist", func(t *testing.T) {
		t.Parallel()
		s := registry(t, domain.OutboundAccountCreated{Account: o1d}, domain.OutboundAccountCreated{Account: o2})
		if _, err := domain.DecideDeleteOutboundAccount(s, "o1", "admin"); !errors.Is(err, domain.ErrInUse) {
			t.Errorf("DecideDeleteOutboundAccount(default) error = %v, want ErrInUse", err)
		}
		got, err := domain.DecideDeleteOutboundAccount(s, "o2", "admin")
		if err != nil {
			t.Fatal(err)
		}
		diffEvents(t, "DecideDeleteOutboundAccount()", []domain.Event{domain.OutboundAccountDeleted{AccountID: "o2", Actor: "admin"}}, got)
	})
	t.Run("an update keeps the stored password when none is sent and names what changed", func(t *testing.T) {
		t.Parallel()
		s := registry(t, domain.OutboundAccountCreated{Account: o1d})
		next := o1d
		next.Password, next.SenderName, next.MaxSize = "", "Helpdesk", 10<<20
		got, err := domain.DecideUpdateOutboundAccount(s, next, "admin")
		if err != nil {
			t.Fatal(err)
		}
		want := next
		want.Password = o1d.Password
		diffEvents(t, "DecideUpdateOutboundAccount()", []domain.Event{domain.OutboundAccountUpdated{Account: want, Changed: []string{"sender_name", "max_size"}, Actor: "admin"}}, got)
	})
	t.Run("the default cannot be un-defaulted directly", func(t *testing.T) {
		t.Parallel()
		s := registry(t, domain.OutboundAccountCreated{Account: o1d})
		if _, err := domain.DecideUpdateOutboundAccount(s, o1, "admin"); !errors.Is(err, domain.ErrInvalid) {
			t.Errorf("DecideUpdateOutboundAccount() error = %v, want ErrInvalid", err)
		}
	})
	t.Run("names are unique ignoring case", func(t *testing.T) {
		t.Parallel()
		dup := o2
		dup.Name = strings.ToUpper(o1.Name)
		if _, err := domain.DecideCreateOutboundAccount(registry(t, domain.OutboundAccountCreated{Account: o1d}), dup, "admin"); !errors.Is(err, domain.ErrNameTaken) {
			t.Errorf("DecideCreateOutboundAccount() error = %v, want ErrNameTaken", err)
		}
	})
	t.Run("port 25 is refused on create", func(t *testing.T) {
		t.Parallel()
		bad := o1
		bad.Port = 25
		if _, err := domain.DecideCreateOutboundAccount(registry(t), bad, "admin"); !errors.Is(err, domain.ErrInvalid) {
			t.Errorf("DecideCreateOutboundAccount(port 25) error = %v, want ErrInvalid", err)
		}
	})
}

func TestSendingAccount(t *testing.T) {
	t.Parallel()
	def := smtpAccount("o-default")
	def.Default = true
	team := smtpAccount("o-team")
	team.Resources = []string{"res-2nd-level"}
	billing := smtpAccount("o-billing")
	billing.Categories = []string{"billing"}
	s := registry(t, domain.OutboundAccountCreated{Account: def}, domain.OutboundAccountCreated{Account: team}, domain.OutboundAccountCreated{Account: billing})
	tests := []struct {
		name, resource, category, want string
	}{
		{"the resource's account sends first", "res-2nd-level", "billing", "o-team"},
		{"else the category's account", "res-1st-level", "billing", "o-billing"},
		{"else the default", "res-1st-level", "hardware", "o-default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := domain.SendingAccount(s, tc.resource, tc.category)
			if !ok || got.ID != tc.want {
				t.Errorf("SendingAccount(%q, %q) = %q, %v, want %q", tc.resource, tc.category, got.ID, ok, tc.want)
			}
		})
	}
}
