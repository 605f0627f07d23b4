package domain_test

import (
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestIsAutomatic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(m *domain.MailReceived)
		want   bool
		why    string
	}{
		{"a person's mail", func(*domain.MailReceived) {}, false, ""},
		{"Auto-Submitted: no is a person's mail", func(m *domain.MailReceived) { m.AutoSubmitted = "no" }, false, ""},
		{"Auto-Submitted: auto-replied", func(m *domain.MailReceived) { m.AutoSubmitted = "Auto-Replied" }, true, "auto-submitted: auto-replied"},
		{"Auto-Submitted: auto-generated", func(m *domain.MailReceived) { m.AutoSubmitted = "auto-generated" }, true, "auto-submitted: auto-generated"},
		{"Precedence: bulk", func(m *domain.MailReceived) { m.Precedence = "bulk" }, true, "precedence: bulk"},
		{"Precedence: junk", func(m *domain.MailReceived) { m.Precedence = "junk" }, true, "precedence: junk"},
		{"Precedence: list", func(m *domain.MailReceived) { m.Precedence = "list" }, true, "precedence: list"},
		{"Precedence: auto_reply", func(m *domain.MailReceived) { m.Precedence = "auto_reply" }, true, "precedence: auto_reply"},
		{"Precedence: first-class is a person's mail", func(m *domain.MailReceived) { m.Precedence = "first-class" }, false, ""},
		{"X-Precedence: bulk", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"x-precedence": "bulk"} }, true, "x-precedence: bulk"},
		{"X-Autoreply", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"x-autoreply": "yes"} }, true, "header x-autoreply"},
		{"X-Autorespond", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"x-autorespond": "x"} }, true, "header x-autorespond"},
		{"X-Auto-Response-Suppress", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"x-auto-response-suppress": "All"} }, true, "header x-auto-response-suppress"},
		{"List-Id", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"list-id": "<l.example>"} }, true, "header list-id"},
		{"List-Unsubscribe", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"list-unsubscribe": "<mailto:x>"} }, true, "header list-unsubscribe"},
		{"X-Loop", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"x-loop": "yes"} }, true, "header x-loop"},
		{"X-OTRS-Loop", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"x-otrs-loop": "yes"} }, true, "header x-otrs-loop"},
		{"X-AMAZON-MAIL-RELAY-TYPE in mixed case", func(m *domain.MailReceived) {
			m.LoopHeaders = map[string]string{"X-AMAZON-MAIL-RELAY-TYPE": "notification"}
		}, true, "header x-amazon-mail-relay-type"},
		{"a read receipt (multipart/report)", func(m *domain.MailReceived) {
			m.ContentType, m.ReportType = "multipart/report", "disposition-notification"
		}, true, "multipart/report"},
		{"an empty Return-Path", func(m *domain.MailReceived) { m.ReturnPathEmpty = true }, true, "empty return-path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMail()
			tc.change(&m)
			got, why := domain.IsAutomatic(m)
			if got != tc.want || why != tc.why {
				t.Errorf("IsAutomatic() = %v, %q, want %v, %q", got, why, tc.want, tc.why)
			}
		})
	}
}

func TestIsBounce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(m *domain.MailReceived)
		want   bool
		why    string
	}{
		{"a person's mail", func(*domain.MailReceived) {}, false, ""},
		{"a delivery status notification", func(m *domain.MailReceived) { m.ContentType, m.ReportType = "multipart/report", "delivery-status" }, true, "delivery status notification"},
		{"a read receipt is no bounce", func(m *domain.MailReceived) {
			m.ContentType, m.ReportType = "multipart/report", "disposition-notification"
		}, false, ""},
		{"MAILER-DAEMON", func(m *domain.MailReceived) { m.From.Email = "MAILER-DAEMON@mx.example" }, true, "sender mailer-daemon@mx.example"},
		{"postmaster", func(m *domain.MailReceived) { m.From.Email = "postmaster@mx.example" }, true, "sender postmaster@mx.example"},
		{"an empty Return-Path", func(m *domain.MailReceived) { m.ReturnPathEmpty = true }, true, "empty return-path"},
		{"X-Failed-Recipients", func(m *domain.MailReceived) { m.LoopHeaders = map[string]string{"x-failed-recipients": "a@b"} }, true, "header x-failed-recipients"},
		{"an auto-reply with a return path is no bounce", func(m *domain.MailReceived) { m.AutoSubmitted = "auto-replied" }, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMail()
			tc.change(&m)
			got, why := domain.IsBounce(m)
			if got != tc.want || why != tc.why {
				t.Errorf("IsBounce() = %v, %q, want %v, %q", got, why, tc.want, tc.why)
			}
		})
	}
}
