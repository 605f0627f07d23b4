package domain

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrMailHostNotAllowed is matched (errors.Is) when an inbound account's
// host, or the address it resolves to, is outside allowed_mail_hosts.
var ErrMailHostNotAllowed = errors.New("domain: mail host not in allowed_mail_hosts")

// MailHostPolicy is Settings.AllowedMailHosts parsed: which servers inbound
// accounts may connect to, so that an admin cannot point an account (and
// "check connection", which shows what the server answered) at any service
// the desk can reach. The zero policy allows every host.
//
// A host is allowed when its name is an entry or lies below a suffix entry
// (".example.com"); it may then connect wherever it resolves. Any other
// host, an IP literal included, may connect only to addresses inside an IP
// or CIDR entry, which the fetcher checks on the address it actually
// dials, so DNS cannot lead it elsewhere.
type MailHostPolicy struct {
	names    []string // exact host names, lower case
	suffixes []string // ".example.com", lower case
	prefixes []netip.Prefix
}

// MailHostPolicy returns the parsed allow-list; entries Validate rejects
// are left out.
func (s Settings) MailHostPolicy() MailHostPolicy {
	var p MailHostPolicy
	for _, e := range s.AllowedMailHosts {
		kind, name, prefix := parseMailHostEntry(e)
		switch kind {
		case hostEntryName:
			p.names = append(p.names, name)
		case hostEntrySuffix:
			p.suffixes = append(p.suffixes, name)
		case hostEntryPrefix:
			p.prefixes = append(p.prefixes, prefix)
		}
	}
	return p
}

// Any reports whether every host is allowed (no list set).
func (p MailHostPolicy) Any() bool {
	return len(p.names) == 0 && len(p.suffixes) == 0 && len(p.prefixes) == 0
}

// AllowsName reports whether host is allowed without looking at the
// addresses it resolves to: the list is empty, host matches a name or
// suffix entry, or host is an IP address inside an IP entry.
func (p MailHostPolicy) AllowsName(host string) bool {
	if p.Any() {
		return true
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return p.AllowsAddr(a)
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	for _, n := range p.names {
		if h == n {
			return true
		}
	}
	for _, sfx := range p.suffixes {
		if strings.HasSuffix(h, sfx) {
			return true
		}
	}
	return false
}

// AllowsAddr reports whether a dialled address is inside an IP entry (or
// the list is empty).
func (p MailHostPolicy) AllowsAddr(a netip.Addr) bool {
	if p.Any() {
		return true
	}
	a = a.Unmap()
	for _, pr := range p.prefixes {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// AddrCheck returns what a fetcher connecting to host must ask about each
// address before dialling it, or nil when host is allowed by name (or the
// list is empty) and any address will do.
func (p MailHostPolicy) AddrCheck(host string) func(netip.Addr) error {
	if p.AllowsName(host) {
		return nil
	}
	return func(a netip.Addr) error {
		if p.AllowsAddr(a) {
			return nil
		}
		return fmt.Errorf("%w: %s is at %s", ErrMailHostNotAllowed, host, a.Unmap())
	}
}

// CheckMailHost refuses, as a "host: ..." error matching
// ErrMailHostNotAllowed, an account host that the list can never allow:
// neither a name entry matches it nor, for a host name, is there an IP
// entry its addresses could be in (those are checked when connecting).
func (s Settings) CheckMailHost(host string) error {
	p := s.MailHostPolicy()
	if p.AllowsName(host) {
		return nil
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil && len(p.prefixes) > 0 {
		return nil // a name: allowed if it resolves into an IP entry, checked at connect
	}
	return fmt.Errorf("host: %w: %q", ErrMailHostNotAllowed, host)
}

type hostEntryKind int

const (
	hostEntryInvalid hostEntryKind = iota
	hostEntryName
	hostEntrySuffix
	hostEntryPrefix
)

// parseMailHostEntry reads one allowed_mail_hosts entry: "10.0.0.0/8",
// "192.0.2.7" or "2001:db8::1" (one address), ".example.com" or
// "*.example.com" (names below example.com), or "mail.example.com".
func parseMailHostEntry(e string) (hostEntryKind, string, netip.Prefix) {
	e = strings.TrimSpace(e)
	if strings.Contains(e, "/") {
		pr, err := netip.ParsePrefix(e)
		if err != nil {
			return hostEntryInvalid, "", netip.Prefix{}
		}
		return hostEntryPrefix, "", pr.Masked()
	}
	if a, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
		a = a.Unmap()
		return hostEntryPrefix, "", netip.PrefixFrom(a, a.BitLen())
	}
	name := strings.TrimSuffix(strings.ToLower(e), ".")
	kind := hostEntryName
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		name, kind = rest, hostEntrySuffix
	} else if rest, ok := strings.CutPrefix(name, "."); ok {
		name, kind = rest, hostEntrySuffix
	}
	if !validHostName(name) {
		return hostEntryInvalid, "", netip.Prefix{}
	}
	if kind == hostEntrySuffix {
		name = "." + name
	}
	return kind, name, netip.Prefix{}
}

// validHostName accepts dot-separated labels of letters, digits, hyphens
// and underscores (RFC 1123, with underscores as some internal names have).
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// validateAllowedMailHosts names every entry that is not a host name,
// suffix, address or CIDR prefix.
func validateAllowedMailHosts(entries []string) []error {
	var errs []error
	for i, e := range entries {
		if kind, _, _ := parseMailHostEntry(e); kind == hostEntryInvalid {
			errs = append(errs, fmt.Errorf("allowed_mail_hosts[%d]: %q is not a host name, .suffix, IP address or CIDR prefix", i, e))
		}
	}
	return errs
}
