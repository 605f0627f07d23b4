// Package blobtest is the contract suite every blob store passes: the file
// store, the PostgreSQL store and the S3 store run the same tests, each on
// its real backend (a directory, a database, an S3 server process).
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
)

// Store is what the suite covers: the ingest port (PutNoSync, Sync, Open,
// WritePack, OpenPacked) and what operators and ledgerdesk blobs migrate
// use.
type Store interface {
	Put(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error)
	PutNoSync(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error)
	Sync() error
	Open(ref blobstore.Ref) (io.ReadCloser, error)
	Stat(ref blobstore.Ref) (blobstore.Info, error)
	Exists(ref blobstore.Ref) (bool, error)
	WritePack(ctx context.Context, blobs [][]byte) ([]blobstore.Packed, error)
	OpenPacked(p blobstore.Packed) (io.ReadCloser, error)
	List(ctx context.Context, fn func(blobstore.Info) error) error
}

// Backend is a fresh, empty store and the means to damage it.
type Backend struct {
	Store Store
	// Corrupt replaces the stored bytes of a loose blob with as many other
	// bytes, behind the store's back, as a failing disk or a tampered
	// object would.
	Corrupt func(tb testing.TB, ref blobstore.Ref)
}

// LargeSize is the size of the blob the streaming test writes: more than
// one PostgreSQL chunk (1 MiB) and more than one S3 multipart part (16 MiB).
const LargeSize = 20<<20 + 12345

