package blobstore

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFS_SyncWaitsForASyncOfItsFilesStartedByAnother: B's blob was taken
// into A's sync, which is still running when B calls Sync. B's Sync must
// not return before that sync has made the blob durable.
func TestFS_SyncWaitsForASyncOfItsFilesStartedByAnother(t *testing.T) {
	t.Parallel()
	s, err := NewFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	var finished atomic.Int32 // syncs of the filesystem that completed
	s.syncFS = func(dir string) error {
		entered <- struct{}{}
		<-release
		finished.Add(1)
		return nil
	}
	ctx := context.Background()
	if _, _, err := s.PutNoSync(ctx, strings.NewReader("caller A's mail")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutNoSync(ctx, strings.NewReader("caller B's mail")); err != nil {
		t.Fatal(err)
	}

	aDone := make(chan error, 1)
	go func() { aDone <- s.Sync() }()
	<-entered // A's sync has taken both blobs and is flushing them

	type result struct {
		err          error
		durableAtRet bool
	}
	bDone := make(chan result, 1)
	go func() {
		err := s.Sync()
		bDone <- result{err: err, durableAtRet: finished.Load() > 0}
	}()
	select {
	case r := <-bDone:
		t.Fatalf("B's Sync() returned (err %v) while the sync holding its blob was still running", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-aDone; err != nil {
		t.Fatalf("A's Sync() error = %v", err)
	}
	r := <-bDone
	if r.err != nil {
		t.Fatalf("B's Sync() error = %v", r.err)
	}
	if !r.durableAtRet {
		t.Error("B's Sync() returned before any sync of its blob had finished")
	}
}

// TestFS_SyncRetriesWhatAFailedConcurrentSyncTook: when the sync that took
// B's blob fails, B's Sync syncs it again rather than report success.
func TestFS_SyncRetriesWhatAFailedConcurrentSyncTook(t *testing.T) {
	t.Parallel()
	s, err := NewFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	var calls, ok atomic.Int32
	s.syncFS = func(dir string) error {
		n := calls.Add(1)
		entered <- struct{}{}
		<-release
		if n == 1 {
			return errTestSync
		}
		ok.Add(1)
		return nil
	}
	if _, _, err := s.PutNoSync(context.Background(), strings.NewReader("mail")); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan error, 1)
	go func() { aDone <- s.Sync() }()
	<-entered
	bDone := make(chan error, 1)
	go func() { bDone <- s.Sync() }()
	select {
	case err := <-bDone:
		t.Fatalf("B's Sync() returned (err %v) while the sync holding its blob was still running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-aDone; err == nil {
		t.Error("A's Sync() error = nil, want the injected failure")
	}
	if err := <-bDone; err != nil {
		t.Errorf("B's Sync() error = %v, want nil after its own sync", err)
	}
	if ok.Load() != 1 {
		t.Errorf("successful syncs = %d, want 1 (B synced the blob A failed to)", ok.Load())
	}
}

var errTestSync = errors.New("injected sync failure")
