package domain

import (
	"errors"
	"slices"
	"strings"
)

// A stored secret (a mailbox password, an OAuth client secret) is
// write-only: nobody reads it back through the API. It must not be readable
// sideways either, by pointing the account at another server and letting
// the next poll, check or token request log in there with it. So an update
// that changes where or how a stored secret is sent must carry the secret
// again; an update that keeps the stored secret changes none of those
// fields. Re-sealing under a new key (ledgerdesk secrets rotate) sends the
// secret again, sealed, and changes no field, so it is not affected.

// ErrSecretRequired is matched with errors.Is by a SecretRequiredError.
var ErrSecretRequired = errors.New("domain: secret required")

// SecretRequiredError refuses an update that would send a stored secret to
// another server, or another way, than the one it was given for. Its text
// starts with the secret's API field, as validation errors do.
type SecretRequiredError struct {
	// Field is the secret's API field (password, client_secret, ...).
	Field string
	// Changed are the fields whose change needs the secret again.
	Changed []string
}

func (e *SecretRequiredError) Error() string {
	return e.Field + ": must be sent again to change " + strings.Join(e.Changed, ", ") +
		" (a stored secret only goes to the server it was given for)"
}

// Is makes errors.Is(err, ErrSecretRequired) hold.
func (e *SecretRequiredError) Is(target error) bool { return target == ErrSecretRequired }

// The fields that decide where and how each stored secret is sent. A
// change of any of them with the secret kept is refused.
var (
	// inboundPasswordBinding: the server (protocol, host, port), whom the
	// TLS handshake trusts as that server (security, tls_skip_verify,
	// tls_server_name, ca_cert_pem), whether the password may travel as a
	// plain login (prevent_plain_login), and whose password it is
	// (username).
	inboundPasswordBinding = []string{"protocol", "host", "port", "security", "tls_skip_verify", "tls_server_name",
		"ca_cert_pem", "username", "prevent_plain_login"}
	// outboundPasswordBinding: the same for SMTP submission; auth decides
	// how the password is sent.
	outboundPasswordBinding = []string{"protocol", "host", "port", "security", "tls_skip_verify", "tls_server_name",
		"auth", "username"}
	// legacyInlineOAuthBinding: the inline OAuth of old accounts sends its
	// client secret and refresh token to the tenant's token endpoint.
	legacyInlineOAuthBinding = []string{"oauth_tenant_id", "oauth_client_id"}
	// clientSecretBinding: where a connection's client secret is sent (the
	// token endpoint, derived from provider, tenant and login base or
	// given), and the client it belongs to.
	clientSecretBinding = []string{"provider", "tenant_id", "client_id", "login_base_url", "graph_base_url", "authorization_url", "token_url"}
)

// keptSecret is one secret of an update: whether the stored value is kept
// (none sent), and the fields bound to it.
type keptSecret struct {
	field   string
	kept    bool
	binding []string
}

// secretsRequired returns a SecretRequiredError for each kept secret whose
// binding fields are among changed, joined; nil when there is none.
func secretsRequired(changed []string, secrets ...keptSecret) error {
	var errs []error
	for _, s := range secrets {
		if !s.kept {
			continue
		}
		var moved []string
		for _, f := range changed {
			if slices.Contains(s.binding, f) {
				moved = append(moved, f)
			}
		}
		if len(moved) > 0 {
			errs = append(errs, &SecretRequiredError{Field: s.field, Changed: moved})
		}
	}
	return errors.Join(errs...)
}
