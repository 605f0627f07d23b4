// Package pgstore keeps mail blobs in PostgreSQL, in the database the
// events are in (tables blobs and blob_chunks, migration 0017), so that
// every ledgerdesk instance on that database reaches every mail without a
// shared file system.
//
// A blob is written in its own transaction, not in the one of the events
// that name it: a large mail is streamed in while it is downloaded, long
// before its batch commits, and the small mails of a batch are written
// while the batch's events are appended, as for the other stores. The sink
// commits the events only after the blob writes returned, so an event never
// names a missing blob; a crash in between leaves a blob no event names,
// which a later fetch of the same mail finds already stored.
package pgstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
)

// ChunkSize is the most bytes one blob_chunks row holds: what a Put or a
// reader holds in memory at a time.
const ChunkSize = 1 << 20

// packBatch bounds the rows of one statement of WritePack.
const packBatch = 100

// Store is a content-addressed blob store in PostgreSQL. It is safe for
// concurrent use, also by several processes on the same database.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a store on pool's database, which must have the migrations
// applied (ledgerdesk migrate, or serve at start).
func New(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgstore: no connection pool")
	}
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('blob_chunks') IS NOT NULL`).Scan(&ok); err != nil {
		return nil, fmt.Errorf("pgstore: look for the blob tables: %w", err)
	}
	if !ok {
		return nil, errors.New("pgstore: the database has no blob tables; apply the migrations first (ledgerdesk migrate)")
	}
	return &Store{pool: pool}, nil
}

// Put streams r into the database and returns its Ref and size. It holds
// one chunk in memory at a time. The blob is committed (durable) when Put
// returns nil; storing content that is already stored changes nothing.
func (s *Store) Put(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error) {
	buf := make([]byte, ChunkSize)
	n, err := io.ReadFull(r, buf)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// One chunk: the ref is known before anything is written.
		data := buf[:n]
		ref := blobstore.RefFromDigest(sha256.Sum256(data))
		if err := s.insertWhole(ctx, [][]byte{data}, []blobstore.Ref{ref}); err != nil {
			return "", int64(n), err
		}
		return ref, int64(n), nil
	}
	if err != nil {
		return "", int64(n), fmt.Errorf("pgstore: read blob: %w", err)
	}
	return s.putStream(ctx, buf, r)
}

// PutNoSync is Put: a blob is durable once its transaction commits, so
// there is nothing left for Sync to do.
func (s *Store) PutNoSync(ctx context.Context, r io.Reader) (blobstore.Ref, int64, error) {
	return s.Put(ctx, r)
}

// Sync does nothing: every Put has committed.
func (s *Store) Sync() error { return nil }

// putStream writes a blob of more than one chunk: the chunks go in under a
// placeholder ref while they are read and hashed; at the end one
// transaction step claims the blob's ref and renames the chunks. Another
// writer of the same content waits on the ref's key and then finds it
// taken: its chunks roll back with its transaction.
func (s *Store) putStream(ctx context.Context, first []byte, r io.Reader) (blobstore.Ref, int64, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", 0, fmt.Errorf("pgstore: placeholder ref: %w", err)
	}
	placeholder := "upload:" + hex.EncodeToString(nonce[:]) // never a valid ref
	h := sha256.New()
	var size int64
	var ref blobstore.Ref
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		buf := first
		seq := 0
		for {
			h.Write(buf)
			size += int64(len(buf))
			if _, err := tx.Exec(ctx, `INSERT INTO blob_chunks (ref, seq, data) VALUES ($1, $2, $3)`,
				placeholder, seq, buf); err != nil {
				return fmt.Errorf("write chunk %d: %w", seq, err)
			}
			seq++
			buf = first[:cap(first)]
			n, err := io.ReadFull(r, buf)
			buf = buf[:n]
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				if n > 0 {
					continue // the last, short chunk; the next read ends the loop
				}
				break
			}
			if err != nil {
				return fmt.Errorf("read blob: %w", err)
			}
		}
		ref = blobstore.RefFromDigest([sha256.Size]byte(h.Sum(nil)))
		tag, err := tx.Exec(ctx, `INSERT INTO blobs (ref, size, chunks) VALUES ($1, $2, $3) ON CONFLICT (ref) DO NOTHING`,
			string(ref), size, seq)
		if err != nil {
			return fmt.Errorf("record blob: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return errAlreadyStored
		}
		if _, err := tx.Exec(ctx, `UPDATE blob_chunks SET ref = $1 WHERE ref = $2`, string(ref), placeholder); err != nil {
			return fmt.Errorf("name chunks: %w", err)
		}
		return nil
	})
	if errors.Is(err, errAlreadyStored) {
		return ref, size, nil
	}
	if err != nil {
		return "", size, fmt.Errorf("pgstore: store blob: %w", err)
	}
	return ref, size, nil
}

// errAlreadyStored rolls back the chunks of a blob another writer stored.
var errAlreadyStored = errors.New("already stored")

// insertWhole stores blobs of at most one chunk each, in one transaction.
// A blob already stored keeps its rows.
func (s *Store) insertWhole(ctx context.Context, blobs [][]byte, refs []blobstore.Ref) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for start := 0; start < len(blobs); start += packBatch {
			end := min(start+packBatch, len(blobs))
			refArgs := make([]string, 0, end-start)
			sizes := make([]int64, 0, end-start)
			chunks := make([]int32, 0, end-start)
			byRef := make(map[string][]byte, end-start)
			for i := start; i < end; i++ {
				if _, dup := byRef[string(refs[i])]; dup {
					continue
				}
				byRef[string(refs[i])] = blobs[i]
				refArgs = append(refArgs, string(refs[i]))
				sizes = append(sizes, int64(len(blobs[i])))
				n := int32(1)
				if len(blobs[i]) == 0 {
					n = 0
				}
				chunks = append(chunks, n)
			}
			rows, err := tx.Query(ctx, `INSERT INTO blobs (ref, size, chunks)
				SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[]) ON CONFLICT (ref) DO NOTHING RETURNING ref`,
				refArgs, sizes, chunks)
			if err != nil {
				return fmt.Errorf("record blobs: %w", err)
			}
			fresh, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("record blobs: %w", err)
			}
			var copyRows [][]any
			for _, ref := range fresh {
				if data := byRef[ref]; len(data) > 0 {
					copyRows = append(copyRows, []any{ref, int32(0), data})
				}
			}
			if len(copyRows) == 0 {
				continue
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"blob_chunks"}, []string{"ref", "seq", "data"},
				pgx.CopyFromRows(copyRows)); err != nil {
				return fmt.Errorf("write chunks: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgstore: store %d blobs: %w", len(blobs), err)
	}
	return nil
}

// WritePack stores small blobs in one transaction, each as a blob of its
// own (a row costs no file and no fsync here, so packing gains nothing),
// and returns no locations: every blob is found by Open.
func (s *Store) WritePack(ctx context.Context, blobs [][]byte) ([]blobstore.Packed, error) {
	if len(blobs) == 0 {
		return nil, nil
	}
	refs := make([]blobstore.Ref, len(blobs))
	for i, b := range blobs {
		if len(b) > ChunkSize {
			ref, _, err := s.Put(ctx, bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			refs[i] = ref
			continue
		}
		refs[i] = blobstore.RefFromDigest(sha256.Sum256(b))
	}
	var small [][]byte
	var smallRefs []blobstore.Ref
	for i, b := range blobs {
		if len(b) <= ChunkSize {
			small, smallRefs = append(small, b), append(smallRefs, refs[i])
		}
	}
	if err := s.insertWhole(ctx, small, smallRefs); err != nil {
		return nil, err
	}
	return nil, nil
}

// OpenPacked finds nothing: this store writes no packs. Locations
// recorded by another store (blob_packs rows from the file store's time)
// are read there, or copied over by ledgerdesk blobs migrate.
func (s *Store) OpenPacked(p blobstore.Packed) (io.ReadCloser, error) {
	if err := blobstore.CheckPacked(p); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: %s in %s (the postgres store has no packs)", blobstore.ErrNotFound, p.Ref, p.Pack)
}

// Stat describes a stored blob; a missing blob gives an error matching
// blobstore.ErrNotFound.
func (s *Store) Stat(ref blobstore.Ref) (blobstore.Info, error) {
	if _, err := blobstore.ParseRef(string(ref)); err != nil {
		return blobstore.Info{}, err
	}
	var size int64
	err := s.pool.QueryRow(context.Background(), `SELECT size FROM blobs WHERE ref = $1`, string(ref)).Scan(&size)
	if errors.Is(err, pgx.ErrNoRows) {
		return blobstore.Info{}, fmt.Errorf("%w: %s", blobstore.ErrNotFound, ref)
	}
	if err != nil {
		return blobstore.Info{}, fmt.Errorf("pgstore: stat %s: %w", ref, err)
	}
	return blobstore.Info{Ref: ref, Size: size}, nil
}

// Exists reports whether the blob is stored.
func (s *Store) Exists(ref blobstore.Ref) (bool, error) {
	_, err := s.Stat(ref)
	if errors.Is(err, blobstore.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Open returns a reader of the blob that fetches one chunk at a time;
// closing it ends its queries. A missing blob gives an error matching
// blobstore.ErrNotFound; bytes that do not match the ref fail the last
// Read with blobstore.ErrCorrupt.
func (s *Store) Open(ref blobstore.Ref) (io.ReadCloser, error) {
	if _, err := blobstore.ParseRef(string(ref)); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var chunks int
	err := s.pool.QueryRow(ctx, `SELECT chunks FROM blobs WHERE ref = $1`, string(ref)).Scan(&chunks)
	if errors.Is(err, pgx.ErrNoRows) {
		cancel()
		return nil, fmt.Errorf("%w: %s", blobstore.ErrNotFound, ref)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("pgstore: open %s: %w", ref, err)
	}
	return blobstore.Verified(ref, &chunkReader{ctx: ctx, cancel: cancel, pool: s.pool, ref: ref, chunks: chunks}), nil
}

// chunkReader reads a blob's chunks in order, one query each.
type chunkReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	pool   *pgxpool.Pool
	ref    blobstore.Ref
	chunks int
	next   int
	buf    []byte
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.next >= c.chunks {
			return 0, io.EOF
		}
		err := c.pool.QueryRow(c.ctx, `SELECT data FROM blob_chunks WHERE ref = $1 AND seq = $2`,
			string(c.ref), c.next).Scan(&c.buf)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("%w: %s lacks chunk %d", blobstore.ErrCorrupt, c.ref, c.next)
		}
		if err != nil {
			return 0, fmt.Errorf("pgstore: read %s chunk %d: %w", c.ref, c.next, err)
		}
		c.next++
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *chunkReader) Close() error {
	c.cancel()
	return nil
}

// listPage bounds the rows one List query returns.
const listPage = 1000

// List calls fn for every stored blob, in ref order, a page of refs per
// query (no transaction stays open while fn runs).
func (s *Store) List(ctx context.Context, fn func(blobstore.Info) error) error {
	after := ""
	for {
		rows, err := s.pool.Query(ctx, `SELECT ref, size FROM blobs WHERE ref > $1 ORDER BY ref LIMIT $2`, after, listPage)
		if err != nil {
			return fmt.Errorf("pgstore: list: %w", err)
		}
		page, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (blobstore.Info, error) {
			var ref string
			var info blobstore.Info
			err := row.Scan(&ref, &info.Size)
			info.Ref = blobstore.Ref(ref)
			return info, err
		})
		if err != nil {
			return fmt.Errorf("pgstore: list: %w", err)
		}
		for _, info := range page {
			if err := fn(info); err != nil {
				return err
			}
		}
		if len(page) < listPage {
			return nil
		}
		after = string(page[len(page)-1].Ref)
	}
}
