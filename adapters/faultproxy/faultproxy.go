// Package faultproxy is a TCP proxy for tests that breaks connections on
// purpose: it forwards 127.0.0.1:<port> to a target (a test Dovecot, a fake
// server) and can drop connections mid-stream, to prove that a client
// survives a download cut halfway through a mail.
package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// MaxConns bounds the connections open at once; more are accepted and
	// closed at once, so a runaway client cannot exhaust the test machine.
	MaxConns = 256
	// dialTimeout bounds connecting to the target.
	dialTimeout = 5 * time.Second
	bufSize     = 32 << 10
)

// Proxy forwards every connection accepted on Addr to its target. Its
// methods may be called from any goroutine.
type Proxy struct {
	tb     testing.TB
	ln     net.Listener
	target string

	// cutAfter is the server->client byte count after which connections
	// are dropped; negative means never.
	cutAfter atomic.Int64
	accepted atomic.Int64
	cuts     atomic.Int64
	// hold is the client->server byte string HoldOn waits for; nil: none.
	hold atomic.Pointer[[]byte]
	held chan struct{} // gets a value each time a connection is held
	// fromClient counts the bytes forwarded client->server.
	fromClient atomic.Int64

	mu      sync.Mutex
	conns   map[*conn]struct{}
	stopped bool
	wg      sync.WaitGroup // accept loop and connection goroutines
}

// Start starts a proxy on 127.0.0.1 (a free port) to target (host:port) and
// stops it when the test ends. No fault is active until one is set.
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{tb: tb, ln: ln, target: target, conns: map[*conn]struct{}{}, held: make(chan struct{}, MaxConns)}
	p.cutAfter.Store(-1)
	p.wg.Add(1)
	go p.acceptLoop()
	tb.Cleanup(p.Stop)
	return p
}

// Addr returns the proxy's host:port; clients dial it instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// CutAfterBytes makes the proxy drop every connection, current and future,
// once it has forwarded n bytes from the server to the client over that
// connection: the client receives exactly the first n bytes, then EOF.
// A connection already past n is dropped when the server next sends. A
// negative n turns the fault off.
func (p *Proxy) CutAfterBytes(n int64) {
	if n < 0 {
		n = -1
	}
	p.cutAfter.Store(n)
}

// CutAll drops all current connections at once; new connections work.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	cs := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		p.cuts.Add(1)
		c.close()
	}
}

// HoldOn makes the proxy stop forwarding a client's bytes, on every
// connection, from the read that contains pattern on (that read included):
// the command that carries it never reaches the server, and the
// connection hangs until it is closed. Held signals each hold, so that a
// test can act (kill the client) at exactly that step.
func (p *Proxy) HoldOn(pattern []byte) {
	pat := append([]byte(nil), pattern...)
	p.hold.Store(&pat)
}

// Held receives a value each time a connection is held (HoldOn).
func (p *Proxy) Held() <-chan struct{} { return p.held }

// Reset turns all faults off. Open connections stay open and the counters
// keep counting.
func (p *Proxy) Reset() {
	p.cutAfter.Store(-1)
	p.hold.Store(nil)
}

// Connections returns how many client connections the proxy has accepted
// since Start, including ones it dropped; a test sees from it whether a
// client reconnected.
func (p *Proxy) Connections() int { return int(p.accepted.Load()) }

// Open returns how many connections are open now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// ClientBytes returns how many bytes the proxy has forwarded from clients
// to the target since Start, over all connections: a test sees from it
// whether a client that should only be waiting sent anything (an IMAP IDLE
// renewal).
func (p *Proxy) ClientBytes() int64 { return p.fromClient.Load() }

// Cuts returns how many connections a fault has dropped (CutAfterBytes or
// CutAll), so a test can check that its fault really happened.
func (p *Proxy) Cuts() int { return int(p.cuts.Load()) }

// Stop closes the listener and all connections and waits for the proxy's
// goroutines. It is registered with tb.Cleanup by Start; calling it again
// is harmless.
func (p *Proxy) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	cs := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range cs {
		c.close()
	}
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary trouble (e.g. out of file descriptors): back off.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.accepted.Add(1)
		c := &conn{client: client}
		p.mu.Lock()
		if p.stopped || len(p.conns) >= MaxConns {
			p.mu.Unlock()
			_ = client.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

// serve connects c to the target and copies both ways until either side
// ends or a fault drops it.
func (p *Proxy) serve(c *conn) {
	defer p.wg.Done()
	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	server, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		p.tb.Logf("faultproxy: dial target %s: %v", p.target, err)
		return
	}
	if !c.setServer(server) {
		_ = server.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.toServer(c)
		c.close()
	}()
	p.toClient(c)
	c.close()
	<-done
}

// toServer copies client->server, enforcing HoldOn. A pattern split over
// two reads is found too: the end of the previous read is searched with
// the next one.
func (p *Proxy) toServer(c *conn) {
	buf := make([]byte, bufSize)
	var tail []byte
	for {
		n, rerr := c.client.Read(buf)
		if n > 0 {
			if pat := p.hold.Load(); pat != nil && len(*pat) > 0 {
				window := append(tail, buf[:n]...)
				if bytes.Contains(window, *pat) {
					select {
					case p.held <- struct{}{}:
					default:
					}
					_, _ = io.Copy(io.Discard, c.client) // until the client goes away
					return
				}
				tail = append(tail[:0], window[max(0, len(window)-len(*pat)):]...)
			}
			written, err := c.server.Write(buf[:n])
			p.fromClient.Add(int64(written))
			if err != nil {
				return
			}
		}
		if rerr != nil {
			return
		}
	}
}

// toClient copies server->client, enforcing CutAfterBytes.
func (p *Proxy) toClient(c *conn) {
	buf := make([]byte, bufSize)
	var sent int64
	for {
		n, rerr := c.server.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			limit := p.cutAfter.Load()
			cut := limit >= 0 && sent+int64(n) >= limit
			if cut {
				chunk = buf[:max(0, limit-sent)]
			}
			if len(chunk) > 0 {
				if _, err := c.client.Write(chunk); err != nil {
					return
				}
				sent += int64(len(chunk))
			}
			if cut {
				p.cuts.Add(1)
				return
			}
		}
		if rerr != nil {
			return
		}
	}
}

// conn is one proxied connection.
type conn struct {
	client net.Conn
	mu     sync.Mutex
	server net.Conn
	closed bool
}

// setServer attaches the target connection; false if c was closed while
// dialing.
func (c *conn) setServer(s net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.server = s
	return true
}

// close closes both sides; the client sees EOF after the bytes already
// forwarded.
func (c *conn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	_ = c.client.Close()
	if c.server != nil {
		_ = c.server.Close()
	}
}
