//go:build !linux

package blobstore

import "errors"

// errSyncfsUnsupported makes Sync fall back to one fsync per path.
var errSyncfsUnsupported = errors.New("syncfs not supported")

// syncFilesystem is not available outside Linux; Sync fsyncs each path.
func syncFilesystem(string) error { return errSyncfsUnsupported }
