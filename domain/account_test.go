package domain_test

import (
	"errors"
	"net/netip"
	"reflect"
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
			name: "only IMAP accounts can be pushed",
			change: func(a *domain.InboundAccount) {
				on := true
				a.Protocol, a.Push = domain.ProtocolPOP3, &on
			},
			fields: []string{"push:"},
		},
		{
			name: "an IMAP account may turn push off",
			change: func(a *domain.InboundAccount) {
				off := false
				a.Push = &off
			},
		},
		{
			name: "POP3 cannot move mail to a folder",
			change: func(a *domain.InboundAccount) {
				a.Protocol, a.AfterImport = domain.ProtocolPOP3, domain.AfterImportMove
			},
			fields: []string{"after_import:"},
		},
		{
			name: "trash needs folders too",
			change: func(a *domain.InboundAccount) {
				a.Protocol, a.AfterImport = domain.ProtocolPOP3, domain.AfterImportTrash
			},
			fields: []string{"after_import:"},
		},
		{
			name: "an IMAP account may walk its subscribed folders and name a trash folder",
			change: func(a *domain.InboundAccount) {
				a.IncludeSubfolders, a.OnlySubscribed, a.AfterImport, a.TrashFolder = true, true, domain.AfterImportTrash, "Deleted"
			},
		},
		{
			name: "only_subscribed restricts a walk; POP3 has no tree and no trash",
			change: func(a *domain.InboundAccount) {
				a.Protocol, a.OnlySubscribed, a.TrashFolder = domain.ProtocolPOP3, true, "Trash"
			},
			fields: []string{"only_subscribed:", "trash_folder:"},
		},
		{
			name: "POP3 has no folders to walk",
			change: func(a *domain.InboundAccount) {
				a.Protocol, a.IncludeSubfolders = domain.ProtocolPOP3, true
			},
			fields: []string{"include_subfolders:"},
		},
		{
			name: "a Graph account may walk its child folders",
			change: func(a *domain.InboundAccount) {
				a.Protocol, a.Mailbox, a.OAuthConnectionID, a.Folder = domain.ProtocolGraph, "helpdesk@ours.example", "c1", "Inbox"
				a.IncludeSubfolders = true
			},
		},
		{
			name: "Graph has no subscriptions to walk by",
			change: func(a *domain.InboundAccount) {
				a.Protocol, a.Mailbox, a.OAuthConnectionID, a.Folder = domain.ProtocolGraph, "helpdesk@ours.example", "c1", "Inbox"
				a.IncludeSubfolders, a.OnlySubscribed = true, true
			},
			fields: []string{"only_subscribed: is for IMAP accounts"},
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

func TestInboundAccount_PushEnabled(t *testing.T) {
	t.Parallel()
	on, off := true, false
	tests := []struct {
		name     string
		protocol string
		push     *bool
		want     bool
	}{
		{name: "an IMAP account is pushed by default (also one stored before push existed)", protocol: domain.ProtocolIMAP, want: true},
		{name: "an IMAP account with push on is pushed", protocol: domain.ProtocolIMAP, push: &on, want: true},
		{name: "an IMAP account with push off is polled", protocol: domain.ProtocolIMAP, push: &off},
		{name: "a POP3 account is polled", protocol: domain.ProtocolPOP3},
		{name: "a Graph account is polled", protocol: domain.ProtocolGraph},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := supportAccount()
			a.Protocol, a.Push = tc.protocol, tc.push
			if got := a.PushEnabled(); got != tc.want {
				t.Errorf("PushEnabled() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDecideUpdateInboundAccount_PushIsInTheHistory(t *testing.T) {
	t.Parallel()
	s := domain.EvolveInboundAccounts(domain.InboundAccounts{}, domain.InboundAccountCreated{Account: supportAccount()})
	off, on := false, true
	next := supportAccount()
	next.Push = &off
	ev, err := domain.DecideUpdateInboundAccount(s, next, "admin")
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideUpdateInboundAccount(push off)", []domain.Event{domain.InboundAccountUpdated{Account: next, Changed: []string{"push"}, Actor: "admin"}}, ev)
	// Saying push on for an account that is pushed by default is no change.
	next.Push = &on
	if ev, err := domain.DecideUpdateInboundAccount(s, next, "admin"); err != nil || len(ev) != 0 {
		t.Errorf("DecideUpdateInboundAccount(push on, the default) = %v, %v; want nothing", ev, err)
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
	if got := domain.EvolveSettings(def, ev[0]); !reflect.DeepEqual(got, next) {
		t.Errorf("EvolveSettings() = %+v, want %+v", got, next)
	}
	// An empty allow-list is no change from a missing one.
	empty := def
	empty.AllowedMailHosts = []string{}
	if ev, err := domain.DecideChangeSettings(def, empty, "admin"); err != nil || len(ev) != 0 {
		t.Errorf("DecideChangeSettings(empty allowed_mail_hosts) = %v, %v; want nothing", ev, err)
	}
	bad = def
	bad.AllowedMailHosts = []string{"mail.example.com", "10.0.0.0/33", "a b", ".example.org", "192.0.2.1"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "allowed_mail_hosts[1]") ||
		!strings.Contains(err.Error(), "allowed_mail_hosts[2]") || strings.Count(err.Error(), "allowed_mail_hosts") != 2 {
		t.Errorf("Validate() = %v, want entries 1 and 2 named", err)
	}
}

func TestSettings_MailHostPolicy(t *testing.T) {
	t.Parallel()
	list := domain.Settings{AllowedMailHosts: []string{"imap.example.com", ".corp.example", "*.mail.example.net", "10.20.0.0/16", "2001:db8::7"}}
	tests := []struct {
		name       string
		settings   domain.Settings
		host       string
		allowsName bool
		checkErr   bool // refused at create/update
	}{
		{name: "an empty list allows any host", host: "intranet.local", allowsName: true},
		{name: "an exact name is allowed", settings: list, host: "IMAP.example.com.", allowsName: true},
		{name: "a name below a suffix is allowed", settings: list, host: "mx1.corp.example", allowsName: true},
		{name: "a *. suffix works like a . suffix", settings: list, host: "a.mail.example.net", allowsName: true},
		{name: "a suffix does not allow a look-alike", settings: list, host: "evilcorp.example", checkErr: false},
		{name: "an address inside a prefix is allowed", settings: list, host: "10.20.3.4", allowsName: true},
		{name: "a single IPv6 address entry", settings: list, host: "[2001:db8::7]", allowsName: true},
		{name: "an address outside every prefix is refused", settings: list, host: "127.0.0.1", checkErr: true},
		{name: "another name waits for its addresses when prefixes exist", settings: list, host: "internal.example"},
		{name: "another name is refused when only names are listed", settings: domain.Settings{AllowedMailHosts: []string{"imap.example.com"}},
			host: "localhost", checkErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.settings.MailHostPolicy().AllowsName(tc.host); got != tc.allowsName {
				t.Errorf("AllowsName(%q) = %v, want %v", tc.host, got, tc.allowsName)
			}
			err := tc.settings.CheckMailHost(tc.host)
			if (err != nil) != tc.checkErr || (err != nil && !errors.Is(err, domain.ErrMailHostNotAllowed)) {
				t.Errorf("CheckMailHost(%q) = %v, want error %v", tc.host, err, tc.checkErr)
			}
		})
	}
	p := list.MailHostPolicy()
	for addr, want := range map[string]bool{"10.20.255.1": true, "10.21.0.1": false, "::ffff:10.20.0.9": true, "2001:db8::8": false} {
		if got := p.AllowsAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("AllowsAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}
