package blobbench_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

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

type store interface {
	PutNoSync(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error)
	Sync() error
	Open(ref blobstore.Ref) (io.ReadCloser, error)
	WritePack(ctx context.Context, blobs [][]byte) ([]blobstore.Packed, error)
	OpenPacked(p blobstore.Packed) (io.ReadCloser, error)
}

// batch is what the sink stores per commit of a typical poll: 500 small
// mails of 4 KB packed together and 2 large ones of 1 MB streamed loose.
func batch(n int) (small [][]byte, large [][]byte) {
	for i := range 500 {
		small = append(small, bytes.Repeat(fmt.Appendf(nil, "batch %d mail %d line\r\n", n, i), 4096/24))
	}
	for i := range 2 {
		large = append(large, bytes.Repeat(fmt.Appendf(nil, "batch %d large %d line\r\n", n, i), 1<<20/25))
	}
	return small, large
}

// BenchmarkStores writes b.N batches into each store and reads every mail
// back; it reports mails/s and MB/s, and for the other stores the ratio of
// their mails/s to the file store's (x-file, above 1 is faster).
func BenchmarkStores(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.NewPool(b)
	if err := migrations.ApplyPostgres(ctx, pool); err != nil {
		b.Fatal(err)
	}
	pg, err := pgstore.New(ctx, pool)
	if err != nil {
		b.Fatal(err)
	}
	fs, err := blobstore.NewFS(filepath.Join(b.TempDir(), "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	cfg := s3test.NewBucket(b)
	cfg.TempDir = b.TempDir()
	s3, err := s3store.New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	stores := []struct {
		name string
		s    store
	}{{"file", fs}, {"postgres", pg}, {"s3", s3}}
	var fileWrite, fileRead float64
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			var mails int
			var byteCount int64
			var writing, reading time.Duration
			// One batch first, not measured: SeaweedFS allocates its volumes
			// on the first writes (seconds), which no later batch pays.
			warm, _ := batch(0)
			if _, err := st.s.WritePack(ctx, warm); err != nil {
				b.Fatal(err)
			}
			n := 0
			for b.Loop() {
				n++
				small, large := batch(n)
				start := time.Now()
				packed, err := st.s.WritePack(ctx, small)
				if err != nil {
					b.Fatal(err)
				}
				var refs []blobstore.Ref
				for _, l := range large {
					ref, _, err := st.s.PutNoSync(ctx, bytes.NewReader(l))
					if err != nil {
						b.Fatal(err)
					}
					refs = append(refs, ref)
				}
				if err := st.s.Sync(); err != nil {
					b.Fatal(err)
				}
				writing += time.Since(start)
				start = time.Now()
				at := map[blobstore.Ref]blobstore.Packed{}
				for _, p := range packed {
					at[p.Ref] = p
				}
				for _, m := range small {
					ref := blobstore.RefFromDigest(sha256Sum(m))
					var rc io.ReadCloser
					if p, ok := at[ref]; ok {
						rc, err = st.s.OpenPacked(p)
					} else {
						rc, err = st.s.Open(ref)
					}
					readAll(b, rc, err)
					byteCount += int64(len(m))
				}
				for _, ref := range refs {
					rc, err := st.s.Open(ref)
					readAll(b, rc, err)
				}
				reading += time.Since(start)
				mails += len(small) + len(large)
				for _, l := range large {
					byteCount += int64(len(l))
				}
			}
			w := float64(mails) / writing.Seconds()
			r := float64(mails) / reading.Seconds()
			b.ReportMetric(w, "written-mails/s")
			b.ReportMetric(r, "read-mails/s")
			b.ReportMetric(float64(byteCount)/1e6/writing.Seconds(), "written-MB/s")
			if st.name == "file" {
				fileWrite, fileRead = w, r
			} else if fileWrite > 0 {
				b.ReportMetric(w/fileWrite, "write-x-file")
				b.ReportMetric(r/fileRead, "read-x-file")
			}
		})
	}
}

func readAll(tb testing.TB, rc io.ReadCloser, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	_ = rc.Close()
	if err != nil {
		tb.Fatal(err)
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
