package domain

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is what an API token may do. The set only grows.
type Role string

// Roles of API tokens.
const (
	RoleAdmin   Role = "admin"   // everything
	RoleAgent   Role = "agent"   // tickets, users; accounts read without secrets
	RoleAuditor Role = "auditor" // read everything incl. history and the event log; write nothing
	RoleAnalyst Role = "analyst" // read the views
	RoleMetrics Role = "metrics" // scrape /metrics, nothing else (a Prometheus server)
)

// Roles lists every role, for validation and documentation.
var Roles = []Role{RoleAdmin, RoleAgent, RoleAuditor, RoleAnalyst, RoleMetrics}

// ParseRole accepts a role name exactly as stored. Nothing is trimmed or
// folded: the route table compares roles byte for byte, so " agent " would
// be stored as a role no route allows.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%q is not one of admin, agent, auditor, analyst, metrics", s)
}

// Stored names and schema versions of the API token events.
const (
	APITokenIssuedName          = "APITokenIssued"
	APITokenIssuedSchemaVersion = 1

	APITokenRevokedName          = "APITokenRevoked"
	APITokenRevokedSchemaVersion = 1
)

// APITokenIssued records a new API token. Only the SHA-256 of the token is
// kept; the token itself is shown once, to the admin who issued it.
type APITokenIssued struct {
	TokenID  string `json:"token_id"`
	Name     string `json:"name"`
	Role     Role   `json:"role"`
	Hash     string `json:"hash"` // hex SHA-256 of the token
	IssuedBy string `json:"issued_by"`
	// IssuedAt is when the token was issued (zero in tokens issued before
	// it was recorded).
	IssuedAt time.Time `json:"issued_at,omitzero"`
	// ExpiresAt is when the token stops authenticating; zero: never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// EventName implements Event.
func (APITokenIssued) EventName() string { return APITokenIssuedName }

// Expired reports whether the token no longer authenticates at now.
func (t APITokenIssued) Expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// APITokenRevoked records that a token no longer authenticates.
type APITokenRevoked struct {
	TokenID   string `json:"token_id"`
	RevokedBy string `json:"revoked_by"`
}

// EventName implements Event.
func (APITokenRevoked) EventName() string { return APITokenRevokedName }

// ErrTokenUnknown is returned when revoking a token that was never issued or
// is already revoked.
var ErrTokenUnknown = errors.New("domain: unknown or revoked API token")

// Tokens is the state of the API token registry.
type Tokens struct {
	Active map[string]APITokenIssued // by token id
}

// EvolveTokens folds one token event into the registry.
func EvolveTokens(s Tokens, e Event) Tokens {
	if s.Active == nil {
		s.Active = map[string]APITokenIssued{}
	}
	switch e := e.(type) {
	case APITokenIssued:
		s.Active[e.TokenID] = e
	case APITokenRevoked:
		delete(s.Active, e.TokenID)
	}
	return s
}

// DecideIssueToken validates a new token's name, role (exactly as listed in
// Roles) and expiry (after IssuedAt; zero: never).
func DecideIssueToken(s Tokens, issued APITokenIssued) ([]Event, error) {
	var errs []error
	if strings.TrimSpace(issued.Name) == "" {
		errs = append(errs, errors.New("name: must not be empty"))
	}
	if _, err := ParseRole(string(issued.Role)); err != nil {
		errs = append(errs, fmt.Errorf("role: %w", err))
	}
	if !issued.ExpiresAt.IsZero() {
		switch {
		case issued.IssuedAt.IsZero():
			errs = append(errs, errors.New("issued_at: must be set when the token expires"))
		case !issued.ExpiresAt.After(issued.IssuedAt):
			errs = append(errs, fmt.Errorf("expires_at: %s is not after the time of issue %s",
				issued.ExpiresAt.UTC().Format(time.RFC3339), issued.IssuedAt.UTC().Format(time.RFC3339)))
		}
	}
	if len(issued.Hash) != 64 {
		errs = append(errs, errors.New("hash: want a hex SHA-256"))
	}
	if _, dup := s.Active[issued.TokenID]; dup {
		errs = append(errs, fmt.Errorf("token_id: %s exists", issued.TokenID))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return []Event{issued}, nil
}

// DecideRevokeToken revokes an active token.
func DecideRevokeToken(s Tokens, tokenID, actor string) ([]Event, error) {
	if _, ok := s.Active[tokenID]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrTokenUnknown, tokenID)
	}
	return []Event{APITokenRevoked{TokenID: tokenID, RevokedBy: actor}}, nil
}
