// Package s3store keeps mail blobs in a bucket of any S3-compatible object
// store (Amazon S3, MinIO, SeaweedFS, Ceph RGW, ...), through minio-go, so
// that every ledgerdesk instance reaches every mail.
//
// Layout in the bucket: blobs/<64 hex digits> for each loose blob and
// packs/pack-<32 hex digits> for the small mails of one batch, found
// through the locations recorded in blob_packs (one PUT per batch instead
// of one per mail). An object appears whole or not at all when its PUT
// returns, so Sync has nothing to do.
package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
)

// Config says where the bucket is and how to sign in.
type Config struct {
	// Endpoint is the store's base URL, http:// or https://host[:port].
	Endpoint string
	Bucket   string
	// Region signs the requests; empty asks the store for the bucket's.
	Region    string
	AccessKey string
	SecretKey string // never printed: see String
	// PathStyle puts the bucket in the path (https://host/bucket/key), as
	// MinIO and SeaweedFS want; false puts it in the host name
	// (https://bucket.host/key), as Amazon S3 prefers.
	PathStyle bool
	// TempDir holds a large blob while it is hashed, before its upload
	// (its key is its hash); empty means the system's temporary directory.
	TempDir string
}

// String describes the configuration without the secret key.
func (c Config) String() string {
	secret := "unset"
	if c.SecretKey != "" {
		secret = "set"
	}
	return fmt.Sprintf("s3 endpoint=%s bucket=%s region=%q access_key=%q secret_key=%s path_style=%t",
		c.Endpoint, c.Bucket, c.Region, c.AccessKey, secret, c.PathStyle)
}

// Validate joins every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.Endpoint)
	switch {
	case c.Endpoint == "":
		errs = append(errs, errors.New("endpoint is empty"))
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, fmt.Errorf("endpoint %q is not an http:// or https:// URL with a host", c.Endpoint))
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
		errs = append(errs, fmt.Errorf("endpoint %q must be only scheme, host and port", c.Endpoint))
	}
	if l := len(c.Bucket); l < 3 || l > 63 || strings.Trim(c.Bucket, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
		errs = append(errs, fmt.Errorf("bucket %q is not an S3 bucket name (3 to 63 of a-z, 0-9, '.', '-')", c.Bucket))
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		errs = append(errs, errors.New("give both the access key and the secret key, or neither (anonymous access)"))
	}
	return errors.Join(errs...)
}

// Store is a content-addressed blob store in an S3 bucket. It is safe for
// concurrent use, also by several processes on the same bucket.
type Store struct {
	client  *minio.Client
	bucket  string
	tempDir string
}

const (
	blobPrefix = "blobs/"
	packPrefix = "packs/"
	// inMemory is the size up to which a blob is held in memory before its
	// upload; a larger one is spooled to a temporary file.
	inMemory = 1 << 20
)

// New connects to the store and checks that the bucket exists (ledgerdesk
// does not create it: its owner decides where and how it lives).
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("s3store: %w", err)
	}
	u, _ := url.Parse(cfg.Endpoint) // valid: checked by Validate
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	lookup := minio.BucketLookupDNS
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(u.Host, &minio.Options{Creds: creds, Secure: u.Scheme == "https", Region: cfg.Region,
		BucketLookup: lookup})
	if err != nil {
		return nil, fmt.Errorf("s3store: client for %s: %w", u.Host, err)
	}
	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3store: reach bucket %s at %s: %w", cfg.Bucket, u.Host, err)
	}
	if !ok {
		return nil, fmt.Errorf("s3store: bucket %s does not exist at %s; create it first", cfg.Bucket, u.Host)
	}
	return &Store{client: client, bucket: cfg.Bucket, tempDir: cfg.TempDir}, nil
}

func blobKey(ref blobstore.Ref) string { return blobPrefix + ref.Hex() }

