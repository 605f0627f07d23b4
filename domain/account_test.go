package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestInboundAccount_Validate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(a *domain.InboundAccount)
		fields []string
	}{
		{name: "the support account is valid", change: func(*domain.InboundAccount) {}},
		{
			name: "every problem is reported at once, each naming its field",
			change: func(a *domain.InboundAccount) {
				a.Name, a.Protocol, a.Port, a.Security, a.PollIntervalSeconds, a.MaxMailSize = " ", "nntp", 0, "ssl", 0, -1
				a.AccountAddress = "helpdesk at ours"
			},
			fields: []string{"name:", "protocol:", "port:", "security:", "poll_interval_seconds:", "max_mail_size:", "account_address:"},
		},
		{
			name: "POP3 cannot move mail to a folder",
			change: func(a *domain.InboundAccount) {
				a.Protocol, a.AfterImport = domain.ProtocolPOP3, domain.AfterImportMove
			},
			fields: []string{"after_import:"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := supportAccount()
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

func TestDecideInboundAccounts(t *testing.T) {
	t.Parallel()
	var s domain.InboundAccounts
	ev, err := domain.DecideCreateInboundAccount(s, supportAccount(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideCreateInboundAccount()", []domain.Event{domain.InboundAccountCreated{Account: supportAccount(), Actor: "admin"}}, ev)
	s = domain.EvolveInboundAccounts(s, ev[0])
	dup := supportAccount()
	dup.ID = "acc-2"
	if _, err := domain.DecideCreateInboundAccount(s, dup, "admin"); !errors.Is(err, domain.ErrAccountNameTaken) {
		t.Errorf("DecideCreateInboundAccount(same name) error = %v, want ErrAccountNameTaken", err)
	}
	next := supportAccount()
	next.NoNewTickets = true
	ev, err = domain.DecideUpdateInboundAccount(s, next, "admin")
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideUpdateInboundAccount()", []domain.Event{domain.InboundAccountUpdated{Account: next, Changed: []string{"no_new_tickets"}, Actor: "admin"}}, ev)
	if _, err := domain.DecideDeleteInboundAccount(s, "nope", "admin"); !errors.Is(err, domain.ErrAccountNotFound) {
		t.Errorf("DecideDeleteInboundAccount(unknown) error = %v, want ErrAccountNotFound", err)
	}
}

func TestSettings(t *testing.T) {
	t.Parallel()
	def := domain.DefaultSettings()
	if err := def.Validate(); err != nil {
		t.Fatalf("DefaultSettings().Validate() = %v", err)
	}
	if def.ReactivationWindow().Hours() != 14*24 || def.ReferenceFormat != "[Ticket#<number>]" || def.ErrorFolder != "HD Error Messages" {
		t.Errorf("DefaultSettings() = %+v, want RULES.md's defaults", def)
	}
	bad := def
	bad.ReactivationWindowSeconds, bad.ReferenceFormat, bad.MessageIDDomain = -1, "#<number>", "a@b"
	err := bad.Validate()
	for _, f := range []string{"reactivation_window_seconds", "reference_format", "message_id_domain"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("Validate() = %v, want it to name %s", err, f)
		}
	}
	next := def
	next.NoStatusChangeForResourceMembers = true
	ev, err := domain.DecideChangeSettings(def, next, "admin")
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideChangeSettings()", []domain.Event{domain.SettingsChanged{Settings: next, Actor: "admin"}}, ev)
	if got := domain.EvolveSettings(def, ev[0]); got != next {
		t.Errorf("EvolveSettings() = %+v, want %+v", got, next)
	}
}
