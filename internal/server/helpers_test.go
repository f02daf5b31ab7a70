package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// proxyEnv is a running proxy (router over real TLS) in front of an upstream.
type proxyEnv struct {
	URL    string
	Client *http.Client
}

type envOptions struct {
	fixed     *url.URL              // fixed upstream; nil = by token
	pool      *x509.CertPool        // trusted upstream roots
	dial      *testenv.DialRecorder // redirect every dial (for by-token tests)
	timeout   time.Duration         // upstream timeout
	idle      time.Duration         // pass-through idle timeout
	maxConns  int                   // upstream connections per host; 0 = no bound
	clientMax int                   // pass-through requests in flight per token; 0 = no bound
	http2     bool                  // speak HTTP/2 to the upstream (it offers h2)
	overflow  int                   // HTTP/1.1 for this many requests in flight, HTTP/2 beyond (as the proxy runs)
	logger    *zap.Logger           // nil = zaptest logger
	telemetry func(*forward.Forwarder) http.Handler
	commands  func(*forward.Forwarder) http.Handler
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
	tr := testenv.UpstreamTransport(t, o.timeout, o.pool)
	if o.dial != nil {
		tr.DialContext = o.dial.DialContext
	}
	tr.MaxConnsPerHost = o.maxConns
	if o.http2 {
		h2, err := forward.NewTransport(forward.TransportOptions{ResponseHeaderTimeout: o.timeout, MaxConnsPerHost: o.maxConns, HTTP2: true, MaxDialsPerHost: forward.DefaultMaxDialsPerHost})
		if err != nil {
			t.Fatal(err)
		}
		h2.TLSClientConfig.RootCAs, h2.Proxy = o.pool, nil
		t.Cleanup(h2.CloseIdleConnections)
		tr = h2
	}
	var rt http.RoundTripper = tr
	if o.overflow > 0 {
		h2, err := forward.NewTransport(forward.TransportOptions{ResponseHeaderTimeout: o.timeout, MaxConnsPerHost: o.maxConns, HTTP2: true, MaxDialsPerHost: forward.DefaultMaxDialsPerHost})
		if err != nil {
			t.Fatal(err)
		}
		h2.TLSClientConfig.RootCAs, h2.Proxy = o.pool, nil
		t.Cleanup(h2.CloseIdleConnections)
		// Hundreds of upstream handshakes at once under -race on a busy machine can take longer
		// than the production 5 s; the tests that use this are about what happens after.
		for _, t := range []*http.Transport{tr, h2} {
			t.TLSHandshakeTimeout = max(t.TLSHandshakeTimeout, o.timeout)
		}
		rt = forward.Overflow(tr, h2, o.overflow)
	}
	fwd, err := forward.New(forward.Options{Upstream: o.fixed, Transport: rt, Timeout: o.timeout, IdleTimeout: o.idle, MaxClientInFlight: o.clientMax, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	deps := server.Deps{Logger: log, Forward: fwd, PublicKeyPEM: []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")}
	deps.Observe = o.observe
	if o.telemetry != nil {
		deps.Telemetry = o.telemetry(fwd)
	}
	if o.commands != nil {
		deps.Commands = o.commands(fwd)
	}
	// Serve with the same hardened http.Server settings the proxy runs with.
	ts, pool := testenv.StartServerTLS(t, server.NewHTTPServer(server.Options{Handler: server.NewRouter(deps), Logger: log, UpstreamTimeout: o.timeout}))
	// DisableCompression: the client sends no Accept-Encoding, so a test can see that the proxy
	// adds none either.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)
	return &proxyEnv{URL: ts.URL, Client: client}
}

// do sends req through the proxy's client and returns the answer with its body read.
func (e *proxyEnv) do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}
