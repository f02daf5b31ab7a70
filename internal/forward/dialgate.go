package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
)

// Until an HTTP/2 connection to a host is up, Go's transport dials one for every request that
// waits, and closes all but one of them once they have shaken hands. A burst of 2,000 requests
// at a proxy that has just started (or whose connections were idle-closed) then costs 2,000 TLS
// handshakes to the Fleet API for the handful of connections that 2,000 streams need: seconds of
// CPU, and the handshakes' state for all of them at once in the heap (the reference's live heap
// reached 93 MB in the benchmark's 2,000-connection row, against 50 MB after the burst).
//
// dialGate lets a few dials to a host run at once, holds the others back, and drops a held dial
// once the request it was started for has been given a connection after all (the transport hands
// a new HTTP/2 connection to every request waiting for one). A request that still has none when a
// place is free dials as before, so no request waits for more than the dials ahead of it.
const (
	// DefaultMaxDialsPerHost is how many dials to one host run at once (-upstream-max-dials).
	// Each new HTTP/2 connection carries the server's stream limit (100 or more), so four at once
	// open room for hundreds of requests per round trip.
	DefaultMaxDialsPerHost = 4
	// dialSettle is how long a held dial waits after another dial to its host ended before it
	// starts: the time the transport takes to hand the new connection to the waiting requests.
	dialSettle = 5 * time.Millisecond
)

// errDialNotNeeded ends a held dial whose request has a connection: the transport drops the
// error, since nothing waits for that dial any more.
var errDialNotNeeded = errors.New("forward: dial not needed, the request has a connection")

type dialGate struct {
	max    int
	onHeld func(delta float64) // nil: not counted
	mu     sync.Mutex
	hosts  map[string]*gateHost
}

// gateHost is the dialing to one host. Hosts are Fleet API hosts, so the map stays small.
type gateHost struct {
	dialing int
	// lastEnd is when the last dial ended; changed is closed and replaced when one does.
	lastEnd time.Time
	changed chan struct{}
	// noH2 is set once a connection to the host has not negotiated HTTP/2: every request then
	// needs a connection of its own, and no dial is held back.
	noH2 bool
}

// wantKey is the context key of a request's *connWant.
type wantKey struct{}

// connWant says whether a request has a connection: set by its GotConn, cleared by its GetConn
// (a retry after a failed attempt looks for a connection again).
type connWant struct{ got atomic.Bool }

// SkipRedundantDials wraps the HTTP/2 transport so that its dials can tell when the request they
// were started for no longer needs them (see dialGate). Use it on the transport made with
// TransportOptions.HTTP2; on any other it only costs a trace per request.
func SkipRedundantDials(rt http.RoundTripper) http.RoundTripper {
	return &wantTracker{next: rt}
}

type wantTracker struct{ next http.RoundTripper }

// RoundTrip marks req with a connWant that its connection trace keeps current.
func (wt *wantTracker) RoundTrip(req *http.Request) (*http.Response, error) {
	w := new(connWant)
	ctx := context.WithValue(req.Context(), wantKey{}, w)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) { w.got.Store(false) },
		GotConn: func(httptrace.GotConnInfo) { w.got.Store(true) },
	})
	return wt.next.RoundTrip(req.WithContext(ctx))
}

// CloseIdleConnections closes the wrapped transport's idle connections.
func (wt *wantTracker) CloseIdleConnections() {
	if c, ok := wt.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// wrap returns dial behind the gate.
func (g *dialGate) wrap(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		w, _ := ctx.Value(wantKey{}).(*connWant)
		if err := g.acquire(ctx, addr, w); err != nil {
			return nil, err
		}
		c, err := dial(ctx, network, addr)
		g.release(addr, c)
		return c, err
	}
}

// acquire waits for a place to dial addr, and fails with errDialNotNeeded when w's request has
// found a connection in the meantime.
func (g *dialGate) acquire(ctx context.Context, addr string, w *connWant) error {
	held := false
	defer func() {
		if held && g.onHeld != nil {
			g.onHeld(-1)
		}
	}()
	for {
		if w != nil && w.got.Load() {
			return errDialNotNeeded
		}
		g.mu.Lock()
		h := g.host(addr)
		if h.noH2 || (h.dialing < g.max && time.Since(h.lastEnd) >= dialSettle) {
			h.dialing++
			g.mu.Unlock()
			return nil
		}
		wait, changed := time.Duration(0), h.changed
		if h.dialing < g.max {
			wait = dialSettle - time.Since(h.lastEnd)
		}
		g.mu.Unlock()
		if !held && g.onHeld != nil {
			g.onHeld(1)
		}
		held = true
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return context.Cause(ctx)
			}
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// release ends a dial to addr; c is its connection, or nil when it failed.
func (g *dialGate) release(addr string, c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.host(addr)
	h.dialing--
	h.lastEnd = time.Now()
	if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol != "h2" {
		h.noH2 = true
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// host returns addr's state; g.mu must be held.
func (g *dialGate) host(addr string) *gateHost {
	h := g.hosts[addr]
	if h == nil {
		if g.hosts == nil {
			g.hosts = make(map[string]*gateHost)
		}
		h = &gateHost{changed: make(chan struct{})}
		g.hosts[addr] = h
	}
	return h
}
