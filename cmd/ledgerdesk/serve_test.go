package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// syncBuffer collects a running server's log safely across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runningServe is `ledgerdesk serve` started in-process on 127.0.0.1:0.
type runningServe struct {
	URL    string
	Log    *syncBuffer
	cancel context.CancelFunc
	done   chan int
}

func startServe(tb testing.TB, env map[string]string) *runningServe {
	tb.Helper()
	env[envHTTPAddr] = "127.0.0.1:0"
	env[envLogFormat] = "json"
	ctx, cancel := context.WithCancel(context.Background())
	s := &runningServe{Log: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	go func() { s.done <- run(ctx, []string{"serve"}, envOf(env), io.Discard, s.Log) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(s.Log.String()))
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				s.URL = "http://" + line.Addr
				tb.Cleanup(func() { s.Stop(tb) })
				return s
			}
		}
		select {
		case code := <-s.done:
			cancel()
			tb.Fatalf("serve exited with %d before listening; log:\n%s", code, s.Log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	tb.Fatalf("serve did not listen within 30s; log:\n%s", s.Log.String())
	return nil
}

// Stop shuts the server down as SIGTERM would and returns its exit code.
func (s *runningServe) Stop(tb testing.TB) int {
	tb.Helper()
	s.cancel()
	select {
	case code, ok := <-s.done:
		if ok {
			close(s.done)
			return code
		}
		return exitOK
	case <-time.After(30 * time.Second):
		tb.Fatalf("serve did not stop within 30s")
	}
	return -1
}

func getStatus(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestServe_EmbeddedStoreIsReadyWithNoDatabaseConfigured(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	srv := startServe(t, map[string]string{envDataDir: dir})

	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := getStatus(t, srv.URL+path); code != http.StatusOK {
			t.Errorf("GET %s = %d %s, want 200", path, code, body)
		}
	}
	if code, body := getStatus(t, srv.URL+"/nope"); code != http.StatusNotFound || !strings.Contains(body, `"status":404`) {
		t.Errorf("GET /nope = %d %s, want a 404 problem document", code, body)
	}
	fi, err := os.Stat(filepath.Join(dir, secretKeyFile))
	if err != nil {
		t.Fatalf("secret key file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("secret key file mode = %o, want 600", perm)
	}
	if !strings.Contains(srv.Log.String(), "generated a new secret key") {
		t.Errorf("log does not say a secret key was generated:\n%s", srv.Log.String())
	}
	if code := srv.Stop(t); code != exitOK {
		t.Errorf("serve exit code after shutdown = %d, want 0; log:\n%s", code, srv.Log.String())
	}
	if !strings.Contains(srv.Log.String(), `"msg":"stopped"`) {
		t.Errorf("log has no graceful stop:\n%s", srv.Log.String())
	}

	// A second start reuses the key and the migrated database.
	key1, _ := os.ReadFile(filepath.Join(dir, secretKeyFile))
	srv2 := startServe(t, map[string]string{envDataDir: dir})
	if code, _ := getStatus(t, srv2.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("second start: /readyz = %d, want 200", code)
	}
	key2, _ := os.ReadFile(filepath.Join(dir, secretKeyFile))
	if !bytes.Equal(key1, key2) {
		t.Error("the secret key changed between starts")
	}
}

func TestServe_PostgresStoreIsReady(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envDatabaseURL: url, envSecretKey: strings.Repeat("ab", 32)})
	if code, body := getStatus(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz = %d %s, want 200", code, body)
	}
	if strings.Contains(srv.Log.String(), strings.Repeat("ab", 32)) {
		t.Error("the secret key appears in the log")
	}
}

func TestMigrate_IsIdempotentAndRefusesANewerSchema(t *testing.T) {
	t.Parallel()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url := pgtest.NewDatabase(t)
		env := map[string]string{envDataDir: t.TempDir(), envDatabaseURL: url, envSecretKey: strings.Repeat("ab", 32)}
		migrateTwiceThenRefuseNewer(t, env, func(t *testing.T) {
			pool, err := pgxpool.New(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			if _, err := pool.Exec(context.Background(),
				`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 'x')`); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		env := map[string]string{envDataDir: dir}
		migrateTwiceThenRefuseNewer(t, env, func(t *testing.T) {
			db, err := embedded.OpenDB(filepath.Join(dir, "ledgerdesk.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.ExecContext(context.Background(),
				`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 'x')`); err != nil {
				t.Fatal(err)
			}
		})
	})
}

func migrateTwiceThenRefuseNewer(t *testing.T, env map[string]string, bump func(t *testing.T)) {
	t.Helper()
	for i := range 2 {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"migrate"}, envOf(env), &out, &errb); code != exitOK {
			t.Fatalf("migrate run %d = %d; stderr:\n%s", i+1, code, errb.String())
		}
		if !strings.Contains(out.String(), "at schema version") {
			t.Errorf("migrate printed %q", out.String())
		}
	}
	bump(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"migrate"}, envOf(env), &out, &errb)
	if code == exitOK || !strings.Contains(errb.String(), "newer than this binary") {
		t.Errorf("migrate on a newer schema = %d, stderr %q; want a failure saying the schema is newer", code, errb.String())
	}
}
