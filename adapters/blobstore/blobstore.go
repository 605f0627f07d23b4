// Package blobstore keeps the raw bytes of every fetched mail, addressed by
// their SHA-256, so that any mail can be parsed again later. Events carry a
// Ref, never the bytes.
//
// FS stores blobs as files under one directory (by default below the data
// dir): <dir>/<aa>/<bb>/<hex>, where aa and bb are the first two byte pairs
// of the hex digest. Writes are streamed to a temporary file in <dir>, hashed
// on the way, fsynced and renamed into place, so a blob is either complete
// or absent, and storing the same content twice (even concurrently) is
// harmless.
package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotFound is matched (errors.Is) when a blob does not exist.
var ErrNotFound = errors.New("blobstore: blob not found")

// ErrInvalidRef is matched (errors.Is) by every error about a malformed Ref.
var ErrInvalidRef = errors.New("blobstore: invalid ref")

// refPrefix names the hash; it is part of the stored form so that another
// hash could be added without ambiguity.
const refPrefix = "sha256:"

// Ref names a blob by its content: "sha256:" followed by 64 lower-case hex
// digits. Refs are stored in events, so the format never changes.
type Ref string

// ParseRef validates s and returns it as a Ref. Only the exact form
// "sha256:<64 lower-case hex>" is accepted, so a Ref can never name a path
// outside the store.
func ParseRef(s string) (Ref, error) {
	hexPart, ok := strings.CutPrefix(s, refPrefix)
	if !ok {
		return "", fmt.Errorf("%w: %q does not start with %q", ErrInvalidRef, s, refPrefix)
	}
	if len(hexPart) != sha256.Size*2 {
		return "", fmt.Errorf("%w: %q has %d hex digits, want %d", ErrInvalidRef, s, len(hexPart), sha256.Size*2)
	}
	for i := 0; i < len(hexPart); i++ {
		c := hexPart[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("%w: %q holds a character that is not lower-case hex", ErrInvalidRef, s)
		}
	}
	return Ref(s), nil
}

// RefFromDigest returns the Ref of a SHA-256 digest.
func RefFromDigest(sum [sha256.Size]byte) Ref {
	return Ref(refPrefix + hex.EncodeToString(sum[:]))
}

// Hex returns the digest part of a valid Ref.
func (r Ref) Hex() string { return strings.TrimPrefix(string(r), refPrefix) }

// String returns the stored form.
func (r Ref) String() string { return string(r) }

// Info describes a stored blob.
type Info struct {
	Ref  Ref
	Size int64
}

// FS is a content-addressed blob store on a local filesystem. It is safe for
// concurrent use, also by several processes sharing the directory.
type FS struct {
	dir string
}

// NewFS opens (creating it if needed, mode 0700) the store rooted at dir.
func NewFS(dir string) (*FS, error) {
	if dir == "" {
		return nil, errors.New("blobstore: directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blobstore: resolve %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("blobstore: create %q: %w", abs, err)
	}
	return &FS{dir: abs}, nil
}

// Dir returns the store's root directory.
func (s *FS) Dir() string { return s.dir }

// path returns where a valid ref lives.
func (s *FS) path(ref Ref) (string, error) {
	if _, err := ParseRef(string(ref)); err != nil {
		return "", err
	}
	h := ref.Hex()
	return filepath.Join(s.dir, h[0:2], h[2:4], h), nil
}

// Put streams r into the store and returns its Ref and size. Memory use is
// one copy buffer, whatever the size. The blob is durable (file and
// directory fsynced) when Put returns nil. Putting content that is already
// stored leaves the stored file as it is and returns the same Ref. ctx is
// checked between chunks, so a cancelled Put stops and leaves nothing
// behind.
func (s *FS) Put(ctx context.Context, r io.Reader) (Ref, int64, error) {
	return s.put(ctx, r, true)
}

// PutNoSync is Put without the per-blob fsyncs: the blob is in place but
// may not survive a power loss until Sync returns. Importers that commit
// mails in batches call Sync once per batch, before the batch's events
// commit, instead of paying two fsyncs per mail.
func (s *FS) PutNoSync(ctx context.Context, r io.Reader) (Ref, int64, error) {
	return s.put(ctx, r, false)
}

// Sync makes every blob written so far durable: one syncfs(2) of the
// filesystem that holds the store.
func (s *FS) Sync() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("blobstore: sync: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("blobstore: sync %s: %w", s.dir, err)
	}
	return nil
}

func (s *FS) put(ctx context.Context, r io.Reader, durable bool) (Ref, int64, error) {
	tmp, err := os.CreateTemp(s.dir, ".put-*")
	if err != nil {
		return "", 0, fmt.Errorf("blobstore: create temporary file: %w", err)
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()

	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), &ctxReader{ctx: ctx, r: r})
	if err != nil {
		return "", n, fmt.Errorf("blobstore: write blob: %w", err)
	}
	if durable {
		if err := tmp.Sync(); err != nil {
			return "", n, fmt.Errorf("blobstore: sync blob: %w", err)
		}
	}
	if err := tmp.Close(); err != nil {
		return "", n, fmt.Errorf("blobstore: close blob: %w", err)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	ref := RefFromDigest(sum)
	final, _ := s.path(ref) // ref is well-formed by construction

	if _, err := os.Stat(final); err == nil {
		// Same content already stored: content addressing makes it equal.
		_ = os.Remove(tmpName)
		committed = true
		return ref, n, nil
	}
	sub := filepath.Dir(final)
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return "", n, fmt.Errorf("blobstore: create %q: %w", sub, err)
	}
	// Rename is atomic; two concurrent Puts of the same content both
	// succeed and the later rename replaces an identical file.
	if err := os.Rename(tmpName, final); err != nil {
		return "", n, fmt.Errorf("blobstore: move blob into place: %w", err)
	}
	committed = true
	if !durable {
		return ref, n, nil
	}
	if err := syncDir(sub); err != nil {
		return "", n, fmt.Errorf("blobstore: sync %q: %w", sub, err)
	}
	return ref, n, nil
}

// Open returns the blob's bytes; the caller closes the reader. A missing
// blob gives an error matching ErrNotFound.
func (s *FS) Open(ref Ref) (io.ReadCloser, error) {
	p, err := s.path(ref)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore: open %s: %w", ref, err)
	}
	return f, nil
}

// Stat describes a stored blob; a missing blob gives an error matching
// ErrNotFound.
func (s *FS) Stat(ref Ref) (Info, error) {
	p, err := s.path(ref)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	if err != nil {
		return Info{}, fmt.Errorf("blobstore: stat %s: %w", ref, err)
	}
	return Info{Ref: ref, Size: fi.Size()}, nil
}

// Exists reports whether the blob is stored.
func (s *FS) Exists(ref Ref) (bool, error) {
	_, err := s.Stat(ref)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
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
