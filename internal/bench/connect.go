package bench

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// RunID returns a short random id that names the users of one run, so that
// runs against the same server never share a user.
func RunID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "b" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:6]
}

// DialAll makes n connections, at most concurrency at a time, with the
// options opts(i) gives for connection i. It stops at the first failure,
// closes what it opened and returns the error. done (if not nil) counts the
// connections made.
func DialAll(ctx context.Context, n, concurrency int, opts func(i int) DialOptions, done *atomic.Int64) ([]*Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := make([]*Conn, n)
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for range max(min(concurrency, n), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := Dial(ctx, opts(i))
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("connection %d of %d: %w", i+1, n, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				conns[i] = c
				if done != nil {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		CloseAll(conns)
		return nil, first
	}
	return conns, nil
}

// CloseAll closes every non-nil connection.
func CloseAll(conns []*Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// sourceIP picks the source address of connection i (round robin; zero if none).
func sourceIP(ips []netip.Addr, i int) netip.Addr {
	if len(ips) == 0 {
		return netip.Addr{}
	}
	return ips[i%len(ips)]
}
