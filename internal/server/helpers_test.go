package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/teslaproxy/proxy/internal/certgen"
	"github.com/teslaproxy/proxy/internal/forward"
)

// testCert returns a certificate for the given names (and 127.0.0.1, ::1), self-signed, and a
// pool that trusts it.
func testCert(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	cert, pool, err := certgen.SelfSigned(names...)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pool
}

// startTLS starts handler on a loopback TLS server with a certificate for names.
func startTLS(t testing.TB, handler http.Handler, names ...string) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	cert, pool := testCert(t, names...)
	ts := httptest.NewUnstartedServer(handler)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts, pool
}

// dialRecorder sends every upstream connection to one loopback address and records the host
// the proxy asked for, so region choice is tested without dialing anything real.
type dialRecorder struct {
	target string
	mu     sync.Mutex
	hosts  []string
}

func (d *dialRecorder) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	d.mu.Lock()
	d.hosts = append(d.hosts, host)
	d.mu.Unlock()
	var dialer net.Dialer
	return dialer.DialContext(ctx, "tcp", d.target)
}

func (d *dialRecorder) Hosts() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.hosts...)
}

// proxyEnv is a running proxy (router over real TLS) in front of an upstream.
type proxyEnv struct {
	URL    string
	Client *http.Client
	Fwd    *forward.Forwarder
	Server *httptest.Server
}

type envOptions struct {
	fixed     *url.URL       // fixed upstream; nil = by token
	pool      *x509.CertPool // trusted upstream roots
	dial      *dialRecorder  // redirect every dial (for by-token tests)
	timeout   time.Duration  // upstream timeout
	idle      time.Duration  // pass-through idle timeout
	logger    *zap.Logger    // nil = zaptest logger
	telemetry func(*forward.Forwarder) http.Handler
	observe   func(route string, status int, seconds float64)
}

func startProxy(t testing.TB, o envOptions) *proxyEnv {
	t.Helper()
	log := o.logger
	if log == nil {
		log = zaptest.NewLogger(t)
	}
	if o.timeout == 0 {
		o.timeout = 5 * time.Second
	}
	tr, err := forward.NewTransport(forward.TransportOptions{ResponseHeaderTimeout: o.timeout})
	if err != nil {
		t.Fatal(err)
	}
	tr.TLSClientConfig.RootCAs = o.pool
	tr.Proxy = nil
	if o.dial != nil {
		tr.DialContext = o.dial.DialContext
	}
	t.Cleanup(tr.CloseIdleConnections)
	fwd, err := forward.New(forward.Options{Upstream: o.fixed, Transport: tr, Timeout: o.timeout, IdleTimeout: o.idle, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{Logger: log, Forward: fwd, PublicKeyPEM: []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")}
	deps.Observe = o.observe
	if o.telemetry != nil {
		deps.Telemetry = o.telemetry(fwd)
	}
	cert, pool := testCert(t)
	ts := httptest.NewUnstartedServer(nil)
	// Serve with the same hardened http.Server settings the proxy runs with.
	ts.Config = NewHTTPServer(Options{Handler: NewRouter(deps), Logger: log, UpstreamTimeout: o.timeout})
	ts.EnableHTTP2 = true
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	// DisableCompression: the client sends no Accept-Encoding, so a test can see that the proxy
	// adds none either.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)
	return &proxyEnv{URL: ts.URL, Client: client, Fwd: fwd, Server: ts}
}

// jwt returns a JWT-shaped bearer token with the given claims (unsigned: the proxy never
// verifies tokens, the Fleet API does).
func jwt(t testing.TB, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}
