package smtpsend

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
)

// loginClient is SASL LOGIN (draft-murchison-sasl-login). go-sasl has one,
// but it sends the user name as an initial response and accepts only the
// exact challenge "Password:"; servers in the field also ask "Username:"
// first, in any letter case, so this one answers by the challenge's text.
type loginClient struct{ username, password string }

func (c *loginClient) Start() (string, []byte, error) { return "LOGIN", nil, nil }

func (c *loginClient) Next(challenge []byte) ([]byte, error) {
	ch := strings.ToLower(strings.TrimSpace(string(challenge)))
	switch {
	case strings.HasPrefix(ch, "user"):
		return []byte(c.username), nil
	case strings.HasPrefix(ch, "pass"):
		return []byte(c.password), nil
	}
	return nil, fmt.Errorf("sasl login: unexpected challenge %q", challenge)
}

// cramMD5Client is SASL CRAM-MD5 (RFC 2195), which go-sasl lacks: the
// password never crosses the wire, so it is allowed on connections without
// TLS.
type cramMD5Client struct {
	username, password string
	done               bool
}

func (c *cramMD5Client) Start() (string, []byte, error) { return "CRAM-MD5", nil, nil }

func (c *cramMD5Client) Next(challenge []byte) ([]byte, error) {
	if c.done {
		return nil, errors.New("sasl cram-md5: unexpected second challenge")
	}
	c.done = true
	mac := hmac.New(md5.New, []byte(c.password))
	mac.Write(challenge)
	return []byte(c.username + " " + hex.EncodeToString(mac.Sum(nil))), nil
}

// xoauth2Client is Google's and Microsoft's XOAUTH2, which go-sasl lacks
// (it has the standard OAUTHBEARER only). On failure the server sends a
// JSON error as a challenge; the client answers with an empty line and
// the server then fails the exchange with its error reply.
type xoauth2Client struct {
	username, token string
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + c.username + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) { return []byte{}, nil }

var (
	_ sasl.Client = (*loginClient)(nil)
	_ sasl.Client = (*cramMD5Client)(nil)
	_ sasl.Client = (*xoauth2Client)(nil)
)
