package blobstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
)

// MigrateSource is the store blobs are copied from.
type MigrateSource interface {
	List(ctx context.Context, fn func(Info) error) error
	Open(ref Ref) (io.ReadCloser, error)
	OpenPacked(p Packed) (io.ReadCloser, error)
}

// MigrateTarget is the store blobs are copied to.
type MigrateTarget interface {
	Put(ctx context.Context, r io.Reader) (Ref, int64, error)
	Open(ref Ref) (io.ReadCloser, error)
}

// Migration copies every blob of one store into another and checks each
// copy by reading it back and hashing it. It can be run again at any time:
// a blob the target holds intact is skipped, so an interrupted run resumes
// where it stopped, and a run after switching stores picks up what arrived
// in the old store meanwhile.
type Migration struct {
	From MigrateSource
	To   MigrateTarget
	// Packed lists the locations of blobs kept in pack files, as recorded
	// in blob_packs; nil when there are none. Each is copied as a loose blob.
	Packed func(ctx context.Context, fn func(Packed) error) error
	// Progress, when set, is called after each blob (from several
	// goroutines, one call at a time).
	Progress func(MigrationProgress)
	// Workers copy blobs in parallel; 0 means 4.
	Workers int
}

// MigrationProgress counts a migration's blobs so far.
type MigrationProgress struct {
	Total   int   // blobs to look at: loose blobs plus recorded pack locations
	Done    int   // blobs looked at
	Copied  int   // copied and verified
	Present int   // already in the target, intact
	Failed  int   // not copied; see the errors
	Bytes   int64 // bytes copied
}

// ErrMigrationIncomplete is matched when some blobs could not be copied.
var ErrMigrationIncomplete = errors.New("blobstore: some blobs were not migrated")

// maxReportedErrors bounds the per-blob errors a failed run returns.
const maxReportedErrors = 20

// Run copies every blob. It goes on after a blob fails and then returns
// an error matching ErrMigrationIncomplete that names the first failures.
func (m Migration) Run(ctx context.Context) (MigrationProgress, error) {
	var p MigrationProgress
	count := func(Info) error { p.Total++; return nil }
	if err := m.From.List(ctx, count); err != nil {
		return p, fmt.Errorf("blobstore: count blobs: %w", err)
	}
	if m.Packed != nil {
		if err := m.Packed(ctx, func(Packed) error { p.Total++; return nil }); err != nil {
			return p, fmt.Errorf("blobstore: count packed blobs: %w", err)
		}
	}
	workers := m.Workers
	if workers <= 0 {
		workers = 4
	}
	var mu sync.Mutex
	var errs []error
	// phase copies what list yields with the workers and waits for them.
	phase := func(list func(send func(Ref, func() (io.ReadCloser, error)) error) error) error {
		type job struct {
			ref  Ref
			open func() (io.ReadCloser, error)
		}
		jobs := make(chan job)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for j := range jobs {
					copied, n, err := m.copyOne(ctx, j.ref, j.open)
					mu.Lock()
					p.Done++
					switch {
					case err != nil:
						p.Failed++
						if len(errs) < maxReportedErrors {
							errs = append(errs, fmt.Errorf("%s: %w", j.ref, err))
						}
					case copied:
						p.Copied++
						p.Bytes += n
					default:
						p.Present++
					}
					if m.Progress != nil {
						m.Progress(p)
					}
					mu.Unlock()
				}
			})
		}
		err := list(func(ref Ref, open func() (io.ReadCloser, error)) error {
			select {
			case jobs <- job{ref: ref, open: open}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		close(jobs)
		wg.Wait()
		return err
	}
	err := phase(func(send func(Ref, func() (io.ReadCloser, error)) error) error {
		return m.From.List(ctx, func(i Info) error {
			return send(i.Ref, func() (io.ReadCloser, error) { return m.From.Open(i.Ref) })
		})
	})
	if err != nil {
		return p, fmt.Errorf("blobstore: list blobs: %w", err)
	}
	// The packed blobs after all loose ones: a blob that is both (a mail
	// fetched twice) is then found present, not copied twice at once.
	if m.Packed != nil {
		err = phase(func(send func(Ref, func() (io.ReadCloser, error)) error) error {
			return m.Packed(ctx, func(pk Packed) error {
				return send(pk.Ref, func() (io.ReadCloser, error) {
					// Loose first, as the store's readers look it up.
					rc, err := m.From.Open(pk.Ref)
					if errors.Is(err, ErrNotFound) {
						return m.From.OpenPacked(pk)
					}
					return rc, err
				})
			})
		})
		if err != nil {
			return p, fmt.Errorf("blobstore: list packed blobs: %w", err)
		}
	}
	if p.Failed > 0 {
		return p, fmt.Errorf("%w: %d of %d failed (the first %d below); run again to retry them:\n%w",
			ErrMigrationIncomplete, p.Failed, p.Total, len(errs), errors.Join(errs...))
	}
	return p, nil
}

// copyOne copies one blob unless the target holds it intact, and then
// reads the copy back. It reports whether it copied and how many bytes.
func (m Migration) copyOne(ctx context.Context, ref Ref, open func() (io.ReadCloser, error)) (bool, int64, error) {
	if err := verifyIn(m.To, ref); err == nil {
		return false, 0, nil
	} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) {
		return false, 0, fmt.Errorf("look in the target: %w", err)
	}
	rc, err := open()
	if err != nil {
		return false, 0, fmt.Errorf("open in the source: %w", err)
	}
	defer func() { _ = rc.Close() }()
	// rc checks the source's bytes against ref as the target reads them
	// (every store's reader is Verified): a damaged source blob fails here.
	got, n, err := m.To.Put(ctx, rc)
	if err != nil {
		return false, n, fmt.Errorf("copy: %w", err)
	}
	if got != ref {
		return false, n, fmt.Errorf("%w: copied as %s", ErrCorrupt, got)
	}
	if err := verifyIn(m.To, ref); err != nil {
		return false, n, fmt.Errorf("read back the copy: %w", err)
	}
	return true, n, nil
}

// verifyIn reads ref from s to the end and checks its hash.
func verifyIn(s MigrateTarget, ref Ref) error {
	rc, err := s.Open(ref)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return err
	}
	if RefFromDigest([sha256.Size]byte(h.Sum(nil))) != ref {
		return fmt.Errorf("%w: %s", ErrCorrupt, ref)
	}
	return nil
}
