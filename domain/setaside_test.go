package domain_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestSetAsideError(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", domain.SetAsideErrorMax) // 2 bytes each
	tests := []struct {
		name, in, want string
	}{
		{"a short message is kept", "index row size 2720 exceeds maximum 2704", "index row size 2720 exceeds maximum 2704"},
		{"NUL characters are dropped", "bad sender \"a\x00b@example.org\"", "bad sender \"ab@example.org\""},
		{"invalid UTF-8 is replaced", "bad byte \xff here", "bad byte \uFFFD here"},
		{"a long message is cut at a character boundary", long, long[:domain.SetAsideErrorMax-len("…")-1] + "…"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := domain.SetAsideError(tc.in)
			if got != tc.want {
				t.Errorf("SetAsideError() = %q, want %q", got, tc.want)
			}
			if len(got) > domain.SetAsideErrorMax || !utf8.ValidString(got) {
				t.Errorf("SetAsideError() = %d bytes, valid UTF-8 %v; want at most %d, valid", len(got), utf8.ValidString(got), domain.SetAsideErrorMax)
			}
		})
	}
}

func TestMailAccount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, typ, payload, want string
	}{
		{"a received mail names its account", domain.MailReceivedName, `{"mail_id":"m","account_id":"acc-1"}`, "acc-1"},
		{"a failed mail too", domain.MailFailedName, `{"account_id":"acc-2"}`, "acc-2"},
		{"a ticket event names none", domain.TicketCreatedName, `{"account_id":"acc-3"}`, ""},
		{"a broken payload names none", domain.MailReceivedName, `{"account_id":`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := domain.MailAccount(tc.typ, []byte(tc.payload)); got != tc.want {
				t.Errorf("MailAccount(%s, %s) = %q, want %q", tc.typ, tc.payload, got, tc.want)
			}
		})
	}
}

func TestDecideRetry(t *testing.T) {
	t.Parallel()
	const sub = "process.mail-intake.v1"
	aside := func(pos int64) domain.SubscriberEventSetAside {
		return domain.SubscriberEventSetAside{Subscriber: sub, Position: pos, EventID: "e", EventType: domain.MailReceivedName,
			AccountID: accID, Attempts: 5, Error: "boom", At: t0}
	}
	retried := func(pos int64) domain.Event {
		return domain.SubscriberEventRetried{Subscriber: sub, Position: pos, EventID: "e", EventType: domain.MailReceivedName,
			AccountID: accID, Actor: "admin", At: t0}
	}
	tests := []struct {
		name     string
		given    []domain.Event
		position int64
		all      bool
		want     []domain.Event
		wantErr  error
	}{
		{name: "a set-aside event is retried by its position",
			given: []domain.Event{aside(7), aside(9)}, position: 9, want: []domain.Event{retried(9)}},
		{name: "all retries every open one in the order they were set aside",
			given: []domain.Event{aside(9), aside(7)}, all: true, want: []domain.Event{retried(9), retried(7)}},
		{name: "an event already retried is not open",
			given: []domain.Event{aside(7), retried(7)}, position: 7, wantErr: domain.ErrNotFound},
		{name: "an event set aside again after its retry is open again",
			given: []domain.Event{aside(7), retried(7), aside(7)}, position: 7, want: []domain.Event{retried(7)}},
		{name: "a position never set aside is not found",
			given: []domain.Event{aside(7)}, position: 8, wantErr: domain.ErrNotFound},
		{name: "all with nothing open asks for nothing",
			given: []domain.Event{aside(7), retried(7)}, all: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var s domain.SetAsides
			for _, e := range tc.given {
				s = domain.EvolveSetAsides(s, e)
			}
			got, err := domain.DecideRetry(s, tc.position, tc.all, "admin", t0)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("DecideRetry() error = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("DecideRetry() (-want +got):\n%s", diff)
			}
		})
	}
}
