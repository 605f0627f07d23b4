package blobstore

import (
	"bufio"
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
)

// Packed locates a blob stored inside a pack file.
type Packed struct {
	Ref    Ref
	Pack   string // file name under <dir>/packs
	Offset int64
	Length int64
}

// packsDir holds the pack files.
const packsDir = "packs"

// WritePack stores many small blobs in one file: one create, one write and
// one fsync for all of them, where loose blobs cost a file, a rename and a
// directory entry each. Importing thousands of 4 KB mails is bound by
// exactly those per-file system calls. The pack is durable when WritePack
// returns; the caller records the returned locations (in the same database
// transaction as the events that name the refs) so OpenPacked can find
// them. A pack whose locations were never recorded is garbage, never a loss.
func (s *FS) WritePack(ctx context.Context, blobs [][]byte) ([]Packed, error) {
	if len(blobs) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.dir, packsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blobstore: create %q: %w", dir, err)
	}
	out := PlanPack(blobs)
	final := filepath.Join(dir, out[0].Pack)
	if _, err := os.Stat(final); err == nil {
		return out, nil // the same blobs in the same order: already stored
	}
	tmp, err := os.CreateTemp(dir, ".pack-*")
	if err != nil {
		return nil, fmt.Errorf("blobstore: create pack: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	for _, b := range blobs {
		if _, err := w.Write(b); err != nil {
			return nil, fmt.Errorf("blobstore: write pack: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("blobstore: write pack: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("blobstore: sync pack: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("blobstore: close pack: %w", err)
	}
	if err := os.Rename(tmpName, final); err != nil {
		return nil, fmt.Errorf("blobstore: move pack into place: %w", err)
	}
	ok = true
	if err := syncPath(dir); err != nil {
		return nil, fmt.Errorf("blobstore: sync %q: %w", dir, err)
	}
	return out, nil
}

// PlanPack lays blobs out one after the other in a pack and returns their
// locations. The pack's name is derived from the blobs' digests in order,
// so writing the same blobs again names the same pack, in any store.
func PlanPack(blobs [][]byte) []Packed {
	packHash := sha256.New()
	out := make([]Packed, len(blobs))
	var offset int64
	for i, b := range blobs {
		sum := sha256.Sum256(b)
		packHash.Write(sum[:])
		out[i] = Packed{Ref: RefFromDigest(sum), Offset: offset, Length: int64(len(b))}
		offset += int64(len(b))
	}
	name := "pack-" + hex.EncodeToString(packHash.Sum(nil)[:16])
	for i := range out {
		out[i].Pack = name
	}
	return out
}

// CheckPacked validates a recorded location before a store opens it: the
// pack name can never name a path or key outside the packs.
func CheckPacked(p Packed) error {
	if _, err := ParseRef(string(p.Ref)); err != nil {
		return err
	}
	if strings.ContainsAny(p.Pack, `/\`) || !strings.HasPrefix(p.Pack, "pack-") || p.Offset < 0 || p.Length < 0 {
		return fmt.Errorf("%w: bad pack location %+v", ErrInvalidRef, p)
	}
	return nil
}

// OpenPacked returns the bytes of a packed blob; they are checked against
// its ref as they are read (see Verified).
func (s *FS) OpenPacked(p Packed) (io.ReadCloser, error) {
	if err := CheckPacked(p); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, packsDir, p.Pack))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s in %s", ErrNotFound, p.Ref, p.Pack)
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore: open pack %s: %w", p.Pack, err)
	}
	return Verified(p.Ref, struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, p.Offset, p.Length), f}), nil
}
