package mimeparse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// uuDecoder decodes uuencoded data (Content-Transfer-Encoding: x-uuencode):
// lines between "begin <mode> <name>" (optional) and "end", each starting
// with a length character. Blank lines before the data are skipped, and
// memory is one line.
type uuDecoder struct {
	br      *bufio.Reader
	started bool
	done    bool
	out     []byte
}

func newUUDecoder(r io.Reader) *uuDecoder {
	return &uuDecoder{br: bufio.NewReaderSize(r, 4096)}
}

func (u *uuDecoder) Read(p []byte) (int, error) {
	for len(u.out) == 0 {
		if u.done {
			return 0, io.EOF
		}
		line, err := u.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Longer than any uuencoded line: not uuencode; skip it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = u.br.ReadSlice('\n')
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if errors.Is(err, io.EOF) {
			u.done = true
		}
		line = bytes.TrimRight(line, "\r\n")
		if !u.started {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			u.started = true
			if bytes.HasPrefix(line, []byte("begin ")) {
				continue
			}
			// No begin line (some mailers leave it out): data starts here.
		}
		switch {
		case bytes.Equal(bytes.TrimSpace(line), []byte("end")):
			u.done = true
			continue
		}
		u.out = uuLine(line, u.out[:0])
	}
	n := copy(p, u.out)
	u.out = u.out[n:]
	return n, nil
}

// uuLine decodes one uuencoded line into dst.
func uuLine(line, dst []byte) []byte {
	if len(line) == 0 {
		return dst
	}
	n := int((line[0] - 32) & 63)
	data := line[1:]
	for i := 0; n > 0; i += 4 {
		var c [4]byte
		for j := range c {
			if i+j < len(data) {
				c[j] = (data[i+j] - 32) & 63
			}
		}
		b := [3]byte{c[0]<<2 | c[1]>>4, c[1]<<4 | c[2]>>2, c[2]<<6 | c[3]}
		take := min(n, 3)
		dst = append(dst, b[:take]...)
		n -= take
		if i+4 >= len(data) && n > 0 {
			break
		}
	}
	return dst
}
