package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/pgstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/s3store"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/s3test"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

func TestMain(m *testing.M) {
	code := m.Run()
	s3test.Stop()
	os.Exit(code)
}

// s3Env is the configuration of a fresh bucket on the test's S3 server,
// the secret key given through a file as an operator would.
func s3Env(tb testing.TB) (map[string]string, s3store.Config) {
	tb.Helper()
	cfg := s3test.NewBucket(tb)
	secret := filepath.Join(tb.(interface{ TempDir() string }).TempDir(), "s3-secret")
	if err := os.WriteFile(secret, []byte(cfg.SecretKey+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return map[string]string{envS3Endpoint: cfg.Endpoint, envS3Bucket: cfg.Bucket, envS3Region: cfg.Region,
		envS3AccessKey: cfg.AccessKey, envS3SecretFile: secret, envS3PathStyle: "true"}, cfg
}

// migrateRun runs ledgerdesk blobs migrate and returns its exit code and
// standard output.
func migrateRun(tb testing.TB, env map[string]string, args ...string) (int, string) {
	tb.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"blobs", "migrate"}, args...), envOf(env), &out, &errOut)
	if code != exitOK {
		tb.Logf("blobs migrate %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out.String(), errOut.String())
	}
	return code, out.String()
}

var summaryLine = regexp.MustCompile(`(?m)^blobs migrate: (\w+) → (\w+): (\d+) blobs, (\d+) copied and verified \([\d.]+ MiB\), (\d+) already there and verified, (\d+) failed$`)

func summary(tb testing.TB, out string) (total, copied, present, failed int) {
	tb.Helper()
	m := summaryLine.FindStringSubmatch(out)
	if m == nil {
		tb.Fatalf("no summary line in the output:\n%s", out)
	}
	_, _ = fmt.Sscan(m[3]+" "+m[4]+" "+m[5]+" "+m[6], &total, &copied, &present, &failed)
	return total, copied, present, failed
}

