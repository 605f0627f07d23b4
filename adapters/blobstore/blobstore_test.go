package blobstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
)

func mustNewFS(tb testing.TB) *blobstore.FS {
	tb.Helper()
	s, err := blobstore.NewFS(filepath.Join(tb.TempDir(), "blobs"))
	if err != nil {
		tb.Fatalf("NewFS() error = %v", err)
	}
	return s
}

func mustPut(tb testing.TB, s *blobstore.FS, content string) blobstore.Ref {
	tb.Helper()
	ref, n, err := s.Put(context.Background(), strings.NewReader(content))
	if err != nil {
		tb.Fatalf("Put() error = %v", err)
	}
	if n != int64(len(content)) {
		tb.Fatalf("Put() size = %d, want %d", n, len(content))
	}
	return ref
}

func readAll(tb testing.TB, s *blobstore.FS, ref blobstore.Ref) string {
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

func TestParseRef(t *testing.T) {
	t.Parallel()
	valid := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{name: "a well-formed ref is accepted", in: valid},
		{name: "an empty string is rejected", in: "", wantErr: true},
		{name: "a missing prefix is rejected", in: strings.Repeat("ab", 32), wantErr: true},
		{name: "another hash name is rejected", in: "md5:" + strings.Repeat("ab", 32), wantErr: true},
		{name: "a short digest is rejected", in: "sha256:abcd", wantErr: true},
		{name: "upper-case hex is rejected", in: "sha256:" + strings.Repeat("AB", 32), wantErr: true},
		{name: "path traversal is rejected", in: "sha256:../../../../etc/passwd" + strings.Repeat("a", 36), wantErr: true},
		{name: "a slash inside the digest is rejected", in: "sha256:" + strings.Repeat("a", 31) + "/" + strings.Repeat("a", 32), wantErr: true},
		{name: "a trailing newline is rejected", in: valid + "\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := blobstore.ParseRef(tc.in)
			if tc.wantErr {
				if !errors.Is(err, blobstore.ErrInvalidRef) {
					t.Fatalf("ParseRef(%q) error = %v, want ErrInvalidRef", tc.in, err)
				}
				return
			}
			if err != nil || string(got) != tc.in {
				t.Fatalf("ParseRef(%q) = %q, %v, want %q, nil", tc.in, got, err, tc.in)
			}
		})
	}
}

func TestFS_PutOpen(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	content := "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"

	ref := mustPut(t, s, content)

	sum := sha256.Sum256([]byte(content))
	if want := blobstore.RefFromDigest(sum); ref != want {
		t.Fatalf("Put() ref = %s, want %s", ref, want)
	}
	if got := readAll(t, s, ref); got != content {
		t.Fatalf("Open() content = %q, want %q", got, content)
	}
	h := ref.Hex()
	if _, err := os.Stat(filepath.Join(s.Dir(), h[:2], h[2:4], h)); err != nil {
		t.Fatalf("blob not at <dir>/aa/bb/<hex>: %v", err)
	}
	info, err := s.Stat(ref)
	if err != nil {
		t.Fatalf("Stat() error = %v", err)
	}
	if diff := cmp.Diff(blobstore.Info{Ref: ref, Size: int64(len(content))}, info); diff != "" {
		t.Fatalf("Stat() (-want +got):\n%s", diff)
	}
	ok, err := s.Exists(ref)
	if err != nil || !ok {
		t.Fatalf("Exists() = %v, %v, want true, nil", ok, err)
	}
}

func TestFS_PutTwiceIsIdempotent(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	first := mustPut(t, s, "same bytes")
	second := mustPut(t, s, "same bytes")
	if first != second {
		t.Fatalf("Put() twice gave %s and %s, want equal refs", first, second)
	}
	if got := readAll(t, s, first); got != "same bytes" {
		t.Fatalf("Open() = %q, want %q", got, "same bytes")
	}
	assertNoTempFiles(t, s)
}

func TestFS_ConcurrentPutOfSameContent(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	content := strings.Repeat("concurrent mail body\r\n", 5000)
	const workers = 16
	refs := make([]blobstore.Ref, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			refs[i], _, errs[i] = s.Put(context.Background(), strings.NewReader(content))
		})
	}
	wg.Wait()
	for i := range workers {
		if errs[i] != nil {
			t.Fatalf("Put() #%d error = %v", i, errs[i])
		}
		if refs[i] != refs[0] {
			t.Fatalf("Put() #%d ref = %s, want %s", i, refs[i], refs[0])
		}
	}
	if got := readAll(t, s, refs[0]); got != content {
		t.Fatalf("Open() returned %d bytes, want %d identical bytes", len(got), len(content))
	}
	assertNoTempFiles(t, s)
}

func TestFS_MissingBlob(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
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
}

