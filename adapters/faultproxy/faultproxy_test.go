package faultproxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/faultproxy"
)

// payload is what the target sends on every connection: large enough to
// span several reads.
var payload = func() []byte {
	b := make([]byte, 200_000)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

// startTarget starts a server that, per connection, waits for a line
// ("GET\n"), answers with payload and then echoes any further lines.
func startTarget(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	var mu sync.Mutex
	var conns []net.Conn
	tb.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = c.Close() }()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					out := []byte(line)
					if line == "GET\n" {
						out = payload
					}
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// get asks for the payload and reads until EOF or len(payload) bytes.
func get(t *testing.T, addr string) ([]byte, error) {
	t.Helper()
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET\n"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, len(payload))
	buf := make([]byte, 8192)
	for len(got) < len(payload) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

func TestProxy_ForwardsUntouchedWithoutFaults(t *testing.T) {
	t.Parallel()
	p := faultproxy.Start(t, startTarget(t))
	got, err := get(t, p.Addr())
	if err != nil {
		t.Fatalf("read through proxy: %v after %d bytes", err, len(got))
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("got %d bytes, not the payload of %d", len(got), len(payload))
	}
	if p.Connections() != 1 || p.Cuts() != 0 {
		t.Errorf("Connections() = %d, Cuts() = %d, want 1, 0", p.Connections(), p.Cuts())
	}
}

func TestProxy_CutAfterBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		n    int64
	}{
		{"cut inside the first read", 1000},
		{"cut after several reads", 100_000},
		{"cut before the first byte", 0},
		{"cut exactly at the end", int64(len(payload))},
	}
	target := startTarget(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := faultproxy.Start(t, target)
			p.CutAfterBytes(tc.n)
			c := dial(t, p.Addr())
			if _, err := io.WriteString(c, "GET\n"); err != nil {
				t.Fatal(err)
			}
			// Without the cut the target keeps the connection open and
			// ReadAll ends with the deadline's error instead of EOF.
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("ReadAll = %d bytes, %v; want EOF after %d bytes", len(got), err, tc.n)
			}
			if !bytes.Equal(got, payload[:tc.n]) {
				t.Errorf("got %d bytes before the cut, want the first %d of the payload", len(got), tc.n)
			}
			if p.Cuts() != 1 {
				t.Errorf("Cuts() = %d, want 1", p.Cuts())
			}
		})
	}
}

func TestProxy_ResetRestoresService(t *testing.T) {
	t.Parallel()
	p := faultproxy.Start(t, startTarget(t))
	p.CutAfterBytes(5000)
	if got, err := get(t, p.Addr()); err == nil || len(got) != 5000 {
		t.Fatalf("with fault: %d bytes, err %v; want 5000 bytes and EOF", len(got), err)
	}
	p.Reset()
	got, err := get(t, p.Addr())
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("after Reset: %d bytes, err %v; want the whole payload", len(got), err)
	}
	if p.Connections() != 2 {
		t.Errorf("Connections() = %d, want 2", p.Connections())
	}
}

func TestProxy_CutAll(t *testing.T) {
	t.Parallel()
	p := faultproxy.Start(t, startTarget(t))
	c1, c2 := dial(t, p.Addr()), dial(t, p.Addr())
	for _, c := range []net.Conn{c1, c2} {
		// A round trip proves the connection is up before the cut.
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("echo = %q, %v", line, err)
		}
	}
	if p.Open() != 2 {
		t.Fatalf("Open() = %d, want 2", p.Open())
	}
	p.CutAll()
	for i, c := range []net.Conn{c1, c2} {
		if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("conn %d: Read after CutAll = %d, %v; want EOF", i, n, err)
		}
	}
	if p.Cuts() != 2 {
		t.Errorf("Cuts() = %d, want 2", p.Cuts())
	}
	// New connections still work.
	got, err := get(t, p.Addr())
	if err != nil || len(got) != len(payload) {
		t.Errorf("after CutAll: %d bytes, %v", len(got), err)
	}
	if p.Connections() != 3 {
		t.Errorf("Connections() = %d, want 3", p.Connections())
	}
}

func TestProxy_UnreachableTargetClosesClient(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	_ = ln.Close()
	p := faultproxy.Start(t, target)
	c := dial(t, p.Addr())
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("Read through a proxy to a closed port succeeded")
	}
}

func TestProxy_StopClosesEverything(t *testing.T) {
	t.Parallel()
	p := faultproxy.Start(t, startTarget(t))
	c := dial(t, p.Addr())
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	p.Stop()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("Read after Stop = %v, want EOF", err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		_ = c.Close()
		t.Error("proxy still accepts after Stop")
	}
	if p.Open() != 0 {
		t.Errorf("Open() after Stop = %d, want 0", p.Open())
	}
	p.Stop() // twice is harmless
}

func TestBlackhole_AcceptsNeverAnswersAndCounts(t *testing.T) {
	t.Parallel()
	b := faultproxy.StartBlackhole(t)
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	_ = conns[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := conns[0].Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("Read() = %d, %v; want nothing until the deadline", n, err)
	}
	waitCounts := func(wantOpen, wantMax int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			open, maxOpen := b.Counts()
			if open == wantOpen && maxOpen == wantMax {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Counts() = %d, %d; want %d, %d", open, maxOpen, wantOpen, wantMax)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitCounts(3, 3)
	_ = conns[1].Close()
	waitCounts(2, 3)
	for _, c := range conns {
		_ = c.Close()
	}
}

func TestProxy_HoldOnStopsTheCommandThatCarriesThePattern(t *testing.T) {
	t.Parallel()
	p := faultproxy.Start(t, startTarget(t))
	c := dial(t, p.Addr())
	r := bufio.NewReader(c)
	echo := func(line string) (string, error) {
		if _, err := io.WriteString(c, line); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		return r.ReadString('\n')
	}
	if got, err := echo("a1 NOOP\n"); err != nil || got != "a1 NOOP\n" {
		t.Fatalf("before the hold: echo = %q, %v", got, err)
	}
	p.HoldOn([]byte("UID MOVE"))
	if got, err := echo("a2 NOOP\n"); err != nil || got != "a2 NOOP\n" {
		t.Fatalf("other commands pass: echo = %q, %v", got, err)
	}
	if got, err := echo("a3 UID MOVE 1:5 Trash\n"); err == nil {
		t.Errorf("the held command was answered: %q", got)
	}
	select {
	case <-p.Held():
	case <-time.After(5 * time.Second):
		t.Fatal("Held() did not signal")
	}
}
