package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestAutoMailGuard(t *testing.T) {
	t.Parallel()
	own := []string{"support@desk.example", "Billing@Desk.example"}
	tests := []struct {
		to       string
		recent   int
		wantCode string
	}{
		{"erika@customer.example", 0, ""},
		{"erika@customer.example", domain.RecipientLimit - 1, ""},
		{"erika@customer.example", domain.RecipientLimit, domain.SuppressRecipientLimit},
		{"MAILER-DAEMON@mx.example", 0, domain.SuppressSystemAddress},
		{"postmaster@customer.example", 0, domain.SuppressSystemAddress},
		{"noreply-billing@shop.example", 0, domain.SuppressSystemAddress},
		{"do.not.reply@shop.example", 0, domain.SuppressSystemAddress},
		{"bounces+123@list.example", 0, domain.SuppressSystemAddress},
		{"abuse@customer.example", 0, domain.SuppressSystemAddress},
		{"billing@desk.example", 0, domain.SuppressOwnAddress},
		{"", 0, domain.SuppressNoRecipient},
		{"not an address", 0, domain.SuppressNoRecipient},
		{"rooted@customer.example", 0, ""},
	}
	for _, tt := range tests {
		// given an address and the recent count, when guarded, then the code
		code, reason := domain.AutoMailGuard(tt.to, own, tt.recent)
		if code != tt.wantCode {
			t.Errorf("AutoMailGuard(%q, %d) = %q (%s), want %q", tt.to, tt.recent, code, reason, tt.wantCode)
		}
		if (code == "") != (reason == "") {
			t.Errorf("AutoMailGuard(%q): code %q with reason %q", tt.to, code, reason)
		}
	}
}

func TestDecideSaveTemplate(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	tpl := domain.Template{Name: "default", Subject: "{{.Subject}}", Body: "Hallo", UpdatedAt: at}
	ev, err := domain.DecideSaveTemplate(domain.Templates{}, tpl, "admin")
	if err != nil {
		t.Fatal(err)
	}
	tpl.UpdatedBy = "admin"
	if d := cmp.Diff([]domain.Event{domain.TemplateSaved{Template: tpl, Actor: "admin"}}, ev); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	s := domain.EvolveTemplates(domain.Templates{}, ev[0])
	if again, err := domain.DecideSaveTemplate(s, tpl, "admin"); err != nil || len(again) != 0 {
		t.Errorf("saving the same text again = %v, %v; want nothing", again, err)
	}
	for name, bad := range map[string]domain.Template{
		"bad name":           {Name: "Default!", Subject: "s", Body: "b", UpdatedAt: at},
		"multi-line subject": {Name: "x", Subject: "a\nb", Body: "b", UpdatedAt: at},
		"empty body":         {Name: "x", Subject: "s", Body: " ", UpdatedAt: at},
		"no time":            {Name: "x", Subject: "s", Body: "b"},
	} {
		if _, err := domain.DecideSaveTemplate(s, bad, "admin"); !errors.Is(err, domain.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
