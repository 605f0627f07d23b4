// Package secretbox encrypts secrets at rest (mailbox passwords, OAuth
// tokens, client secrets) with AES-256-GCM under LEDGERDESK_SECRET_KEY.
//
// A sealed secret is text: "v1:<key id>:<base64 nonce||ciphertext>". The key
// id is derived from the key, so after a rotation the box can tell which key
// sealed a value and re-seal old values with the new key.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrWrongKey means a value was sealed under a key this box does not hold.
var ErrWrongKey = errors.New("secretbox: sealed with another key")

// ErrMalformed means the value is not a sealed secret.
var ErrMalformed = errors.New("secretbox: malformed sealed value")

const prefix = "v1"

// Box seals with its current key and opens values sealed with the current
// key or any older key given to it (for rotation).
type Box struct {
	current keyed
	older   map[string]keyed
}

type keyed struct {
	id   string
	aead cipher.AEAD
}

// New returns a box that seals with key and also opens values sealed with
// the older keys. Every key must be 32 bytes.
func New(key []byte, older ...[]byte) (*Box, error) {
	cur, err := newKeyed(key)
	if err != nil {
		return nil, err
	}
	b := &Box{current: cur, older: map[string]keyed{}}
	for i, k := range older {
		o, err := newKeyed(k)
		if err != nil {
			return nil, fmt.Errorf("older key %d: %w", i+1, err)
		}
		b.older[o.id] = o
	}
	return b, nil
}

func newKeyed(key []byte) (keyed, error) {
	if len(key) != 32 {
		return keyed{}, fmt.Errorf("secretbox: key is %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return keyed{}, fmt.Errorf("secretbox: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return keyed{}, fmt.Errorf("secretbox: %w", err)
	}
	// The id is a hash of a hash of the key: it names the key, reveals nothing.
	h := sha256.Sum256([]byte("ledgerdesk secretbox key id\x00" + string(key)))
	return keyed{id: hex.EncodeToString(h[:4]), aead: aead}, nil
}

// KeyID names the current key.
func (b *Box) KeyID() string { return b.current.id }

// Seal encrypts plaintext. The empty string stays empty (no secret set).
func (b *Box) Seal(plaintext string) (string, error) {
	if plaintext == "" {
		return "", nil
	}
	nonce := make([]byte, b.current.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("secretbox: nonce: %w", err)
	}
	// The key id is bound as additional data so a value cannot be moved
	// under another key's label.
	ct := b.current.aead.Seal(nonce, nonce, []byte(plaintext), []byte(b.current.id))
	return prefix + ":" + b.current.id + ":" + base64.RawStdEncoding.EncodeToString(ct), nil
}

// Open decrypts a value made by Seal with the current or an older key.
func (b *Box) Open(sealed string) (string, error) {
	if sealed == "" {
		return "", nil
	}
	k, data, err := b.parse(sealed)
	if err != nil {
		return "", err
	}
	ns := k.aead.NonceSize()
	if len(data) < ns+k.aead.Overhead() {
		return "", ErrMalformed
	}
	pt, err := k.aead.Open(nil, data[:ns], data[ns:], []byte(k.id))
	if err != nil {
		return "", fmt.Errorf("secretbox: open: %w", ErrWrongKey)
	}
	return string(pt), nil
}

// NeedsReseal reports whether a sealed value was made with an older key.
func (b *Box) NeedsReseal(sealed string) bool {
	parts := strings.SplitN(sealed, ":", 3)
	return sealed != "" && len(parts) == 3 && parts[1] != b.current.id
}

// Reseal opens a value and seals it again under the current key.
func (b *Box) Reseal(sealed string) (string, error) {
	pt, err := b.Open(sealed)
	if err != nil {
		return "", err
	}
	return b.Seal(pt)
}

func (b *Box) parse(sealed string) (keyed, []byte, error) {
	parts := strings.SplitN(sealed, ":", 3)
	if len(parts) != 3 || parts[0] != prefix {
		return keyed{}, nil, ErrMalformed
	}
	k := b.current
	if parts[1] != k.id {
		o, ok := b.older[parts[1]]
		if !ok {
			return keyed{}, nil, fmt.Errorf("%w (key id %s)", ErrWrongKey, parts[1])
		}
		k = o
	}
	data, err := base64.RawStdEncoding.DecodeString(parts[2])
	if err != nil {
		return keyed{}, nil, ErrMalformed
	}
	return k, data, nil
}
