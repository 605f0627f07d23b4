package domain_test

import (
	"errors"
	"strings"
	"testing"

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
	if r, err := domain.ParseRole(" agent "); err != nil || r != domain.RoleAgent {
		t.Errorf("ParseRole(agent) = %q, %v", r, err)
	}
}
