//go:build linux

package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
)

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(tb testing.TB) (master, slave *os.File) {
	tb.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		tb.Skipf("no pseudo-terminal here: %v", err)
	}
	tb.Cleanup(func() { _ = m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		tb.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return m, s
}

// TestMigrateProgress_BarOnATerminal: on a terminal the migration draws a
// progress bar; elsewhere (TestBlobsMigrate) it writes plain lines.
func TestMigrateProgress_BarOnATerminal(t *testing.T) {
	t.Parallel()
	master, slave := openPTY(t)
	show := newMigrateProgress(slave, "file", "s3")
	if show.bar == nil {
		t.Fatal("no progress bar on a terminal")
	}
	for i := 1; i <= 10; i++ {
		show.update(blobstore.MigrationProgress{Total: 10, Done: i, Copied: i, Bytes: int64(i) << 20})
		time.Sleep(15 * time.Millisecond) // past the bar's redraw throttle now and then
	}
	show.finish(blobstore.MigrationProgress{Total: 10, Done: 10, Copied: 10, Bytes: 10 << 20})
	_ = master.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), "10 copied and verified") {
		n, err := master.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("read the terminal: %v; got %q", err, got.String())
		}
	}
	if out := got.String(); !strings.Contains(out, "blobs file → s3") || !strings.Contains(out, "\r") {
		t.Errorf("terminal output %q has no redrawn bar", out)
	}
	if strings.Contains(got.String(), "blobs migrate: 1/10") {
		t.Errorf("terminal output has plain progress lines: %q", got.String())
	}
}
