package s3store_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/blobtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/s3store"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/s3test"
)

func TestMain(m *testing.M) {
	code := m.Run()
	s3test.Stop()
	os.Exit(code)
}

func newStore(t *testing.T, cfg s3store.Config) *s3store.Store {
	t.Helper()
	s, err := s3store.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return s
}

func TestStore_Contract(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blobtest.Backend {
		cfg := s3test.NewBucket(t)
		cfg.TempDir = t.TempDir()
		s := newStore(t, cfg)
		return blobtest.Backend{Store: s, Corrupt: func(tb testing.TB, ref blobstore.Ref) {
			tb.Helper()
			c := s3test.Shared(tb).Client(tb)
			key := "blobs/" + ref.Hex()
			oi, err := c.StatObject(context.Background(), cfg.Bucket, key, minio.StatObjectOptions{})
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := c.PutObject(context.Background(), cfg.Bucket, key, bytes.NewReader(make([]byte, oi.Size)), oi.Size,
				minio.PutObjectOptions{}); err != nil {
				tb.Fatal(err)
			}
		}}
	})
}

func TestNew_RefusesWrongKeysAndMissingBuckets(t *testing.T) {
	t.Parallel()
	cfg := s3test.NewBucket(t)
	wrong := cfg
	wrong.SecretKey = "not-the-secret-" + strings.Repeat("x", 20)
	_, err := s3store.New(context.Background(), wrong)
	if err == nil {
		t.Fatal("New() with a wrong secret key succeeded")
	}
	if strings.Contains(err.Error(), wrong.SecretKey) {
		t.Errorf("New() error quotes the secret key: %v", err)
	}
	missing := cfg
	missing.Bucket = cfg.Bucket + "-missing"
	if _, err := s3store.New(context.Background(), missing); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("New() on a missing bucket = %v, want 'does not exist'", err)
	}
}

func TestNew_VirtualHostedStyleNeedsTheBucketInTheHostName(t *testing.T) {
	t.Parallel()
	cfg := s3test.NewBucket(t)
	cfg.PathStyle = false
	// The bucket would be asked of <bucket>.127.0.0.1, which is no host.
	if _, err := s3store.New(context.Background(), cfg); err == nil {
		t.Fatal("New() without path-style against a server on an IP address succeeded")
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	good := s3store.Config{Endpoint: "https://s3.example.com", Bucket: "mail-blobs", AccessKey: "AK", SecretKey: "SK"}
	tests := []struct {
		name   string
		change func(*s3store.Config)
		want   string
	}{
		{"a good configuration passes", func(*s3store.Config) {}, ""},
		{"an endpoint without scheme is refused", func(c *s3store.Config) { c.Endpoint = "s3.example.com" }, "not an http"},
		{"an endpoint with a path is refused", func(c *s3store.Config) { c.Endpoint = "https://h/bucket" }, "only scheme"},
		{"an upper-case bucket is refused", func(c *s3store.Config) { c.Bucket = "Mail" }, "bucket"},
		{"a secret key without access key is refused", func(c *s3store.Config) { c.AccessKey = "" }, "both"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := good
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	if s := good.String(); strings.Contains(s, "SK") || !strings.Contains(s, "secret_key=set") {
		t.Errorf("String() = %q, want the secret hidden", s)
	}
}
