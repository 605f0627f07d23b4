// Package saslclient holds the SASL client mechanisms that
// github.com/emersion/go-sasl lacks or gets wrong for the servers in the
// field, defined once for the IMAP, POP3 and SMTP adapters: XOAUTH2 (the
// OAuth2 login of Microsoft 365 and Google), CRAM-MD5 (RFC 2195) and a
// LOGIN that answers by the challenge's text.
//
// The clients speak decoded bytes, as go-sasl's interface does; base64 and
// the protocol's framing are the caller's job.
package saslclient

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // CRAM-MD5 is defined over HMAC-MD5 (RFC 2195)
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
)

// Mechanism names as servers advertise them (IMAP AUTH=, POP3 SASL, SMTP
// AUTH); go-sasl names PLAIN and LOGIN (sasl.Plain, sasl.Login).
const (
	XOAuth2 = "XOAUTH2"
	CRAMMD5 = "CRAM-MD5"
)

// ErrUnexpectedChallenge means the server sent a challenge the mechanism
// has no answer for; the exchange cannot go on.
var ErrUnexpectedChallenge = errors.New("saslclient: unexpected challenge")

// NewXOAUTH2Client returns the XOAUTH2 mechanism for username and an OAuth2
// access token. Its initial response is "user=U\x01auth=Bearer T\x01\x01".
// The only challenge servers send is a base64 JSON error description; Next
// answers it (and any other) with an empty response, so that the server
// ends the exchange with its tagged error, whose words the admin then sees.
// go-sasl has only the standard OAUTHBEARER (emersion/go-sasl#18).
func NewXOAUTH2Client(username, token string) sasl.Client {
	return &xoauth2Client{username: username, token: token}
}

// NewXOAUTH2ClientForIMAP is XOAUTH2 for go-imap's client, which cannot
// send the empty response the mechanism asks for (it encodes empty as "=",
// and Dovecot answers that with BAD "Invalid base64 data", hiding its NO).
// It answers the error challenge with a single 0x01, the dummy response
// RFC 7628 section 3.2.3 defines for OAUTHBEARER, which servers answer with
// their tagged NO.
func NewXOAUTH2ClientForIMAP(username, token string) sasl.Client {
	return &xoauth2Client{username: username, token: token, errorReply: []byte{0x01}}
}

type xoauth2Client struct {
	username, token string
	errorReply      []byte
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	return XOAuth2, []byte("user=" + c.username + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c *xoauth2Client) Next([]byte) ([]byte, error) {
	if c.errorReply != nil {
		return c.errorReply, nil
	}
	return []byte{}, nil
}

// NewCRAMMD5Client returns the CRAM-MD5 mechanism (RFC 2195): the password
// never crosses the wire, only the user name and HMAC-MD5(password,
// challenge) in lower-case hex. It has no initial response; a second
// challenge is ErrUnexpectedChallenge.
func NewCRAMMD5Client(username, password string) sasl.Client {
	return &cramMD5Client{username: username, password: password}
}

type cramMD5Client struct {
	username, password string
	answered           bool
}

func (c *cramMD5Client) Start() (string, []byte, error) {
	return CRAMMD5, nil, nil
}

func (c *cramMD5Client) Next(challenge []byte) ([]byte, error) {
	if c.answered {
		return nil, fmt.Errorf("%w: a second %s challenge", ErrUnexpectedChallenge, CRAMMD5)
	}
	c.answered = true
	mac := hmac.New(md5.New, []byte(c.password))
	mac.Write(challenge)
	return []byte(c.username + " " + hex.EncodeToString(mac.Sum(nil))), nil
}

// NewLoginClient returns the LOGIN mechanism (draft-murchison-sasl-login).
// go-sasl has one, but it sends the user name as an initial response and
// accepts only the exact challenge "Password:"; servers in the field ask
// "Username:" first, in any letter case, so this one sends no initial
// response and answers each challenge by its text. Any other challenge is
// ErrUnexpectedChallenge.
func NewLoginClient(username, password string) sasl.Client {
	return &loginClient{username: username, password: password}
}

type loginClient struct {
	username, password string
}

func (c *loginClient) Start() (string, []byte, error) {
	return sasl.Login, nil, nil
}

func (c *loginClient) Next(challenge []byte) ([]byte, error) {
	ch := strings.ToLower(strings.TrimSpace(string(challenge)))
	switch {
	case strings.HasPrefix(ch, "user"):
		return []byte(c.username), nil
	case strings.HasPrefix(ch, "pass"):
		return []byte(c.password), nil
	}
	return nil, fmt.Errorf("%w %q from %s", ErrUnexpectedChallenge, challenge, sasl.Login)
}

var (
	_ sasl.Client = (*xoauth2Client)(nil)
	_ sasl.Client = (*cramMD5Client)(nil)
	_ sasl.Client = (*loginClient)(nil)
)
