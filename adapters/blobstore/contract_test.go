package blobstore_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/blobtest"
)

func TestFS_Contract(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blobtest.Backend {
		s := mustNewFS(t)
		return blobtest.Backend{Store: s, Corrupt: func(tb testing.TB, ref blobstore.Ref) {
			tb.Helper()
			h := ref.Hex()
			p := filepath.Join(s.Dir(), h[:2], h[2:4], h)
			fi, err := os.Stat(p)
			if err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(p, make([]byte, fi.Size()), 0o600); err != nil {
				tb.Fatal(err)
			}
		}}
	})
}
