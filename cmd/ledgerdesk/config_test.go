package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRun_InvalidConfigurationExitsTwoNamingTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantVar string
		wantMsg string
	}{
		{name: "a database URL with another scheme", env: map[string]string{envDatabaseURL: "mysql://x@y/z", envSecretKey: strings.Repeat("ab", 32)},
			wantVar: envDatabaseURL, wantMsg: `scheme "mysql" is not supported`},
		{name: "PostgreSQL without a secret key", env: map[string]string{envDatabaseURL: "postgres://u@127.0.0.1/db"},
			wantVar: envSecretKey, wantMsg: "required with PostgreSQL"},
		{name: "a secret key of the wrong length", env: map[string]string{envSecretKey: "c2hvcnQ="},
			wantVar: envSecretKey, wantMsg: "decodes to 5 bytes, want 32"},
		{name: "an HTTP address without a port", env: map[string]string{envHTTPAddr: "localhost"},
			wantVar: envHTTPAddr, wantMsg: "is not host:port"},
		{name: "an HTTP port out of range", env: map[string]string{envHTTPAddr: "127.0.0.1:70000"},
			wantVar: envHTTPAddr, wantMsg: "from 0 to 65535"},
		{name: "an admin token too short to be safe", env: map[string]string{envAdminToken: "abc"},
			wantVar: envAdminToken, wantMsg: "too short"},
		{name: "an unknown log format", env: map[string]string{envLogFormat: "xml"},
			wantVar: envLogFormat, wantMsg: `"xml" is not one of`},
		{name: "a flag overrides the variable and is checked the same way", env: map[string]string{},
			args: []string{"--http-addr", "nonsense"}, wantVar: envHTTPAddr, wantMsg: "is not host:port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.env[envDataDir] = t.TempDir()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"serve"}, tc.args...), envOf(tc.env), &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("run() = %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantVar+": ") || !strings.Contains(stderr.String(), tc.wantMsg) {
				t.Errorf("stderr = %q, want it to name %s and say %q", stderr.String(), tc.wantVar, tc.wantMsg)
			}
		})
	}
}

func TestRun_DatabasePasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	env := map[string]string{envDatabaseURL: "postgres://user:hunter2-secret@127.0.0.1:1/db?sslmode=disable",
		envSecretKey: strings.Repeat("ab", 32), envDataDir: t.TempDir(), envHTTPAddr: "127.0.0.1:0"}
	code := run(context.Background(), []string{"serve"}, envOf(env), &stdout, &stderr)
	if code == exitOK {
		t.Fatalf("run() = 0 against a closed port, want a failure")
	}
	if strings.Contains(stderr.String()+stdout.String(), "hunter2-secret") {
		t.Errorf("output contains the database password:\n%s", stderr.String())
	}
}

func TestDecodeSecretKey(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		strings.Repeat("0f", 32),
		"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
		"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
	} {
		if k, err := decodeSecretKey(in); err != nil || len(k) != 32 {
			t.Errorf("decodeSecretKey(%q) = %d bytes, %v; want 32 bytes", in, len(k), err)
		}
	}
	if _, err := decodeSecretKey("not a key"); err == nil {
		t.Error("decodeSecretKey(\"not a key\") = nil error, want one")
	}
}

func TestRun_UnknownCommandAndHelp(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, envOf(nil), &out, &errb); code != exitUsage {
		t.Errorf("run(frobnicate) = %d, want %d", code, exitUsage)
	}
	for _, cmd := range []string{"serve", "migrate", "version", "bench"} {
		errb.Reset()
		if code := run(context.Background(), []string{cmd, "--help"}, envOf(nil), &out, &errb); code != exitOK {
			t.Errorf("run(%s --help) = %d, want 0", cmd, code)
		}
		if !strings.Contains(errb.String(), "Usage: ledgerdesk "+cmd) {
			t.Errorf("%s --help printed %q, want a usage line", cmd, errb.String())
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"version"}, envOf(nil), &out, &errb); code != exitOK || !strings.HasPrefix(out.String(), "ledgerdesk ") {
		t.Errorf("version printed %q (code %d)", out.String(), code)
	}
}
