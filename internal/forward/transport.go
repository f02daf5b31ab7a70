package forward

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"sync"
	"time"
)

// TransportOptions sets up the shared upstream transport.
type TransportOptions struct {
	// ResponseHeaderTimeout bounds the wait for the upstream's answer headers once the request has
	// been written. Zero means no bound.
	ResponseHeaderTimeout time.Duration
	// ExtraCAFile names a PEM bundle trusted for the upstream in addition to the system roots.
	// Empty means the system roots only.
	ExtraCAFile string
	// MaxConnsPerHost bounds the connections open to one Fleet API host (dialing, in use and
	// idle). It is a protection for the proxy's file descriptors, not a way to pace requests: a
	// request beyond it waits for a connection, and CountConnWaits reports how many do. Zero
	// means no bound.
	MaxConnsPerHost int
	// HTTP2 makes the transport speak HTTP/2 to an upstream that offers it in ALPN. False speaks
	// HTTP/1.1 everywhere: on every benchmark row (docs/benchmarks.md) a keep-alive pool with a
	// connection per request in flight carried more requests per second, at less CPU per
	// request, than Go's HTTP/2 client multiplexing them.
	HTTP2 bool
}

// idleConnTimeout is how long an unused upstream connection is kept. A burst's connections are
// reused by the next burst within it; after it they close, so a quiet proxy holds none.
const idleConnTimeout = 90 * time.Second

// maxIdlePerHost is how many unused HTTP/1.1 connections to one host are kept for reuse (HTTP/2
// needs a handful at most). It bounds the idle pool only, never the connections in use. It must
// hold a whole burst: with 2,000 requests in flight and 1,024 kept, every other request dialed and
// shook hands again (657 µs of CPU per request instead of 187 µs, at half the rate). Keeping one
// costs about 40 KiB until it has been idle for idleConnTimeout.
const maxIdlePerHost = 8192

// NewTransport returns the one http.Transport the proxy uses for every upstream call: a clone of
// http.DefaultTransport (so HTTPS_PROXY and NO_PROXY are honored) with explicit timeouts.
//
// By default it speaks HTTP/1.1 over as many keep-alive connections as there are requests in
// flight, and keeps them for the next burst, so no request waits behind another while the
// upstream has capacity. With o.HTTP2 it speaks HTTP/2 to an upstream that offers it in ALPN (the
// Fleet API does), multiplexing concurrent requests as streams of one connection and dialing
// another one when the server's stream limit is reached; to an upstream without h2 (a plain
// http:// loopback simulator) it still speaks HTTP/1.1.
func NewTransport(o TransportOptions) (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{
		// A Fleet API host that does not accept a connection within 5 s is not going to; fail fast
		// with 502 instead of eating the caller's whole deadline.
		Timeout:   5 * time.Second,
		KeepAlive: 30 * time.Second,
	}).DialContext
	t.TLSHandshakeTimeout = 5 * time.Second
	t.ResponseHeaderTimeout = o.ResponseHeaderTimeout
	t.ExpectContinueTimeout = time.Second
	t.MaxConnsPerHost = max(o.MaxConnsPerHost, 0)
	t.MaxIdleConnsPerHost = maxIdlePerHost
	if o.MaxConnsPerHost > 0 {
		t.MaxIdleConnsPerHost = min(maxIdlePerHost, o.MaxConnsPerHost)
	}
	// No bound across hosts: the per-host figure and the idle timeout already bound the pool.
	t.MaxIdleConns = 0
	t.IdleConnTimeout = idleConnTimeout
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(o.HTTP2)
	t.Protocols = &protocols
	t.HTTP2 = &http.HTTP2Config{
		// A connection that has said nothing for 30 s gets a PING, and is dropped when that goes
		// unanswered for 15 s, so requests are not sent into a connection a NAT has forgotten.
		SendPingTimeout: 30 * time.Second,
		PingTimeout:     15 * time.Second,
	}
	// Never add "Accept-Encoding: gzip" on the client's behalf: pass-through must send the
	// client's headers as they came and return the body bytes as the Fleet API sent them.
	t.DisableCompression = true
	if o.ExtraCAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(o.ExtraCAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream CA: %s holds no PEM certificate", o.ExtraCAFile)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	return t, nil
}

// CountConnWaits wraps rt so that onWait(+1) is called when a request starts waiting for an
// upstream connection (none idle: a dial, or the MaxConnsPerHost bound reached) and onWait(-1)
// when it has one. Wrap the transport with it only when MaxConnsPerHost is set: without a bound
// the only wait is a dial, and the trace costs an allocation per request.
func CountConnWaits(rt http.RoundTripper, onWait func(delta float64)) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		w := &connWait{onWait: onWait}
		resp, err := rt.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GetConn: w.get,
			GotConn: w.got,
		})))
		w.done()
		return resp, err
	})
}

// connWait is one request's wait for a connection. An HTTP/2 request sent on a cached
// connection reports GotConn without GetConn; done covers a request that failed before GotConn.
type connWait struct {
	onWait  func(float64)
	mu      sync.Mutex
	waiting bool
}

func (w *connWait) get(string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.waiting {
		w.waiting = true
		w.onWait(1)
	}
}

func (w *connWait) got(httptrace.GotConnInfo) { w.done() }

func (w *connWait) done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waiting {
		w.waiting = false
		w.onWait(-1)
	}
}

// dialFailed reports whether err happened before any byte of the request could have reached the
// upstream (DNS, connect, proxy connect, TLS handshake), so the request is safe to report as not
// sent.
func dialFailed(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && (op.Op == "dial" || op.Op == "proxyconnect") {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var rec tls.RecordHeaderError
	if errors.As(err, &rec) {
		return true
	}
	var verr *tls.CertificateVerificationError
	return errors.As(err, &verr)
}
