package mimeparse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// splitBufferSize is the read buffer of each multipart level. Boundary lines
// are at most 70 bytes plus padding (RFC 2046 section 5.1.1), so any line
// longer than this is body, and memory per nesting level stays fixed.
const splitBufferSize = 16 << 10

// splitter cuts a multipart body into parts, streaming (RFC 2046 section
// 5.1). It is line based and lenient where mail clients are: LF or CRLF line
// ends, white space after a boundary, a body that ends without the close
// delimiter (the last part just ends), and text before the first boundary.
// It reads part headers itself, so their size is capped.
type splitter struct {
	br    *bufio.Reader
	dash  []byte // "--" + boundary
	state splitState
	cur   *partReader
	// truncated is set when the input ended without a close delimiter.
	truncated bool
	// preamble keeps up to keepPreamble bytes of text before the first
	// boundary, for a multipart that has no parts at all.
	preamble     []byte
	keepPreamble int
}

type splitState int

const (
	statePreamble splitState = iota // before the first delimiter
	stateBody                       // inside a part
	stateNext                       // a delimiter was read; a part header follows
	stateDone                       // after the close delimiter or EOF
)

func newSplitter(r io.Reader, boundary string, keepPreamble int) *splitter {
	return &splitter{
		br:           bufio.NewReaderSize(r, splitBufferSize),
		dash:         []byte("--" + boundary),
		keepPreamble: keepPreamble,
	}
}

// delimiter classifies a complete line: 1 for a delimiter, 2 for the close
// delimiter, 0 for anything else.
func (s *splitter) delimiter(line []byte) int {
	if !bytes.HasPrefix(line, s.dash) {
		return 0
	}
	rest := line[len(s.dash):]
	if bytes.HasPrefix(rest, []byte("--")) {
		return 2
	}
	if len(bytes.TrimRight(rest, " \t\r\n")) == 0 {
		return 1
	}
	return 0
}

// readLine returns the next line including its line break (or a piece of a
// line longer than the buffer, then full is false). The slice is only valid
// until the next read.
func (s *splitter) readLine() (line []byte, full bool, err error) {
	line, err = s.br.ReadSlice('\n')
	switch {
	case err == nil:
		return line, true, nil
	case errors.Is(err, bufio.ErrBufferFull):
		return line, false, nil
	case errors.Is(err, io.EOF):
		return line, true, io.EOF
	default:
		return line, false, err
	}
}

// next advances to the next part and returns its raw (still
// transfer-encoded) body reader, positioned after the part header, which
// the caller reads with hr. It returns io.EOF when there are no more parts.
// The previous part must have been read to its end.
func (s *splitter) next(hr *headerReader) (headerBlock, io.Reader, error) {
	if s.state == statePreamble {
		atLineStart := true
		for {
			line, full, err := s.readLine()
			if err != nil && !errors.Is(err, io.EOF) {
				return headerBlock{}, nil, err
			}
			if atLineStart && full {
				switch s.delimiter(line) {
				case 1:
					s.state = stateNext
				case 2:
					s.state = stateDone
					return headerBlock{}, nil, io.EOF
				}
			}
			if s.state == stateNext {
				break
			}
			if room := s.keepPreamble - len(s.preamble); room > 0 {
				s.preamble = append(s.preamble, line[:min(room, len(line))]...)
			}
			atLineStart = full
			if errors.Is(err, io.EOF) {
				s.state = stateDone
				s.truncated = true
				return headerBlock{}, nil, io.EOF
			}
		}
	}
	if s.state == stateBody {
		// The caller did not finish the part; skip the rest.
		if _, err := io.Copy(io.Discard, s.cur); err != nil {
			return headerBlock{}, nil, err
		}
	}
	if s.state != stateNext {
		return headerBlock{}, nil, io.EOF
	}
	hr.br = s.br
	hr.stop = func(line []byte) bool { return s.delimiter(line) != 0 }
	blk, err := hr.readHeader(false)
	if err != nil {
		return headerBlock{}, nil, err
	}
	s.state = stateBody
	s.cur = &partReader{s: s, atLineStart: true}
	if blk.stopLine != nil {
		// A delimiter ended the header: the part is empty.
		s.cur.eof = true
		if s.delimiter(blk.stopLine) == 2 {
			s.state = stateDone
		} else {
			s.state = stateNext
		}
		return blk, s.cur, nil
	}
	if blk.leftover != nil {
		s.cur.pending = blk.leftover
		s.cur.heldNL = blk.leftoverNL
	}
	if !blk.sawEnd && blk.leftover == nil {
		// The header ran into EOF or a delimiter could be in it; the part
		// then has an empty body. A delimiter line inside a header block is
		// taken as a header field by nobody, so only EOF gets here.
		s.cur.eof = true
		s.state = stateDone
		s.truncated = true
	}
	return blk, s.cur, nil
}

// partReader yields one part's raw body: the lines up to the next delimiter,
// without the line break that belongs to the delimiter.
type partReader struct {
	s           *splitter
	pending     []byte
	buf         []byte
	heldNL      string
	atLineStart bool
	eof         bool
}

func (p *partReader) Read(b []byte) (int, error) {
	for len(p.pending) == 0 {
		if p.eof {
			return 0, io.EOF
		}
		line, full, err := p.s.readLine()
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if len(line) == 0 && errors.Is(err, io.EOF) {
			p.eof = true
			p.s.state = stateDone
			p.s.truncated = true
			continue
		}
		if p.atLineStart && full {
			switch p.s.delimiter(line) {
			case 1:
				p.eof = true
				p.s.state = stateNext
				continue
			case 2:
				p.eof = true
				p.s.state = stateDone
				continue
			}
		}
		body, nl := line, ""
		if full && !errors.Is(err, io.EOF) {
			if bytes.HasSuffix(body, []byte("\r\n")) {
				body, nl = body[:len(body)-2], "\r\n"
			} else {
				body, nl = body[:len(body)-1], "\n"
			}
		}
		p.buf = append(p.buf[:0], p.heldNL...)
		p.buf = append(p.buf, body...)
		p.pending = p.buf
		p.heldNL = nl
		p.atLineStart = full
		if errors.Is(err, io.EOF) {
			// The last line had no line break: the input ends here.
			p.eof = true
			p.s.state = stateDone
			p.s.truncated = true
		}
	}
	n := copy(b, p.pending)
	p.pending = p.pending[n:]
	return n, nil
}
