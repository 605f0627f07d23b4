package blobstore

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errSyncfsUnsupported makes Sync fall back to one fsync per path.
var errSyncfsUnsupported = errors.New("syncfs not supported")

// syncFilesystem flushes the whole filesystem holding dir with syncfs(2):
// one call for a batch of blobs instead of one fsync each.
func syncFilesystem(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return errSyncfsUnsupported
		}
		return err
	}
	return nil
}
