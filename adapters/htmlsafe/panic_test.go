package htmlsafe

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestBlockRemoteSrc_NilURL(t *testing.T) {
	t.Parallel()
	// bluemonday hands its src rewriter the result of url.Parse without
	// looking at the error, so the URL can be nil.
	blockRemoteSrc(nil)
}

func TestSanitize_APanicIsAnErrorAndTheNextMailIsSanitised(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer // written by the worker before Sanitize returns
	s := New(Options{Workers: 1, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	policy := s.sanitize
	s.sanitize = func(src string) string {
		if strings.Contains(src, "boom") {
			var u *struct{ Scheme string }
			return u.Scheme // the nil URL bluemonday can hand over
		}
		return policy(src)
	}

	_, err := s.Sanitize(context.Background(), "<p>boom</p>", "")
	var pe *PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Sanitize() error = %v, want a *PanicError", err)
	}
	if want := "htmlsafe: sanitiser panic: runtime error: invalid memory address or nil pointer dereference"; err.Error() != want {
		t.Errorf("Sanitize() error = %q, want %q", err, want)
	}
	if log := logs.String(); !strings.Contains(log, "sanitiser panicked") || !strings.Contains(log, "goroutine ") {
		t.Errorf("log lacks the panic and its stack:\n%s", log)
	}
	// The only worker slot was given back.
	res, err := s.Sanitize(context.Background(), "<p>next</p>", "")
	if err != nil || res.HTML != "<p>next</p>" {
		t.Errorf("next Sanitize() = %+v, %v; want the sanitised HTML", res, err)
	}
}
