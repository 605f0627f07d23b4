package ingest

import (
	"context"
	"sync"
)

// pollSlots bounds the polls running at once, overall and per mail server.
// A poll first takes its server's slot, then a global one, so polls queued
// behind a server that does not answer wait without holding global slots.
type pollSlots struct {
	global    chan struct{}
	perServer int

	mu      sync.Mutex
	servers map[string]*serverSlots
}

// serverSlots is one server's semaphore; users counts the polls holding
// or waiting for it, and the entry goes when none is left, so the map
// does not keep every server ever polled.
type serverSlots struct {
	sem   chan struct{}
	users int
}

func newPollSlots(total, perServer int) *pollSlots {
	return &pollSlots{global: make(chan struct{}, total), perServer: perServer, servers: map[string]*serverSlots{}}
}

// acquire waits for a slot of server and a global one; release gives both
// back. It fails only when ctx is done first.
func (p *pollSlots) acquire(ctx context.Context, server string) (release func(), err error) {
	p.mu.Lock()
	srv := p.servers[server]
	if srv == nil {
		srv = &serverSlots{sem: make(chan struct{}, p.perServer)}
		p.servers[server] = srv
	}
	srv.users++
	p.mu.Unlock()
	leave := func() {
		p.mu.Lock()
		if srv.users--; srv.users == 0 {
			delete(p.servers, server)
		}
		p.mu.Unlock()
	}
	select {
	case srv.sem <- struct{}{}:
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
	select {
	case p.global <- struct{}{}:
	case <-ctx.Done():
		<-srv.sem
		leave()
		return nil, ctx.Err()
	}
	return func() {
		<-p.global
		<-srv.sem
		leave()
	}, nil
}

// serverKey is the key of a's server for the per-server limit.
func serverKey(a Account) string {
	if a.Server == "" {
		return "account:" + a.ID
	}
	return "server:" + a.Server
}
