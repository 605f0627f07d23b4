package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/pgstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/s3store"
)

// The blob store's settings.
const (
	envBlobStore     = "LEDGERDESK_BLOB_STORE"
	envS3Endpoint    = "LEDGERDESK_S3_ENDPOINT"
	envS3Bucket      = "LEDGERDESK_S3_BUCKET"
	envS3Region      = "LEDGERDESK_S3_REGION"
	envS3AccessKey   = "LEDGERDESK_S3_ACCESS_KEY"
	envS3SecretKey   = "LEDGERDESK_S3_SECRET_KEY"
	envS3SecretFile  = envS3SecretKey + "_FILE"
	envS3PathStyle   = "LEDGERDESK_S3_PATH_STYLE"
	blobStoreFile    = "file"
	blobStorePG      = "postgres"
	blobStoreS3      = "s3"
	blobStoreChoices = blobStoreFile + ", " + blobStorePG + " or " + blobStoreS3
)

// blobConfig says where the raw mails live.
type blobConfig struct {
	Kind         string // file | postgres | s3
	S3           s3store.Config
	S3SecretFile string
	pathStyle    string // as given; parsed into S3.PathStyle by validate
}

// bindBlobConfig registers the blob store's flags. The S3 secret key has no
// flag, like every secret: the environment or a file.
func bindBlobConfig(fs *flag.FlagSet, getenv func(string) string) *blobConfig {
	b := &blobConfig{}
	b.S3.SecretKey = getenv(envS3SecretKey)
	def := func(name, fallback string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return fallback
	}
	fs.StringVar(&b.Kind, "blob-store", def(envBlobStore, blobStoreFile),
		"where raw mails are kept: file (under the data directory), postgres (in the database) or s3 ["+envBlobStore+"]")
	fs.StringVar(&b.S3.Endpoint, "s3-endpoint", def(envS3Endpoint, ""),
		"S3 endpoint URL, http(s)://host[:port] ["+envS3Endpoint+"]")
	fs.StringVar(&b.S3.Bucket, "s3-bucket", def(envS3Bucket, ""), "S3 bucket, which must exist ["+envS3Bucket+"]")
	fs.StringVar(&b.S3.Region, "s3-region", def(envS3Region, ""),
		"S3 region the requests are signed for; empty asks the server ["+envS3Region+"]")
	fs.StringVar(&b.S3.AccessKey, "s3-access-key", def(envS3AccessKey, ""), "S3 access key id ["+envS3AccessKey+"]")
	fs.StringVar(&b.S3SecretFile, "s3-secret-key-file", def(envS3SecretFile, ""),
		"file holding the S3 secret key, instead of "+envS3SecretKey+" ["+envS3SecretFile+"]")
	fs.StringVar(&b.pathStyle, "s3-path-style", def(envS3PathStyle, "false"),
		"true: the bucket in the URL path (MinIO, SeaweedFS); false: in the host name (Amazon S3) ["+envS3PathStyle+"]")
	return b
}

// validate checks the settings of the stores of the given kinds (the one
// in use, and for blobs migrate the destination) against the rest of the
// configuration, and reads the secret file.
func (b *blobConfig) validate(c *config, kinds ...string) error {
	var problems []error
	bad := func(env, format string, args ...any) {
		problems = append(problems, fmt.Errorf("%s: %s", env, fmt.Sprintf(format, args...)))
	}
	for _, kind := range kinds {
		b.validateKind(c, kind, bad)
	}
	if len(problems) > 0 {
		return &configError{problems: problems}
	}
	return nil
}

func (b *blobConfig) validateKind(c *config, kind string, bad func(env, format string, args ...any)) {
	switch kind {
	case blobStoreFile:
	case blobStorePG:
		if c.DatabaseURL == "" {
			bad(envBlobStore, "postgres keeps the blobs in the database of %s, which is not set", envDatabaseURL)
		}
	case blobStoreS3:
		if b.S3SecretFile != "" {
			if b.S3.SecretKey != "" {
				bad(envS3SecretFile, "set, and so is %s: give the secret one way", envS3SecretKey)
			} else if v, err := readSecretFile(b.S3SecretFile); err != nil {
				bad(envS3SecretFile, "%v", err)
			} else {
				b.S3.SecretKey = v
			}
		}
		ps, err := strconv.ParseBool(b.pathStyle)
		if err != nil {
			bad(envS3PathStyle, "%q is not true or false", b.pathStyle)
		}
		b.S3.PathStyle = ps
		if err := b.S3.Validate(); err != nil {
			bad(envBlobStore, "s3: %v (%s, %s, %s, %s)", err, envS3Endpoint, envS3Bucket, envS3AccessKey, envS3SecretKey)
		}
	default:
		bad(envBlobStore, "%q is not one of %s", kind, blobStoreChoices)
	}
}

// blobStore is what serve and blobs migrate use of any of the stores.
type blobStore interface {
	PutNoSync(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error)
	Put(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error)
	Sync() error
	Open(ref blobstore.Ref) (io.ReadCloser, error)
	WritePack(ctx context.Context, blobs [][]byte) ([]blobstore.Packed, error)
	OpenPacked(p blobstore.Packed) (io.ReadCloser, error)
	List(ctx context.Context, fn func(blobstore.Info) error) error
}

var (
	_ blobStore = (*blobstore.FS)(nil)
	_ blobStore = (*pgstore.Store)(nil)
	_ blobStore = (*s3store.Store)(nil)
)

// openBlobStore opens the store of the given kind with b's settings.
func openBlobStore(ctx context.Context, kind string, b *blobConfig, c *config, st *store) (blobStore, error) {
	switch kind {
	case blobStorePG:
		if st.pool == nil {
			return nil, fmt.Errorf("%s=postgres needs %s", envBlobStore, envDatabaseURL)
		}
		s, err := pgstore.New(ctx, st.pool)
		if err != nil {
			return nil, fmt.Errorf("blob store in the database (%s): %w", envBlobStore, err)
		}
		return s, nil
	case blobStoreS3:
		s, err := s3store.New(ctx, b.S3)
		if err != nil {
			return nil, fmt.Errorf("blob store %s (%s): %w", b.S3, envBlobStore, err)
		}
		return s, nil
	default:
		s, err := blobstore.NewFS(filepath.Join(c.DataDir, "blobs"))
		if err != nil {
			return nil, fmt.Errorf("blob store under %s (%s): %w", c.DataDir, envDataDir, err)
		}
		return s, nil
	}
}
