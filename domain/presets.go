package domain

import (
	"fmt"
	"slices"
)

// MailServerPreset is where a provider's mailboxes are reached over one
// protocol, and which scopes its tokens need (RULES.md section 1: presets
// for Microsoft 365 and Google; LIBRARIES.md section 9 for the scopes).
type MailServerPreset struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Security string `json:"security"`
	// Auth is the SMTP authentication (outgoing accounts only).
	Auth string `json:"auth,omitempty"`
	// Scopes by flow (delegated, app_only); a flow the provider does not
	// offer for the protocol is absent.
	Scopes map[string][]string `json:"scopes"`
}

// Preset is one provider's servers by protocol (imap, pop3, smtp).
type Preset struct {
	Name      string                      `json:"name"`
	Title     string                      `json:"title"`
	Protocols map[string]MailServerPreset `json:"protocols"`
}

// Presets lists the providers an account may name instead of a server.
func Presets() []Preset {
	ms := OAuthConnection{Provider: OAuthProviderMicrosoft365, Flow: OAuthFlowDelegated}
	msApp := OAuthConnection{Provider: OAuthProviderMicrosoft365, Flow: OAuthFlowAppOnly}
	google := OAuthConnection{Provider: OAuthProviderGoogle, Flow: OAuthFlowDelegated}
	msScopes := func(protocol string) map[string][]string {
		return map[string][]string{OAuthFlowDelegated: ms.ScopesFor(protocol), OAuthFlowAppOnly: msApp.ScopesFor(protocol)}
	}
	googleScopes := func(protocol string) map[string][]string {
		return map[string][]string{OAuthFlowDelegated: google.ScopesFor(protocol)}
	}
	return []Preset{
		{Name: OAuthProviderMicrosoft365, Title: "Microsoft 365 (Exchange Online)", Protocols: map[string]MailServerPreset{
			ProtocolIMAP: {Host: "outlook.office365.com", Port: 993, Security: SecurityTLS, Scopes: msScopes(ProtocolIMAP)},
			ProtocolPOP3: {Host: "outlook.office365.com", Port: 995, Security: SecurityTLS, Scopes: msScopes(ProtocolPOP3)},
			ProtocolSMTP: {Host: "smtp.office365.com", Port: 587, Security: SecurityStartTLS, Auth: AuthXOAuth2, Scopes: msScopes(ProtocolSMTP)},
		}},
		{Name: OAuthProviderGoogle, Title: "Google Workspace (Gmail)", Protocols: map[string]MailServerPreset{
			ProtocolIMAP: {Host: "imap.gmail.com", Port: 993, Security: SecurityTLS, Scopes: googleScopes(ProtocolIMAP)},
			ProtocolPOP3: {Host: "pop.gmail.com", Port: 995, Security: SecurityTLS, Scopes: googleScopes(ProtocolPOP3)},
			ProtocolSMTP: {Host: "smtp.gmail.com", Port: 465, Security: SecurityTLS, Auth: AuthXOAuth2, Scopes: googleScopes(ProtocolSMTP)},
		}},
	}
}

// presetFor finds a preset's server for a protocol.
func presetFor(name, protocol string) (MailServerPreset, error) {
	i := slices.IndexFunc(Presets(), func(p Preset) bool { return p.Name == name })
	if i < 0 {
		return MailServerPreset{}, fmt.Errorf("preset: %q is not one of microsoft365, google", name)
	}
	s, ok := Presets()[i].Protocols[protocol]
	if !ok {
		return MailServerPreset{}, fmt.Errorf("preset: %s has no %q server", name, protocol)
	}
	return s, nil
}

// ApplyInboundPreset fills an account's server from a preset: host, port
// and security where the account leaves them empty (the protocol defaults
// to imap).
func ApplyInboundPreset(a InboundAccount, preset string) (InboundAccount, error) {
	if a.Protocol == "" {
		a.Protocol = ProtocolIMAP
	}
	s, err := presetFor(preset, a.Protocol)
	if err != nil {
		return a, err
	}
	if a.Host == "" {
		a.Host = s.Host
	}
	if a.Port == 0 {
		a.Port = s.Port
	}
	if a.Security == "" {
		a.Security = s.Security
	}
	return a, nil
}

// ApplyOutboundPreset fills an outgoing account's SMTP server and
// authentication from a preset where the account leaves them empty.
func ApplyOutboundPreset(a OutboundAccount, preset string) (OutboundAccount, error) {
	if a.Protocol == "" {
		a.Protocol = OutboundSMTP
	}
	if a.Protocol != OutboundSMTP {
		return a, fmt.Errorf("preset: fills an SMTP server; a %s account has none", a.Protocol)
	}
	s, err := presetFor(preset, ProtocolSMTP)
	if err != nil {
		return a, err
	}
	if a.Host == "" {
		a.Host = s.Host
	}
	if a.Port == 0 {
		a.Port = s.Port
	}
	if a.Security == "" {
		a.Security = s.Security
	}
	if a.Auth == "" {
		a.Auth = s.Auth
	}
	return a, nil
}
