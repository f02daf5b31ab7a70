package forward

import (
	"context"
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
	// MaxDialsPerHost bounds the dials in progress to one host when HTTP2 is set (see
	// dialGate); 0 means no bound. OnDialHeld, when not nil, is called with +1 when a dial starts
	// waiting and -1 when it stops.
	MaxDialsPerHost int
	OnDialHeld      func(delta float64)
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
		if err := trustExtraCA(t, o.ExtraCAFile); err != nil {
			return nil, err
		}
	}
	// Through an outbound proxy the transport shakes hands itself, after CONNECT; the gate is for
	// the direct path, where a burst would otherwise dial the Fleet API once per waiting request.
	if o.HTTP2 && o.MaxDialsPerHost > 0 && !proxyInEnv() {
		if t.DialTLSContext == nil {
			t.DialTLSContext = dialTLS(t, nil)
		}
		t.DialTLSContext = (&dialGate{max: o.MaxDialsPerHost, onHeld: o.OnDialHeld}).wrap(t.DialTLSContext)
	}
	return t, nil
}

// proxyInEnv reports whether HTTPS_PROXY sends upstream calls through an outbound proxy.
func proxyInEnv() bool { return os.Getenv("HTTPS_PROXY") != "" || os.Getenv("https_proxy") != "" }

// trustExtraCA makes t trust the PEM bundle in file for the upstream, besides the system roots.
//
// The direct path shakes hands in t.DialTLSContext and tries the bundle first: the system roots
// (about 5 MiB of parsed certificates, a quarter of an idle proxy's memory) are loaded only when a
// chain does not lead to the bundle, so an upstream with the operator's own certificate (the
// simulator, a private gateway) never needs them. Through an HTTPS proxy the transport shakes hands
// itself, with TLSClientConfig, so there the bundle is added to the system roots up front.
func trustExtraCA(t *http.Transport, file string) error {
	pem, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("upstream CA: %w", err)
	}
	extra := x509.NewCertPool()
	if !extra.AppendCertsFromPEM(pem) {
		return fmt.Errorf("upstream CA: %s holds no PEM certificate", file)
	}
	t.DialTLSContext = dialTLS(t, extra)
	if !proxyInEnv() {
		return nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pool.AppendCertsFromPEM(pem)
	t.TLSClientConfig.RootCAs = pool
	return nil
}

// dialTLS returns a DialTLSContext for t: t.DialContext, then a handshake with a clone of
// t.TLSClientConfig (both read at each dial, so later changes to t apply) within
// t.TLSHandshakeTimeout. With extra, and unless that config names its own RootCAs, the server's
// chain is checked by verifyChain against extra, then the system roots; without extra, crypto/tls
// checks it as the transport would. ALPN comes from the config as the transport set it up, so
// HTTP/2 is negotiated as without the hook.
func dialTLS(t *http.Transport, extra *x509.CertPool) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		raw, err := t.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := t.TLSClientConfig.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		if extra != nil && cfg.RootCAs == nil {
			// Go's own check would use the system roots only; verifyChain does the whole check
			// (chain and name) itself.
			cfg.InsecureSkipVerify = true //nolint:gosec // G402: verifyChain checks the chain and the name
			cfg.VerifyConnection = verifyChain(cfg.ServerName, extra)
		}
		if t.TLSHandshakeTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t.TLSHandshakeTimeout)
			defer cancel()
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		return tc, nil
	}
}

// verifyChain checks that the server's certificate is valid for name and chains to extra or, if
// it does not, to the system roots.
func verifyChain(name string, extra *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		certs := cs.PeerCertificates
		if len(certs) == 0 {
			return errors.New("tls: the upstream sent no certificate")
		}
		opts := x509.VerifyOptions{DNSName: name, Roots: extra, Intermediates: x509.NewCertPool()}
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
		_, err := certs[0].Verify(opts)
		var wrongName x509.HostnameError
		if err != nil && !errors.As(err, &wrongName) {
			opts.Roots = nil // the system roots, loaded by crypto/x509 on first use
			_, err = certs[0].Verify(opts)
		}
		if err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
		}
		return nil
	}
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
