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
	"sync"
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

	// syncMu lets one Sync run at a time; see Sync.
	syncMu sync.Mutex
	mu     sync.Mutex
	// pending holds the files and directories written by PutNoSync and not
	// yet made durable by Sync.
	pending map[string]struct{}
	// syncFS flushes the filesystem holding dir (syncFilesystem; tests
	// replace it).
	syncFS func(dir string) error
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
	return &FS{dir: abs, pending: map[string]struct{}{}, syncFS: syncFilesystem}, nil
}

// Dir returns the store's root directory.
func (s *FS) Dir() string { return s.dir }

// isBlobPath reports whether p is where the valid ref ref lives.
func (s *FS) isBlobPath(ref Ref, p string) bool {
	want, err := s.path(ref)
	return err == nil && want == p
}

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
// directories fsynced) when Put returns nil. Putting content that is already
// stored leaves the stored file as it is and returns the same Ref. ctx is
// checked between chunks, so a cancelled Put stops and leaves nothing
// behind.
func (s *FS) Put(ctx context.Context, r io.Reader) (Ref, int64, error) {
	return s.put(ctx, r, true)
}

// PutNoSync is Put without the fsyncs: the blob is complete and visible when
// it returns, but only durable after the next Sync. A caller that stores a
// batch of mails calls Sync once before committing the events that name
// them, so an event never refers to a blob that a power loss could take.
func (s *FS) PutNoSync(ctx context.Context, r io.Reader) (Ref, int64, error) {
	return s.put(ctx, r, false)
}

// Sync makes every blob written by PutNoSync before it was called durable,
// whoever wrote it. On Linux it is one syncfs(2) of the store's filesystem;
// elsewhere each pending file and directory is fsynced. After an error the
// pending blobs stay pending.
//
// Syncs run one at a time: a blob another caller's running sync has taken
// is durable only when that sync ends, so a concurrent Sync waits for it
// (and syncs again what it failed to) instead of returning at once because
// nothing seemed pending. Callers waiting together then share one sync.
func (s *FS) Sync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	pending := s.pending
	s.pending = map[string]struct{}{}
	s.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	err := s.syncFS(s.dir)
	if errors.Is(err, errSyncfsUnsupported) {
		err = nil
		for p := range pending {
			if e := syncPath(p); e != nil && !errors.Is(e, fs.ErrNotExist) {
				err = e
				break
			}
		}
	}
	if err != nil {
		s.mu.Lock()
		for p := range pending {
			s.pending[p] = struct{}{}
		}
		s.mu.Unlock()
		return fmt.Errorf("blobstore: sync: %w", err)
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

	if intact(final, n, sum) {
		// Same content already stored. A file that is not (torn by a crash
		// before its sync) is replaced below.
		_ = os.Remove(tmpName)
		committed = true
		return ref, n, nil
	}
	sub := filepath.Dir(final)
	_, statErr := os.Stat(sub)
	newDirs := statErr != nil
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return "", n, fmt.Errorf("blobstore: create %q: %w", sub, err)
	}
	// Rename is atomic; two concurrent Puts of the same content both
	// succeed and the later rename replaces an identical file.
	if err := os.Rename(tmpName, final); err != nil {
		return "", n, fmt.Errorf("blobstore: move blob into place: %w", err)
	}
	committed = true
	dirs := []string{sub}
	if newDirs {
		// The new aa/bb directories must survive too: sync their parents.
		dirs = append(dirs, filepath.Dir(sub), s.dir)
	}
	if !durable {
		s.mu.Lock()
		s.pending[final] = struct{}{}
		for _, d := range dirs {
			s.pending[d] = struct{}{}
		}
		s.mu.Unlock()
		return ref, n, nil
	}
	for _, d := range dirs {
		if err := syncPath(d); err != nil {
			return "", n, fmt.Errorf("blobstore: sync %q: %w", d, err)
		}
	}
	return ref, n, nil
}

// Open returns the blob's bytes; the caller closes the reader. A missing
// blob gives an error matching ErrNotFound; bytes that do not match the
// ref fail the last Read with ErrCorrupt (see Verified).
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
	return Verified(ref, f), nil
}

// List calls fn for every loose blob, in no particular order; blobs inside
// pack files are found through the locations their writer recorded.
func (s *FS) List(ctx context.Context, fn func(Info) error) error {
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p != s.dir && d.Name() == packsDir {
				return filepath.SkipDir
			}
			return nil
		}
		ref := Ref(refPrefix + d.Name())
		if !s.isBlobPath(ref, p) {
			return nil // a temporary file of a running Put, or not ours
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return fn(Info{Ref: ref, Size: fi.Size()})
	})
	if err != nil {
		return fmt.Errorf("blobstore: list %s: %w", s.dir, err)
	}
	return nil
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

// intact reports whether the file at p holds exactly size bytes with the
// digest sum. Checking the content, not just the name, matters after a
// crash: a blob written without sync may be short or hold zeroes.
func intact(p string, size int64, sum [sha256.Size]byte) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		return false
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	var got [sha256.Size]byte
	h.Sum(got[:0])
	return got == sum
}

// syncPath fsyncs a file or a directory (which makes renames in it durable).
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
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
