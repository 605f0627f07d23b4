package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		{name: "a stream heartbeat that is no duration", env: map[string]string{envStreamHeartbeat: "often"},
			wantVar: envStreamHeartbeat, wantMsg: `"often" is not a duration`},
		{name: "a stream heartbeat too short", args: []string{"--stream-heartbeat", "10ms"}, env: map[string]string{},
			wantVar: envStreamHeartbeat, wantMsg: "outside 1s to 5m"},
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

// Secrets given as flags show in ps and /proc/<pid>/cmdline to every user
// of the machine: they are refused, without echoing them, and pointed at
// the environment or a file.
func TestRun_SecretsAreRefusedAsFlags(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-hunter2-hunter2-hunter2"
	key := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "the secret key", args: []string{"serve", "--secret-key", key}, want: envSecretKey + "_FILE"},
		{name: "the secret key with =", args: []string{"serve", "-secret-key=" + key}, want: envSecretKey + "_FILE"},
		{name: "the admin token", args: []string{"serve", "--admin-token", secret}, want: envAdminToken + "_FILE"},
		{name: "the new key of a rotation", args: []string{"secrets", "rotate", "--new-key", key}, want: "--new-key-file"},
		{name: "a database URL with a password", args: []string{"serve", "--database-url", "postgres://u:" + secret + "@127.0.0.1:1/db"}, want: envDatabaseURL},
		{name: "a database URL with a password parameter", args: []string{"migrate", "--database-url", "postgres://u@127.0.0.1:1/db?password=" + secret}, want: envDatabaseURL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			// bounded: a serve that accepted the flag would run until stopped
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			code := run(ctx, tc.args, envOf(map[string]string{envDataDir: t.TempDir(), envHTTPAddr: "127.0.0.1:0"}), &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("run(%q) = %d, want %d; stderr:\n%s", tc.args, code, exitUsage, stderr.String())
			}
			out := stdout.String() + stderr.String()
			if !strings.Contains(out, tc.want) || !strings.Contains(out, "ps") {
				t.Errorf("run(%q) printed %q, want it to point to %s and say why", tc.args, out, tc.want)
			}
			if strings.Contains(out, secret) || strings.Contains(out, key) {
				t.Errorf("run(%q) printed the secret: %q", tc.args, out)
			}
		})
	}
}

func TestConfig_SecretsFromFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := strings.Repeat("cd", 32)
	token := "admin-token-from-a-file-0123456789"
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile, tokenFile := write("key", key+"\n"), write("token", token+"\r\n")
	load := func(env map[string]string, args ...string) (*config, error) {
		fs := newFlagSet("serve", "", io.Discard)
		cfg := bindConfig(fs, envOf(env), true)
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		return cfg, cfg.validate(true)
	}

	// the files' contents, without the line end, are the secrets
	cfg, err := load(map[string]string{envSecretKey + "_FILE": keyFile, envAdminToken + "_FILE": tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SecretKey != key || cfg.AdminToken != token {
		t.Errorf("secret key %q, admin token %q; want the files' contents", cfg.SecretKey, cfg.AdminToken)
	}
	// as flags the paths are no secret
	cfg, err = load(nil, "--secret-key-file", keyFile, "--admin-token-file", tokenFile)
	if err != nil || cfg.SecretKey != key || cfg.AdminToken != token {
		t.Errorf("from flags: %+v, %v", cfg, err)
	}
	// both ways at once, or a file that is not there, name the variable
	for _, env := range []map[string]string{
		{envSecretKey: key, envSecretKey + "_FILE": keyFile},
		{envSecretKey + "_FILE": filepath.Join(dir, "missing")},
		{envAdminToken + "_FILE": write("empty", "\n")},
	} {
		if _, err := load(env); err == nil {
			t.Errorf("load(%v) = nil error, want one", env)
		} else if !strings.Contains(err.Error(), "_FILE") {
			t.Errorf("load(%v) = %v, want it to name the _FILE variable", env, err)
		}
	}
}

func TestSecretsRotate_NewKeyFromAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newKey := strings.Repeat("ef", 32)
	keyFile := filepath.Join(t.TempDir(), "new.key")
	if err := os.WriteFile(keyFile, []byte(newKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"secrets", "rotate", "--new-key-file", keyFile}, envOf(map[string]string{envDataDir: dir}),
		&stdout, &stderr); code != exitOK {
		t.Fatalf("rotate --new-key-file = %d: %s", code, stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(dir, secretKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := decodeSecretKey(string(raw)); !bytes.Equal(got, bytes.Repeat([]byte{0xef}, 32)) {
		t.Errorf("key file holds %x, want the new key", got)
	}
}