// Put hashes r and uploads it under its ref, holding at most 1 MiB in
// memory (a larger blob waits in a temporary file, since its key is known
// only at the end). The object is stored when Put returns nil; storing the
// same content again uploads the same bytes over it, which also repairs an
// object damaged in the store.
func (s *Store) Put(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error) {
	r = &ctxReader{ctx: ctx, r: r}
	head, err := io.ReadAll(io.LimitReader(r, inMemory+1))
	if err != nil {
		return "", int64(len(head)), fmt.Errorf("s3store: read blob: %w", err)
	}
	if len(head) <= inMemory {
		ref := blobstore.RefFromDigest(sha256.Sum256(head))
		if err := s.upload(ctx, blobKey(ref), bytes.NewReader(head), int64(len(head))); err != nil {
			return "", int64(len(head)), err
		}
		return ref, int64(len(head)), nil
	}
	tmp, err := os.CreateTemp(s.tempDir, "ledgerdesk-s3-*")
	if err != nil {
		return "", 0, fmt.Errorf("s3store: spool blob: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.MultiReader(bytes.NewReader(head), r))
	if err != nil {
		return "", n, fmt.Errorf("s3store: read blob: %w", err)
	}
	ref := blobstore.RefFromDigest([sha256.Size]byte(h.Sum(nil)))
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", n, fmt.Errorf("s3store: rewind spooled blob: %w", err)
	}
	if err := s.upload(ctx, blobKey(ref), tmp, n); err != nil {
		return "", n, err
	}
	return ref, n, nil
}

func (s *Store) upload(ctx context.Context, key string, r io.Reader, size int64) error {
	if _, err := s.client.PutObject(ctx, s.bucket, key, r, size,
		minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
		return fmt.Errorf("s3store: upload %s: %w", key, err)
	}
	return nil
}

// PutNoSync is Put: an uploaded object is durable.
func (s *Store) PutNoSync(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error) {
	return s.Put(ctx, r)
}

// Sync does nothing: every Put has been acknowledged by the store.
func (s *Store) Sync() error { return nil }

// WritePack uploads the blobs one after the other as one object and returns
// their locations, which the caller records (blob_packs) in the transaction
// of the events naming them. The same blobs in the same order name the same
// pack, which is then not uploaded again.
func (s *Store) WritePack(ctx context.Context, blobs [][]byte) ([]blobstore.Packed, error) {
	if len(blobs) == 0 {
		return nil, nil
	}
	out := blobstore.PlanPack(blobs)
	key := packPrefix + out[0].Pack
	if _, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{}); err == nil {
		return out, nil
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("s3store: look for %s: %w", key, err)
	}
	// One buffer (at most the sink's staged bytes, 32 MiB): a seekable body
	// is signed in one pass, where a stream would be sent in signed chunks.
	body := bytes.Join(blobs, nil)
	if err := s.upload(ctx, key, bytes.NewReader(body), int64(len(body))); err != nil {
		return nil, err
	}
	return out, nil
}

// OpenPacked reads one blob of a pack with a ranged GET, checked against
// its ref as it is read.
func (s *Store) OpenPacked(p blobstore.Packed) (io.ReadCloser, error) {
	if err := blobstore.CheckPacked(p); err != nil {
		return nil, err
	}
	key := packPrefix + p.Pack
	if p.Length == 0 {
		if _, err := s.client.StatObject(context.Background(), s.bucket, key, minio.StatObjectOptions{}); err != nil {
			return nil, s.openError(key, p.Ref, err)
		}
		return blobstore.Verified(p.Ref, io.NopCloser(bytes.NewReader(nil))), nil
	}
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(p.Offset, p.Offset+p.Length-1); err != nil {
		return nil, fmt.Errorf("%w: bad pack location %+v", blobstore.ErrInvalidRef, p)
	}
	return s.get(key, p.Ref, opts)
}

// Open returns the blob's bytes, streamed from the store and checked
// against the ref as they are read. A missing blob gives an error matching
// blobstore.ErrNotFound.
func (s *Store) Open(ref blobstore.Ref) (io.ReadCloser, error) {
	if _, err := blobstore.ParseRef(string(ref)); err != nil {
		return nil, err
	}
	return s.get(blobKey(ref), ref, minio.GetObjectOptions{})
}

func (s *Store) get(key string, ref blobstore.Ref, opts minio.GetObjectOptions) (io.ReadCloser, error) {
	obj, err := s.client.GetObject(context.Background(), s.bucket, key, opts)
	if err != nil {
		return nil, s.openError(key, ref, err)
	}
	// The GET is sent by the first call on obj: Stat turns a missing
	// object into an error here rather than at the first Read.
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		return nil, s.openError(key, ref, err)
	}
	return blobstore.Verified(ref, obj), nil
}

func (s *Store) openError(key string, ref blobstore.Ref, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%w: %s (%s)", blobstore.ErrNotFound, ref, key)
	}
	return fmt.Errorf("s3store: open %s: %w", key, err)
}

// Stat describes a stored loose blob; a missing one gives an error
// matching blobstore.ErrNotFound.
func (s *Store) Stat(ref blobstore.Ref) (blobstore.Info, error) {
	if _, err := blobstore.ParseRef(string(ref)); err != nil {
		return blobstore.Info{}, err
	}
	oi, err := s.client.StatObject(context.Background(), s.bucket, blobKey(ref), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return blobstore.Info{}, fmt.Errorf("%w: %s", blobstore.ErrNotFound, ref)
		}
		return blobstore.Info{}, fmt.Errorf("s3store: stat %s: %w", ref, err)
	}
	return blobstore.Info{Ref: ref, Size: oi.Size}, nil
}

// Exists reports whether the loose blob is stored.
func (s *Store) Exists(ref blobstore.Ref) (bool, error) {
	_, err := s.Stat(ref)
	if errors.Is(err, blobstore.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// List calls fn for every loose blob, in key order.
func (s *Store) List(ctx context.Context, fn func(blobstore.Info) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine when fn fails
	for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: blobPrefix, Recursive: true}) {
		if oi.Err != nil {
			return fmt.Errorf("s3store: list %s: %w", s.bucket, oi.Err)
		}
		ref, err := blobstore.ParseRef("sha256:" + strings.TrimPrefix(oi.Key, blobPrefix))
		if err != nil {
			continue // not an object of ours
		}
		if err := fn(blobstore.Info{Ref: ref, Size: oi.Size}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func isNotFound(err error) bool {
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey, minio.NoSuchBucket, "NotFound":
		return true
	}
	return false
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