// Run runs the contract suite; newBackend returns a fresh, empty store.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	t.Run("a blob written is read back under the SHA-256 of its bytes", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		content := "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
		ref := mustPut(t, s.Put, content)
		if want := blobstore.RefFromDigest(sha256.Sum256([]byte(content))); ref != want {
			t.Fatalf("Put() ref = %s, want %s", ref, want)
		}
		if got := readAll(t, s, ref); got != content {
			t.Fatalf("Open() = %q, want %q", got, content)
		}
		info, err := s.Stat(ref)
		if err != nil || info != (blobstore.Info{Ref: ref, Size: int64(len(content))}) {
			t.Fatalf("Stat() = %+v, %v, want size %d", info, err, len(content))
		}
		if ok, err := s.Exists(ref); !ok || err != nil {
			t.Fatalf("Exists() = %v, %v, want true, nil", ok, err)
		}
	})

	t.Run("PutNoSync and Sync store a blob too", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		ref := mustPut(t, s.PutNoSync, "batched mail")
		if err := s.Sync(); err != nil {
			t.Fatalf("Sync() error = %v", err)
		}
		if got := readAll(t, s, ref); got != "batched mail" {
			t.Fatalf("Open() = %q", got)
		}
	})

	t.Run("an empty blob is a blob", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		ref := mustPut(t, s.Put, "")
		if got := readAll(t, s, ref); got != "" {
			t.Fatalf("Open() = %q, want empty", got)
		}
	})

	t.Run("a missing blob is ErrNotFound and does not exist", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		ref := blobstore.RefFromDigest(sha256.Sum256([]byte("never stored")))
		if _, err := s.Open(ref); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Open() error = %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ref); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Stat() error = %v, want ErrNotFound", err)
		}
		if ok, err := s.Exists(ref); ok || err != nil {
			t.Errorf("Exists() = %v, %v, want false, nil", ok, err)
		}
	})

	t.Run("a malformed ref is refused", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		bad := blobstore.Ref("sha256:../../" + strings.Repeat("a", 58))
		if _, err := s.Open(bad); !errors.Is(err, blobstore.ErrInvalidRef) {
			t.Errorf("Open() error = %v, want ErrInvalidRef", err)
		}
		if _, err := s.Exists(bad); !errors.Is(err, blobstore.ErrInvalidRef) {
			t.Errorf("Exists() error = %v, want ErrInvalidRef", err)
		}
		if _, err := s.OpenPacked(blobstore.Packed{Ref: blobstore.RefFromDigest(sha256.Sum256(nil)), Pack: "../x"}); !errors.Is(err, blobstore.ErrInvalidRef) {
			t.Errorf("OpenPacked() error = %v, want ErrInvalidRef", err)
		}
	})

	t.Run("the same content stored twice is one blob", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		first := mustPut(t, s.Put, "same bytes")
		second := mustPut(t, s.PutNoSync, "same bytes")
		if first != second {
			t.Fatalf("Put() twice gave %s and %s", first, second)
		}
		mustPut(t, s.Put, "other bytes")
		if got := listRefs(t, s); len(got) != 2 || got[first] != 1 {
			t.Fatalf("List() = %v, want two blobs, %s once", got, first)
		}
	})

	t.Run("bytes changed behind the store's back fail the read with ErrCorrupt", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		content := strings.Repeat("a mail that rots on its disk\r\n", 100)
		ref := mustPut(t, b.Store.Put, content)
		b.Corrupt(t, ref)
		rc, err := b.Store.Open(ref)
		if err != nil {
			t.Fatalf("Open() error = %v", err)
		}
		defer func() { _ = rc.Close() }()
		if _, err := io.ReadAll(rc); !errors.Is(err, blobstore.ErrCorrupt) {
			t.Fatalf("reading a damaged blob: error = %v, want ErrCorrupt", err)
		}
	})

	t.Run("a large blob streams in and out intact", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		want := sha256.New()
		// A reader that is neither a Seeker nor a ReaderAt: the store must stream.
		ref, n, err := s.PutNoSync(context.Background(), io.TeeReader(onlyReader{io.LimitReader(newNoise(7), LargeSize)}, want))
		if err != nil || n != LargeSize {
			t.Fatalf("Put() = %s, %d, %v, want %d bytes", ref, n, err, LargeSize)
		}
		if exp := blobstore.RefFromDigest([sha256.Size]byte(want.Sum(nil))); ref != exp {
			t.Fatalf("Put() ref = %s, want %s", ref, exp)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		rc, err := s.Open(ref)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rc.Close() }()
		got := sha256.New()
		m, err := io.CopyBuffer(got, rc, make([]byte, 32<<10))
		if err != nil || m != LargeSize {
			t.Fatalf("read back %d bytes, error %v; want %d", m, err, LargeSize)
		}
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatal("read back other bytes than were written")
		}
	})

	t.Run("concurrent writers of the same blob all succeed and store it once", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		content := strings.Repeat("concurrent mail body\r\n", 150_000) // 3.3 MB: several chunks and parts
		const writers = 8
		refs := make([]blobstore.Ref, writers)
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() { refs[i], _, errs[i] = s.Put(context.Background(), strings.NewReader(content)) })
		}
		wg.Wait()
		for i := range writers {
			if errs[i] != nil || refs[i] != refs[0] {
				t.Fatalf("writer %d: Put() = %s, %v, want %s, nil", i, refs[i], errs[i], refs[0])
			}
		}
		if got := readAll(t, s, refs[0]); got != content {
			t.Fatalf("Open() gave %d bytes, want %d identical bytes", len(got), len(content))
		}
		if got := listRefs(t, s); len(got) != 1 {
			t.Fatalf("List() = %v, want the one blob", got)
		}
	})

	t.Run("a failed or cancelled write leaves no blob", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		boom := errors.New("connection reset")
		big := io.LimitReader(newNoise(3), 3<<20)
		if _, _, err := s.Put(context.Background(), io.MultiReader(big, errReader{boom})); !errors.Is(err, boom) {
			t.Fatalf("Put() error = %v, want it to wrap %v", err, boom)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := s.Put(ctx, io.LimitReader(newNoise(4), 3<<20)); err == nil {
			t.Fatal("Put() with a cancelled context succeeded")
		}
		if got := listRefs(t, s); len(got) != 0 {
			t.Fatalf("List() = %v, want nothing", got)
		}
	})

	t.Run("every blob of a pack is read back, by its location or by its ref", func(t *testing.T) {
		t.Parallel()
		s := newBackend(t).Store
		blobs := [][]byte{[]byte("first mail"), []byte(""), []byte("third mail, a little longer"), []byte("first mail")}
		packed, err := s.WritePack(context.Background(), blobs)
		if err != nil {
			t.Fatalf("WritePack() error = %v", err)
		}
		at := map[blobstore.Ref]blobstore.Packed{}
		for _, p := range packed {
			at[p.Ref] = p
		}
		for i, b := range blobs {
			ref := blobstore.RefFromDigest(sha256.Sum256(b))
			var rc io.ReadCloser
			if p, ok := at[ref]; ok {
				rc, err = s.OpenPacked(p)
			} else {
				rc, err = s.Open(ref) // a store that keeps small blobs loose records no location
			}
			if err != nil {
				t.Fatalf("blob %d: open: %v", i, err)
			}
			got, err := io.ReadAll(rc)
			_ = rc.Close()
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("blob %d = %q, %v, want %q", i, got, err, b)
			}
		}
		again, err := s.WritePack(context.Background(), blobs)
		if err != nil || len(again) != len(packed) {
			t.Fatalf("WritePack() again = %v, %v; want the same %d locations", again, err, len(packed))
		}
	})
}

func mustPut(tb testing.TB, put func(context.Context, io.Reader) (blobstore.Ref, int64, error), content string) blobstore.Ref {
	tb.Helper()
	ref, n, err := put(context.Background(), strings.NewReader(content))
	if err != nil {
		tb.Fatalf("Put() error = %v", err)
	}
	if n != int64(len(content)) {
		tb.Fatalf("Put() size = %d, want %d", n, len(content))
	}
	return ref
}

func readAll(tb testing.TB, s Store, ref blobstore.Ref) string {
	tb.Helper()
	rc, err := s.Open(ref)
	if err != nil {
		tb.Fatalf("Open(%s) error = %v", ref, err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		tb.Fatalf("read %s: %v", ref, err)
	}
	return string(b)
}

func listRefs(tb testing.TB, s Store) map[blobstore.Ref]int {
	tb.Helper()
	out := map[blobstore.Ref]int{}
	err := s.List(context.Background(), func(i blobstore.Info) error {
		out[i.Ref]++
		return nil
	})
	if err != nil {
		tb.Fatalf("List() error = %v", err)
	}
	return out
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// noise is an endless deterministic byte stream that does not compress.
type noise struct{ r *rand.ChaCha8 }

func newNoise(seed byte) noise {
	var s [32]byte
	s[0] = seed
	return noise{rand.NewChaCha8(s)}
}

func (n noise) Read(p []byte) (int, error) { return n.r.Read(p) }
