package faultproxy

import (
	"net"
	"sync"
	"testing"
)

// Blackhole is a server that accepts TCP connections and never answers,
// like a mail server whose process hangs after the kernel took the
// connection: a client waits for the greeting until its own timeout. It
// counts the connections open at once.
type Blackhole struct {
	ln net.Listener

	mu            sync.Mutex
	open, maxOpen int
	conns         []net.Conn
}

// StartBlackhole listens on a free port of 127.0.0.1 and closes every
// connection when the test ends.
func StartBlackhole(tb testing.TB) *Blackhole {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: blackhole listen: %v", err)
	}
	b := &Blackhole{ln: ln}
	go b.acceptLoop()
	tb.Cleanup(func() {
		_ = ln.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.conns {
			_ = c.Close()
		}
	})
	return b
}

// Addr returns the blackhole's host:port.
func (b *Blackhole) Addr() string { return b.ln.Addr().String() }

// Counts returns the connections open now and the most open at once.
func (b *Blackhole) Counts() (open, maxOpen int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open, b.maxOpen
}

func (b *Blackhole) acceptLoop() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.open++
		b.maxOpen = max(b.maxOpen, b.open)
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		go func() {
			_, _ = c.Read(make([]byte, 1)) // until the client gives up or sends
			_ = c.Close()
			b.mu.Lock()
			b.open--
			b.mu.Unlock()
		}()
	}
}
