package userspace

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
)

// group owns a listener's goroutines and open connections: close ends
// them all, cancels what they dial, and waits for the goroutines.
type group struct {
	mu     sync.Mutex
	open   map[io.Closer]struct{}
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context // cancelled by close; from context()
	cancel context.CancelFunc
}

// context is cancelled when the group closes: what its goroutines dial
// with.
func (g *group) context() context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx == nil {
		g.ctx, g.cancel = context.WithCancel(context.Background())
		if g.closed {
			g.cancel()
		}
	}
	return g.ctx
}

// goWith runs f on a goroutine while c is open; c is closed when f
// returns, or by close. False (and c closed) once close ran.
func (g *group) goWith(c io.Closer, f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		c.Close()
		return false
	}
	if g.open == nil {
		g.open = map[io.Closer]struct{}{}
	}
	g.open[c] = struct{}{}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer func() {
			g.mu.Lock()
			delete(g.open, c)
			g.mu.Unlock()
			c.Close()
		}()
		f()
	}()
	return true
}

// close closes every open connection (and listener) and waits for their
// goroutines.
func (g *group) close() {
	g.mu.Lock()
	g.closed = true
	if g.cancel != nil {
		g.cancel()
	}
	for c := range g.open {
		c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// acceptLoop serves each connection ln accepts with handle, in g.
func (g *group) acceptLoop(log *slog.Logger, what string, ln net.Listener, handle func(net.Conn)) {
	g.goWith(ln, func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				log.Debug(what+" stopped accepting", "err", err)
				return
			}
			g.goWith(c, func() { handle(c) })
		}
	})
}
