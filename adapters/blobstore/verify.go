package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// ErrCorrupt is matched (errors.Is) when a blob's bytes do not hash to its
// Ref: a disk or an object store gave back something else than was stored.
var ErrCorrupt = errors.New("blobstore: blob does not match its hash")

// Verified wraps rc so that reading it to the end checks the bytes against
// ref: the last Read returns an error matching ErrCorrupt instead of io.EOF
// when they differ. A reader that stops early (an attachment found before
// the end) checks nothing. Every store's Open returns such a reader, so a
// damaged blob is never served as if it were the mail.
func Verified(ref Ref, rc io.ReadCloser) io.ReadCloser {
	return &verifiedReader{ref: ref, rc: rc, h: sha256.New()}
}

type verifiedReader struct {
	ref Ref
	rc  io.ReadCloser
	h   hash.Hash
	n   int64
	err error // sticky result once the end was reached
}

func (v *verifiedReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if errors.Is(err, io.EOF) {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.ref.Hex() {
			v.err = fmt.Errorf("%w: %s read back as sha256:%s (%d bytes)", ErrCorrupt, v.ref, got, v.n)
			return n, v.err
		}
		v.err = io.EOF
	}
	return n, err
}

func (v *verifiedReader) Close() error { return v.rc.Close() }
