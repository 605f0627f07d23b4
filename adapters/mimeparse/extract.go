package mimeparse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// ErrPartNotFound is returned by ExtractPart and FindContentID when the mail
// has no part at that path or with that Content-ID.
var ErrPartNotFound = errors.New("mimeparse: part not found")

// PartInfo describes the part that ExtractPart or FindContentID copied.
type PartInfo struct {
	// PartPath is the part's IMAP-style path, as in Attachment.PartPath.
	PartPath string
	// ContentType is the lower-case media type, without parameters.
	ContentType string
	// Charset is the charset parameter, "" when absent.
	Charset string
	// Filename is the part's file name as Parse lists it ("" when it has
	// none; "<subject>.eml" for a forwarded message).
	Filename  string
	ContentID string
	// Size is the number of decoded bytes written.
	Size int64
}

// ExtractPart writes the decoded bytes (Content-Transfer-Encoding undone,
// charset untouched) of the part at partPath to w and describes it. Paths
// are those of Attachment.PartPath: the walk is the one Parse makes, so a
// path Parse listed always finds the same part. A message/rfc822 part
// yields the forwarded message as its bytes (a .eml).
//
// Memory is bounded as in Parse: the part is streamed from r to w, other
// parts are read past, and lim applies (a *ParseError when broken). The
// walk stops as soon as the part is written. ErrPartNotFound when no part
// has that path; a write error of w is returned wrapped.
func ExtractPart(r io.Reader, partPath string, w io.Writer, lim Limits) (PartInfo, error) {
	if partPath == "" {
		return PartInfo{}, fmt.Errorf("%w: empty part path", ErrPartNotFound)
	}
	return extract(r, &extraction{path: partPath, w: w}, lim)
}

// FindContentID is ExtractPart for the leaf part whose Content-ID (RFC
// 2392, without angle brackets, compared ignoring case as Parse's cid:
// matching does) is cid: the target of a "cid:" URL in the HTML body.
// A %-encoded cid (as written in URLs) is decoded first.
func FindContentID(r io.Reader, cid string, w io.Writer, lim Limits) (PartInfo, error) {
	if u, err := url.PathUnescape(cid); err == nil {
		cid = u
	}
	cid = contentID(cid)
	if cid == "" {
		return PartInfo{}, fmt.Errorf("%w: empty content id", ErrPartNotFound)
	}
	return extract(r, &extraction{cid: cid, w: w}, lim)
}

func extract(r io.Reader, ext *extraction, lim Limits) (PartInfo, error) {
	p := &parser{lim: lim.withDefaults(), ext: ext}
	// bodyLeft stays 0: no body text is kept, the walk only locates parts.
	_, _, err := p.walkMail(bufio.NewReaderSize(sourceReader{r}, 32<<10))
	if ext.done {
		if err != nil && !errors.Is(err, errExtracted) {
			return PartInfo{}, failure(err)
		}
		return ext.info, nil
	}
	if err != nil {
		return PartInfo{}, failure(err)
	}
	what := "path " + ext.path
	if ext.path == "" {
		what = "content id " + ext.cid
	}
	return PartInfo{}, fmt.Errorf("%w: %s", ErrPartNotFound, what)
}

// sourceReader marks the caller's read errors as sourceErrors, as
// hashingReader does for Parse, without hashing.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, &sourceError{err: err}
	}
	return n, err
}

// errExtracted ends the walk once the wanted part has been copied.
var errExtracted = errors.New("mimeparse: part extracted")

// sinkError wraps a write error of the extraction's writer, so that it stops
// the walk (isFatal) instead of being repaired like a decoding error.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return "write part: " + e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

type sinkWriter struct {
	w io.Writer
	n int64
}

func (s *sinkWriter) Write(b []byte) (int, error) {
	n, err := s.w.Write(b)
	s.n += int64(n)
	if err != nil {
		return n, &sinkError{err: err}
	}
	return n, nil
}

// extraction is what ExtractPart and FindContentID look for: a part path or
// a Content-ID, and where its bytes go. A nil *extraction wants nothing, so
// Parse's walk calls its methods unconditionally.
type extraction struct {
	path string
	cid  string
	w    io.Writer
	sw   *sinkWriter // set while a message part is being teed
	done bool
	info PartInfo
}

// wants reports whether the leaf at path with header h is the one wanted.
func (x *extraction) wants(path string, h *header) bool {
	if x == nil || x.done {
		return false
	}
	if x.path != "" {
		return x.path == path
	}
	return strings.EqualFold(contentID(h.get("Content-Id")), x.cid)
}

// copyLeaf copies a wanted leaf's decoded body and ends the walk. A decoding
// error ends the part with what could be decoded, as Parse counts it.
func (x *extraction) copyLeaf(dec io.Reader, info PartInfo) error {
	sw := &sinkWriter{w: x.w}
	_, err := io.Copy(sw, dec)
	if err != nil && isFatal(err) {
		return err
	}
	info.Size = sw.n
	x.info, x.done = info, true
	return errExtracted
}

// tee makes a message or returned-headers part at path copy its decoded
// bytes to the writer while Parse's walk reads it.
func (x *extraction) tee(path string, r io.Reader) io.Reader {
	if x == nil || x.done || x.path == "" || x.path != path {
		return r
	}
	x.sw = &sinkWriter{w: x.w}
	return io.TeeReader(r, x.sw)
}

// finish ends the walk after a teed part has been read to its end.
func (x *extraction) finish(path string, a Attachment) error {
	if x == nil || x.sw == nil || x.done || x.path != path {
		return nil
	}
	x.info = PartInfo{PartPath: a.PartPath, ContentType: a.ContentType, Filename: a.Filename,
		ContentID: a.ContentID, Size: x.sw.n}
	x.done = true
	return errExtracted
}
