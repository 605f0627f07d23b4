package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestDecideTokens(t *testing.T) {
	t.Parallel()
	issued := domain.APITokenIssued{TokenID: "k1", Name: "ci", Role: domain.RoleAuditor, Hash: strings.Repeat("ab", 32), IssuedBy: "admin"}
	var s domain.Tokens
	ev, err := domain.DecideIssueToken(s, issued)
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideIssueToken()", []domain.Event{issued}, ev)
	s = domain.EvolveTokens(s, ev[0])
	if _, err := domain.DecideIssueToken(s, issued); err == nil {
		t.Error("DecideIssueToken(same id) error = nil")
	}
	bad := domain.APITokenIssued{TokenID: "k2", Role: "root", Hash: "x"}
	err = func() error { _, err := domain.DecideIssueToken(s, bad); return err }()
	for _, f := range []string{"name:", "role:", "hash:"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("DecideIssueToken(bad) = %v, want it to name %s", err, f)
		}
	}
	ev, err = domain.DecideRevokeToken(s, "k1", "admin")
	if err != nil {
		t.Fatal(err)
	}
	s = domain.EvolveTokens(s, ev[0])
	if _, err := domain.DecideRevokeToken(s, "k1", "admin"); !errors.Is(err, domain.ErrTokenUnknown) {
		t.Errorf("DecideRevokeToken(revoked) error = %v, want ErrTokenUnknown", err)
	}
	if r, err := domain.ParseRole("agent"); err != nil || r != domain.RoleAgent {
		t.Errorf("ParseRole(agent) = %q, %v", r, err)
	}
}

func TestDecideIssueToken_RefusesWhatWouldNotWork(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	ok := domain.APITokenIssued{TokenID: "k1", Name: "ci", Role: domain.RoleAuditor, Hash: strings.Repeat("ab", 32), IssuedBy: "admin", IssuedAt: at}
	tests := []struct {
		name   string
		change func(*domain.APITokenIssued)
		field  string // "" = accepted
	}{
		{name: "a token without expiry is accepted", change: func(*domain.APITokenIssued) {}},
		{name: "a token that expires later is accepted", change: func(i *domain.APITokenIssued) { i.ExpiresAt = at.Add(time.Hour) }},
		{name: "a role with spaces is refused, not stored as a role nothing allows", change: func(i *domain.APITokenIssued) { i.Role = " agent " }, field: "role:"},
		{name: "a role in capitals is refused", change: func(i *domain.APITokenIssued) { i.Role = "Admin" }, field: "role:"},
		{name: "an empty role is refused", change: func(i *domain.APITokenIssued) { i.Role = "" }, field: "role:"},
		{name: "a token that expired when it was issued is refused", change: func(i *domain.APITokenIssued) { i.ExpiresAt = at }, field: "expires_at:"},
		{name: "an expiry without the time of issue is refused", change: func(i *domain.APITokenIssued) { i.IssuedAt, i.ExpiresAt = time.Time{}, at }, field: "issued_at:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := ok
			tc.change(&in)
			got, err := domain.DecideIssueToken(domain.Tokens{}, in)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("DecideIssueToken() error = %v, want nil", err)
				}
				diffEvents(t, "DecideIssueToken()", []domain.Event{in}, got)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("DecideIssueToken() = %v, %v; want an error naming %s", got, err, tc.field)
			}
		})
	}
}

func TestAPITokenIssued_Expired(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	never := domain.APITokenIssued{TokenID: "k1"}
	if never.Expired(at.AddDate(100, 0, 0)) {
		t.Error("a token without expiry expired")
	}
	soon := domain.APITokenIssued{TokenID: "k2", ExpiresAt: at}
	if soon.Expired(at.Add(-time.Nanosecond)) || !soon.Expired(at) {
		t.Errorf("Expired() around %v wrong: before %v, at %v", at, soon.Expired(at.Add(-time.Nanosecond)), soon.Expired(at))
	}
}
