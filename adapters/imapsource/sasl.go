package imapsource

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // CRAM-MD5 is defined over HMAC-MD5 (RFC 2195)
	"encoding/hex"

	"github.com/emersion/go-sasl"
)

// xoauth2Client is the SASL XOAUTH2 mechanism that Microsoft 365 and Google
// require for OAuth2 logins; go-sasl has none (emersion/go-sasl#18).
type xoauth2Client struct {
	username, token string
}

var _ sasl.Client = (*xoauth2Client)(nil)

func (c *xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + c.username + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

// Next answers the only challenge XOAUTH2 servers send, a base64 JSON error
// description, with an empty response so that the server completes the
// command with its tagged NO (whose text the admin then sees).
func (c *xoauth2Client) Next([]byte) ([]byte, error) {
	return []byte{}, nil
}

// cramMD5Client is the SASL CRAM-MD5 mechanism (RFC 2195): the password
// never crosses the wire, only an HMAC-MD5 of the server's challenge.
type cramMD5Client struct {
	username, password string
}

var _ sasl.Client = (*cramMD5Client)(nil)

func (c *cramMD5Client) Start() (string, []byte, error) {
	return "CRAM-MD5", nil, nil
}

func (c *cramMD5Client) Next(challenge []byte) ([]byte, error) {
	mac := hmac.New(md5.New, []byte(c.password))
	mac.Write(challenge)
	return []byte(c.username + " " + hex.EncodeToString(mac.Sum(nil))), nil
}
