package forward

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// DefaultHTTP1Requests is how many requests in flight to one Fleet API host Overflow carries over
// HTTP/1.1 before it sends the rest as HTTP/2 streams. Below it, a keep-alive connection per
// request costs the least CPU per request (docs/benchmarks.md, 64 connections); above it, each
// HTTP/1.1 connection's two goroutines and buffers (about 30 KiB) add up, while an HTTP/2 stream
// costs a few hundred bytes.
const DefaultHTTP1Requests = 256

// Overflow returns a RoundTripper that sends each request over h1 while fewer than limit requests
// to the same host are in flight on it, and over h2 otherwise. h1 should speak HTTP/1.1 and h2
// should offer HTTP/2 (NewTransport with HTTP2 set); to an upstream that offers no h2 the second
// transport speaks HTTP/1.1 as well, so requests still never wait for one another.
//
// A request counts as in flight on h1 until its answer's body is closed, since until then it
// holds its connection.
func Overflow(h1, h2 http.RoundTripper, limit int) http.RoundTripper {
	return &overflow{h1: h1, h2: h2, limit: int64(limit)}
}

type overflow struct {
	h1, h2 http.RoundTripper
	limit  int64
	// busy maps a host to the requests in flight to it over h1. Hosts are Fleet API hosts (the
	// fixed upstream or a known region's), so the map stays a handful of entries.
	busy sync.Map // string → *atomic.Int64
}

// RoundTrip sends req over h1 while the host has fewer than limit requests in flight there, and
// over h2 otherwise.
func (o *overflow) RoundTrip(req *http.Request) (*http.Response, error) {
	v, ok := o.busy.Load(req.URL.Host)
	if !ok {
		v, _ = o.busy.LoadOrStore(req.URL.Host, new(atomic.Int64))
	}
	n := v.(*atomic.Int64)
	if n.Add(1) > o.limit {
		n.Add(-1)
		return o.h2.RoundTrip(req)
	}
	resp, err := o.h1.RoundTrip(req)
	// A 101 hands the connection over (the body is then the connection itself, and must stay
	// writable): it no longer carries requests, so it is not counted.
	if err != nil || resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusSwitchingProtocols {
		n.Add(-1)
		return resp, err
	}
	resp.Body = &releaseOnClose{ReadCloser: resp.Body, release: func() { n.Add(-1) }}
	return resp, nil
}

// releaseOnClose calls release once, when the body is closed.
type releaseOnClose struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

// Close closes the body and releases the request's place on HTTP/1.1, once.
func (b *releaseOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// CloseIdleConnections closes both transports' idle connections.
func (o *overflow) CloseIdleConnections() {
	for _, rt := range []http.RoundTripper{o.h1, o.h2} {
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}