// TestBlobsMigrate moves the blobs of a file store (loose blobs, a pack
// with its recorded locations) to PostgreSQL, then to S3, then back to a
// fresh file store, and checks each copy, the resumption of an
// interrupted run and the repair of a damaged copy.
func TestBlobsMigrate(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL and the S3 server")
	}
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.ApplyPostgres(ctx, pool); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	fsStore, err := blobstore.NewFS(filepath.Join(dataDir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	var want []blobstore.Ref
	for i := range 30 {
		content := strings.Repeat(fmt.Sprintf("loose mail %d\r\n", i), 1+i*i*40)
		if i == 7 {
			content = strings.Repeat("a large mail\r\n", 250_000) // 3.5 MB: several database chunks
		}
		ref, _, err := fsStore.Put(ctx, strings.NewReader(content))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ref)
	}
	var small [][]byte
	for i := range 20 {
		small = append(small, fmt.Appendf(nil, "From: x%d@example.com\r\n\r\nsmall packed mail %d\r\n", i, i))
	}
	packed, err := fsStore.WritePack(ctx, small)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packed {
		if _, err := pool.Exec(ctx, `INSERT INTO blob_packs (ref, pack, pack_offset, length) VALUES ($1, $2, $3, $4)`,
			string(p.Ref), p.Pack, p.Offset, p.Length); err != nil {
			t.Fatal(err)
		}
		want = append(want, p.Ref)
	}
	const total = 50

	env := map[string]string{envDatabaseURL: dbURL, envSecretKey: strings.Repeat("ab", 32), envDataDir: dataDir,
		envBlobStore: blobStoreFile, envLogFormat: "json"}
	s3vars, s3cfg := s3Env(t)
	for k, v := range s3vars {
		env[k] = v
	}
	pg, err := pgstore.New(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}

	// file → postgres: everything copied, the progress shown as plain lines.
	code, out := migrateRun(t, env, "--to", "postgres")
	if code != exitOK {
		t.Fatalf("file → postgres: exit %d", code)
	}
	if n, c, p, f := summary(t, out); n != total || c != total || p != 0 || f != 0 {
		t.Fatalf("file → postgres: %d blobs, %d copied, %d present, %d failed; want %d copied", n, c, p, f, total)
	}
	if !regexp.MustCompile(`(?m)^blobs migrate: \d+/50 blobs \(\d+%\)`).MatchString(out) {
		t.Errorf("no plain progress line in the output:\n%s", out)
	}
	assertAllIn(t, pg, want)

	// An interrupted run: five blobs never arrived. Running again copies
	// just those.
	if _, err := pool.Exec(ctx, `DELETE FROM blobs WHERE ref IN (SELECT ref FROM blobs ORDER BY ref LIMIT 5)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM blob_chunks WHERE ref NOT IN (SELECT ref FROM blobs)`); err != nil {
		t.Fatal(err)
	}
	code, out = migrateRun(t, env, "--to", "postgres")
	if n, c, p, f := summary(t, out); code != exitOK || n != total || c != 5 || p != total-5 || f != 0 {
		t.Fatalf("resumed run: exit %d, %d blobs, %d copied, %d present, %d failed; want 5 copied, 45 present", code, n, c, p, f)
	}
	assertAllIn(t, pg, want)

	// postgres → s3; the packed blobs are loose in the database now.
	env[envBlobStore] = blobStorePG
	code, out = migrateRun(t, env, "--to", "s3")
	if n, c, p, f := summary(t, out); code != exitOK || n != total+len(packed) || c != total || f != 0 {
		t.Fatalf("postgres → s3: exit %d, %d blobs, %d copied, %d present, %d failed; want %d copied", code, n, c, p, f, total)
	}
	s3s, err := s3store.New(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	assertAllIn(t, s3s, want)

	// A copy damaged in the bucket is found and copied again.
	damaged := want[3]
	client := s3test.Shared(t).Client(t)
	info, err := s3s.Stat(damaged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.PutObject(ctx, s3cfg.Bucket, "blobs/"+damaged.Hex(), bytes.NewReader(make([]byte, info.Size)), info.Size,
		minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	code, out = migrateRun(t, env, "--to", "s3")
	if _, c, _, f := summary(t, out); code != exitOK || c != 1 || f != 0 {
		t.Fatalf("run after damage: exit %d, %d copied, %d failed; want the damaged one copied", code, c, f)
	}
	assertAllIn(t, s3s, want)

	// s3 → a fresh file store.
	env[envBlobStore] = blobStoreS3
	env[envDataDir] = t.TempDir()
	code, out = migrateRun(t, env, "--to", "file")
	if _, c, _, f := summary(t, out); code != exitOK || c != total || f != 0 {
		t.Fatalf("s3 → file: exit %d, %d copied, %d failed; want %d copied", code, c, f, total)
	}
	back, err := blobstore.NewFS(filepath.Join(env[envDataDir], "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	assertAllIn(t, back, want)
}

// TestBlobsMigrate_DamagedSourceFails: a blob whose bytes no longer match
// its hash is not copied; the run names it and exits non-zero, and the
// other blobs are copied.
func TestBlobsMigrate_DamagedSourceFails(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	dataDir := t.TempDir()
	fsStore, err := blobstore.NewFS(filepath.Join(dataDir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	good := mustPutFS(t, fsStore, "a good mail")
	bad := mustPutFS(t, fsStore, "a mail that will rot")
	h := bad.Hex()
	if err := os.WriteFile(filepath.Join(fsStore.Dir(), h[:2], h[2:4], h), []byte("a mail that has rotted"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envDatabaseURL: dbURL, envSecretKey: strings.Repeat("ab", 32), envDataDir: dataDir, envLogFormat: "json"}
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"blobs", "migrate", "--to", "postgres"}, envOf(env), &out, &errOut)
	if code != exitFailed || !strings.Contains(errOut.String(), string(bad)) || !strings.Contains(errOut.String(), "does not match its hash") {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming %s as damaged", code, errOut.String(), bad)
	}
	if _, c, _, f := summary(t, out.String()); c != 1 || f != 1 {
		t.Fatalf("%d copied, %d failed; want 1 and 1", c, f)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	pg, err := pgstore.New(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	assertAllIn(t, pg, []blobstore.Ref{good})
	if ok, _ := pg.Exists(bad); ok {
		t.Errorf("the damaged blob %s was copied", bad)
	}
}

func TestBlobsMigrate_RefusesBadTargets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no target", map[string]string{}, nil, "--to"},
		{"the configured store itself", map[string]string{}, []string{"--to", "file"}, "already"},
		{"postgres without a database", map[string]string{}, []string{"--to", "postgres"}, envDatabaseURL},
		{"s3 without a bucket", map[string]string{envS3Endpoint: "http://127.0.0.1:1"}, []string{"--to", "s3"}, "bucket"},
		{"an unknown store", map[string]string{}, []string{"--to", "tape"}, "tape"},
		{"the S3 secret on the command line", map[string]string{}, []string{"--to", "s3", "--s3-secret-key=hunter2hunter2"}, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.env[envDataDir] = t.TempDir()
			var out, errOut bytes.Buffer
			code := run(context.Background(), append([]string{"blobs", "migrate"}, tc.args...), envOf(tc.env), &out, &errOut)
			if code != exitUsage || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d mentioning %q", code, errOut.String(), exitUsage, tc.want)
			}
			if strings.Contains(errOut.String(), "hunter2") {
				t.Errorf("the secret was echoed: %q", errOut.String())
			}
		})
	}
}

func mustPutFS(tb testing.TB, s *blobstore.FS, content string) blobstore.Ref {
	tb.Helper()
	ref, _, err := s.Put(context.Background(), strings.NewReader(content))
	if err != nil {
		tb.Fatal(err)
	}
	return ref
}

// assertAllIn reads every ref from s and checks its bytes by their hash.
func assertAllIn(tb testing.TB, s interface {
	Open(blobstore.Ref) (io.ReadCloser, error)
}, refs []blobstore.Ref,
) {
	tb.Helper()
	for _, ref := range refs {
		rc, err := s.Open(ref)
		if err != nil {
			tb.Fatalf("%s: %v", ref, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		_ = rc.Close()
		if err != nil || blobstore.RefFromDigest([sha256.Size]byte(h.Sum(nil))) != ref {
			tb.Fatalf("%s read back wrong: %v", ref, err)
		}
	}
}

// TestBlobConfig_S3SettingsReachTheStore: every S3 variable, and a flag
// over its variable, ends up in the configuration s3store.New is given
// (the server in the tests accepts any region, so only this shows that
// LEDGERDESK_S3_REGION is passed on).
func TestBlobConfig_S3SettingsReachTheStore(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cr3t-from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envBlobStore: "s3", envS3Endpoint: "https://s3.example.com", envS3Bucket: "desk-mail",
		envS3Region: "eu-central-1", envS3AccessKey: "AKIAEXAMPLE", envS3SecretFile: secret, envS3PathStyle: "true"}
	fs := newFlagSet("serve", "", io.Discard)
	cfg := bindConfig(fs, envOf(env), false)
	b := bindBlobConfig(fs, envOf(env))
	if err := parseFlags(fs, []string{"--s3-bucket", "other-bucket"}); err != nil {
		t.Fatal(err)
	}
	if err := b.validate(cfg, b.Kind); err != nil {
		t.Fatal(err)
	}
	want := s3store.Config{Endpoint: "https://s3.example.com", Bucket: "other-bucket", Region: "eu-central-1",
		AccessKey: "AKIAEXAMPLE", SecretKey: "s3cr3t-from-a-file", PathStyle: true}
	if b.Kind != "s3" || b.S3 != want {
		t.Fatalf("blob config = %s %+v, want s3 %+v", b.Kind, b.S3, want)
	}

	env[envS3SecretKey] = "also-in-the-environment"
	b = bindBlobConfig(newFlagSet("serve", "", io.Discard), envOf(env))
	if err := b.validate(cfg, b.Kind); err == nil || !strings.Contains(err.Error(), "give the secret one way") {
		t.Fatalf("secret in both the variable and a file: %v, want refused", err)
	}
}
