package mailsource

import (
	"errors"
	"strings"
	"testing"
)

func TestExcerpt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{name: "a mail server's reply stays as it is", in: "NO [AUTHENTICATIONFAILED] Authentication failed.", max: 200,
			want: "NO [AUTHENTICATIONFAILED] Authentication failed."},
		{name: "only the first line", in: "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n<html>", max: 200, want: "HTTP/1.1 400 Bad Request"},
		{name: "a bare LF ends the line too", in: "one\ntwo", max: 200, want: "one"},
		{name: "control bytes and invalid UTF-8 are dropped", in: "a\x00b\x1b[0mc\xffd\tе", max: 200, want: "ab[0mcdе"},
		{name: "cut to max characters, marked", in: strings.Repeat("ü", 10), max: 4, want: "üüüü…"},
		{name: "exactly max is not cut", in: "abcd", max: 4, want: "abcd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Excerpt(tc.in, tc.max); got != tc.want {
				t.Errorf("Excerpt(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

func TestServerReply_IsBounded(t *testing.T) {
	t.Parallel()
	err := &ServerError{Op: "greeting", Reply: "SSH-2.0-OpenSSH_9.2p1\r\n" + strings.Repeat("x", 1000), Err: errors.New("protocol violation")}
	if got := ServerReply(err); got != "SSH-2.0-OpenSSH_9.2p1" {
		t.Errorf("ServerReply() = %q, want the first line", got)
	}
	long := &ServerError{Op: "login", Reply: strings.Repeat("y", 1000), Err: errors.New("refused")}
	if got := ServerReply(long); len([]rune(got)) != MaxReplyLen+1 {
		t.Errorf("ServerReply() has %d characters, want %d and an ellipsis", len([]rune(got)), MaxReplyLen)
	}
	if got := long.Error(); len(got) > 2*MaxReplyLen+50 {
		t.Errorf("Error() has %d bytes, want the reply bounded", len(got))
	}
}
