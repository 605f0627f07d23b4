package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// OpenBlob returns a stored mail's raw bytes by the ref its event names:
// a loose blob file, or its place in a pack file as recorded at commit. The
// API serves .eml downloads and re-parses through it.
func OpenBlob(ctx context.Context, store eventstore.Store, blobs Blobs, ref blobstore.Ref) (io.ReadCloser, error) {
	if _, err := blobstore.ParseRef(string(ref)); err != nil {
		return nil, err
	}
	rc, err := blobs.Open(ref)
	if err == nil || !errors.Is(err, blobstore.ErrNotFound) {
		return rc, err
	}
	p := blobstore.Packed{Ref: ref}
	err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		return tx.QueryRow(ctx, `SELECT pack, pack_offset, length FROM blob_packs WHERE ref = $1`, string(ref)).
			Scan(&p.Pack, &p.Offset, &p.Length)
	})
	if errors.Is(err, eventstore.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", blobstore.ErrNotFound, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("ingest: locate blob %s: %w", ref, err)
	}
	return blobs.OpenPacked(p)
}
