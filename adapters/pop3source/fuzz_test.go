package pop3source

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readAnswer reads what a server sent for one command the way the client
// does: a status line and, after +OK, a dot-terminated body. It returns
// the status, the body as the sink would get it, and the listing entries
// when the body is parsed as UIDL/LIST instead.
func readAnswer(wire []byte, listing bool) (reply, []byte, int, error) {
	br := bufio.NewReaderSize(bytes.NewReader(wire), 4096)
	rep, err := readReply(br)
	if err != nil || rep.kind != replyOK {
		return rep, nil, 0, err
	}
	if listing {
		n := 0
		err := readListing(br, func(int, string) error { n++; return nil })
		return rep, nil, n, err
	}
	b := &body{dot: textproto.NewReader(br).DotReader(), scratch: make([]byte, 1024)}
	out, err := io.ReadAll(b)
	return rep, out, 0, err
}

// FuzzReadResponse feeds arbitrary server output to the status-line,
// listing and RETR readers: they must not panic, must not return line
// breaks inside a status text, and must hand the sink only CRLF line
// endings, never more than twice the octets received.
func FuzzReadResponse(f *testing.F) {
	for _, seed := range []string{
		"+OK\r\n.\r\n",
		"+OK 12 octets\r\nSubject: x\r\n\r\n..hidden\r\n.\r\n",
		"-ERR [AUTH] Invalid login\r\n",
		"+ \r\n",
		"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n",
		"+OK listing\r\n1 abc\r\n2 def\r\n.\r\n",
		"+OK\r\n1 100\r\n2 20000000000\r\n.\r\n",
		"+OK\r\nbare\nlf\r\nlone\rcr\r\n.\r\n",
		"+OK\r\n" + strings.Repeat("y", 9000) + "\r\n.\r\n",
		"+OK\r\nno terminator",
		"+okay\r\n",
		"\r\n",
		"+OK\n.\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		rep, out, _, err := readAnswer(wire, false)
		if strings.ContainsAny(rep.text, "\n") {
			t.Fatalf("status text %q holds a line break", rep.text)
		}
		if err == nil && rep.kind == replyOK {
			if len(out) > 2*len(wire) {
				t.Fatalf("body of %d octets from %d on the wire", len(out), len(wire))
			}
			for i, c := range out {
				if c == '\n' && (i == 0 || out[i-1] != '\r') {
					t.Fatalf("body %q has a bare LF at %d", out, i)
				}
			}
		}
		_, _, n, err := readAnswer(wire, true)
		if err == nil && n > bytes.Count(wire, []byte{'\n'}) {
			t.Fatalf("listing of %d entries from %d lines", n, bytes.Count(wire, []byte{'\n'}))
		}
	})
}

// canonical turns arbitrary bytes into a mail in wire form: CRLF line
// endings only, ending in CRLF. DotWriter sends an empty mail as one empty
// line.
func canonical(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte{'\r'}, nil)
	b = bytes.ReplaceAll(b, []byte{'\n'}, []byte("\r\n"))
	if len(b) == 0 {
		return []byte("\r\n")
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		b = append(b, '\r', '\n')
	}
	return b
}

// FuzzDotRoundTrip checks that a mail dot-stuffed by textproto's DotWriter
// (as a server sends it) reaches the sink octet for octet, whatever the
// size of the sink's reads.
func FuzzDotRoundTrip(f *testing.F) {
	f.Add([]byte("Subject: a\n\n.hidden\n..two\n.\nend"), uint16(1))
	f.Add([]byte(strings.Repeat("z", 70000)), uint16(4096))
	f.Add([]byte("\n\n\n"), uint16(2))
	for _, m := range corpusSeeds(f, 20) {
		f.Add(m, uint16(3))
	}
	f.Fuzz(func(t *testing.T, raw []byte, readSize uint16) {
		want := canonical(raw)
		var wire bytes.Buffer
		w := textproto.NewWriter(bufio.NewWriter(&wire))
		dw := w.DotWriter()
		if _, err := dw.Write(want); err != nil {
			t.Fatal(err)
		}
		if err := dw.Close(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(&wire)
		b := &body{dot: textproto.NewReader(br).DotReader(), scratch: make([]byte, 512)}
		buf := make([]byte, int(readSize)%8192+1)
		var got []byte
		for {
			n, err := b.Read(buf)
			got = append(got, buf[:n]...)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Read() error = %v", err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round trip = %q, want %q", clip(string(got)), clip(string(want)))
		}
		if br.Buffered() != 0 {
			t.Fatalf("%d octets left after the terminator", br.Buffered())
		}
	})
}

// corpusSeeds returns up to n mails of the shared corpus when it is
// there; the seeds are optional.
func corpusSeeds(tb testing.TB, n int) [][]byte {
	tb.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "corpus")
	var out [][]byte
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || len(out) >= n {
			return fs.SkipAll
		}
		if d.IsDir() || strings.HasSuffix(p, ".yml") || strings.Contains(strings.ToUpper(d.Name()), "README") ||
			strings.Contains(strings.ToUpper(d.Name()), "LICENSE") {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && len(b) < 1<<20 {
			out = append(out, b)
		}
		return nil
	})
	return out
}
