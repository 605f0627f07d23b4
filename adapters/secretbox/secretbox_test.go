package secretbox

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestBox_SealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	box, err := New(key(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, pt := range []string{"hunter2", "pässwörd with UTF-8 ✓", strings.Repeat("x", 10000)} {
		sealed, err := box.Seal(pt)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(sealed, pt) {
			t.Fatalf("Seal(%q) leaks the plaintext: %q", pt, sealed)
		}
		got, err := box.Open(sealed)
		if err != nil || got != pt {
			t.Errorf("Open(Seal(%q)) = %q, %v", pt, got, err)
		}
	}
	if s, _ := box.Seal(""); s != "" {
		t.Errorf("Seal(\"\") = %q, want empty (no secret set)", s)
	}
	a, _ := box.Seal("same")
	b, _ := box.Seal("same")
	if a == b {
		t.Error("two seals of the same secret are identical: nonce reuse")
	}
}

func TestBox_RejectsWrongKeyAndTampering(t *testing.T) {
	t.Parallel()
	box1, _ := New(key(1))
	box2, _ := New(key(2))
	sealed, _ := box1.Seal("secret")
	if _, err := box2.Open(sealed); !errors.Is(err, ErrWrongKey) {
		t.Errorf("Open with another key: err = %v, want ErrWrongKey", err)
	}
	tampered := sealed[:len(sealed)-2] + "AA"
	if _, err := box1.Open(tampered); err == nil {
		t.Error("Open of a tampered value succeeded")
	}
	for _, bad := range []string{"plain", "v1:x", "v2:abcd:AAAA", "v1:" + box1.KeyID() + ":!!!"} {
		if _, err := box1.Open(bad); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", bad)
		}
	}
	if _, err := New([]byte("short")); err == nil {
		t.Error("New with a 5-byte key succeeded")
	}
}

func TestBox_RotationResealsOldValues(t *testing.T) {
	t.Parallel()
	oldBox, _ := New(key(1))
	sealed, _ := oldBox.Seal("mailbox password")
	rotated, err := New(key(2), key(1))
	if err != nil {
		t.Fatal(err)
	}
	if !rotated.NeedsReseal(sealed) {
		t.Fatal("NeedsReseal = false for a value sealed with the old key")
	}
	resealed, err := rotated.Reseal(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.NeedsReseal(resealed) {
		t.Error("NeedsReseal = true after Reseal")
	}
	newOnly, _ := New(key(2))
	if got, err := newOnly.Open(resealed); err != nil || got != "mailbox password" {
		t.Errorf("new key alone opens resealed value = %q, %v", got, err)
	}
}
