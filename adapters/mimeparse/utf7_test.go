package mimeparse

import (
	"testing"
	"unicode/utf8"
)

func TestDecodeUTF7(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"plain ASCII is itself", "Hi Mom -!", "Hi Mom -!", true},
		{"RFC 2152 example: A≢Α.", "A+ImIDkQ.", "A\u2262\u0391.", true},
		{"RFC 2152 example: Japanese", "+ZeVnLIqe-", "日本語", true},
		{"a hyphen ends the sequence and is absorbed", "Fr+APY-sche", "Frösche", true},
		{"any non-base64 character ends the sequence", "Fr+APY sche", "Fr\u00f6 sche", true},
		{"+- is a plus sign", "1 +- 1", "1 + 1", true},
		{"a surrogate pair is one character", "+2D3eAA-", "\U0001F600", true},
		{"a sequence may run to the end", "Fr+APY", "Fr\u00f6", true},
		{"an empty sequence", "a+ b", "a b", true},
		{"an unpaired surrogate", "+2D0-", "\uFFFD", false},
		{"leftover bits that are not padding", "+APZ-", "ö", false},
		{"8-bit bytes are not UTF-7", "Fr\xf6sche", "Fr\uFFFDsche", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := decodeUTF7([]byte(tc.in))
			if got != tc.want || ok != tc.ok {
				t.Errorf("decodeUTF7(%q) = %q, %v, want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzDecodeUTF7 checks that any input decodes to valid UTF-8 without
// panicking, and that valid UTF-7 made of ASCII characters round-trips.
func FuzzDecodeUTF7(f *testing.F) {
	for _, s := range []string{"Fr+APY-sche", "+ZeVnLIqe-", "+-", "+2D3eAA-", "+2D0-", "+", "a+b+c-", "\xff+AP"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, ok := decodeUTF7(b)
		if !utf8.ValidString(s) {
			t.Fatalf("decodeUTF7(%q) = %q, not valid UTF-8", b, s)
		}
		plain := true
		for _, c := range b {
			if c >= 0x80 || c == '+' {
				plain = false
			}
		}
		if plain && (!ok || s != string(b)) {
			t.Fatalf("decodeUTF7(%q) = %q, %v, want the input unchanged", b, s, ok)
		}
	})
}