func TestFS_RejectsMalformedRefs(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	bad := blobstore.Ref("sha256:../../" + strings.Repeat("a", 58))
	if _, err := s.Open(bad); !errors.Is(err, blobstore.ErrInvalidRef) {
		t.Errorf("Open() error = %v, want ErrInvalidRef", err)
	}
	if _, err := s.Stat(bad); !errors.Is(err, blobstore.ErrInvalidRef) {
		t.Errorf("Stat() error = %v, want ErrInvalidRef", err)
	}
	if _, err := s.Exists(bad); !errors.Is(err, blobstore.ErrInvalidRef) {
		t.Errorf("Exists() error = %v, want ErrInvalidRef", err)
	}
}

func TestFS_FailedPutLeavesNothing(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	boom := errors.New("connection reset")
	_, _, err := s.Put(context.Background(), io.MultiReader(strings.NewReader("partial"), errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("Put() error = %v, want it to wrap %v", err, boom)
	}
	assertNoTempFiles(t, s)
	assertNoBlobs(t, s)
}

func TestFS_CancelledPutLeavesNothing(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Put(ctx, bytes.NewReader(make([]byte, 1<<20)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put() error = %v, want context.Canceled", err)
	}
	assertNoTempFiles(t, s)
	assertNoBlobs(t, s)
}

func TestNewFS_EmptyDir(t *testing.T) {
	t.Parallel()
	if _, err := blobstore.NewFS(""); err == nil {
		t.Fatal("NewFS(\"\") error = nil, want an error")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func assertNoTempFiles(tb testing.TB, s *blobstore.FS) {
	tb.Helper()
	left, err := filepath.Glob(filepath.Join(s.Dir(), ".put-*"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(left) != 0 {
		tb.Fatalf("temporary files left behind: %v", left)
	}
}

func assertNoBlobs(tb testing.TB, s *blobstore.FS) {
	tb.Helper()
	var files []string
	err := filepath.WalkDir(s.Dir(), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) != 0 {
		tb.Fatalf("files left behind: %v", files)
	}
}

func TestFS_PutNoSyncThenSync(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	ref, n, err := s.PutNoSync(context.Background(), strings.NewReader("batched mail"))
	if err != nil || n != int64(len("batched mail")) {
		t.Fatalf("PutNoSync = %s, %d, %v", ref, n, err)
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	rc, err := s.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	got, _ := io.ReadAll(rc)
	if string(got) != "batched mail" {
		t.Errorf("Open(PutNoSync) = %q", got)
	}
}

func TestFS_PutReplacesABlobTornByACrash(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	content := "a mail whose earlier copy lost its tail in a power cut"
	ref := mustPut(t, s, content)
	h := ref.Hex()
	p := filepath.Join(s.Dir(), h[:2], h[2:4], h)
	if err := os.WriteFile(p, []byte(content[:10]), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, put := range []func(context.Context, io.Reader) (blobstore.Ref, int64, error){s.Put, s.PutNoSync} {
		got, _, err := put(context.Background(), strings.NewReader(content))
		if err != nil || got != ref {
			t.Fatalf("Put() = %s, %v, want %s, nil", got, err, ref)
		}
		if b := readAll(t, s, ref); b != content {
			t.Fatalf("Open() after Put() = %q, want %q", b, content)
		}
		// Same size, wrong bytes: what a crash can leave of an unsynced blob.
		if err := os.WriteFile(p, make([]byte, len(content)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFS_SyncWithNothingPending(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync() error = %v", err)
	}
	mustPut(t, s, "durable already")
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync() after Put() error = %v", err)
	}
}

func TestFS_WritePackAndOpenPacked(t *testing.T) {
	t.Parallel()
	s := mustNewFS(t)
	blobs := [][]byte{[]byte("first mail"), []byte(""), []byte("third mail, a little longer")}
	packed, err := s.WritePack(context.Background(), blobs)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range packed {
		if want := blobstore.RefFromDigest(sha256.Sum256(blobs[i])); p.Ref != want {
			t.Errorf("blob %d ref = %s, want %s", i, p.Ref, want)
		}
		rc, err := s.OpenPacked(p)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		_ = rc.Close()
		if !bytes.Equal(got, blobs[i]) {
			t.Errorf("OpenPacked(%d) = %q, want %q", i, got, blobs[i])
		}
	}
	again, err := s.WritePack(context.Background(), blobs)
	if err != nil || again[2] != packed[2] {
		t.Errorf("writing the same pack again = %+v, %v; want the same locations", again, err)
	}
	if _, err := s.OpenPacked(blobstore.Packed{Pack: "../../etc/passwd"}); !errors.Is(err, blobstore.ErrInvalidRef) {
		t.Errorf("OpenPacked with a path = %v, want ErrInvalidRef", err)
	}
}
