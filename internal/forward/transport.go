package forward

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
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
}

// NewTransport returns the one http.Transport the proxy uses for every upstream call: a clone of
// http.DefaultTransport (so HTTPS_PROXY and NO_PROXY are honoured) with explicit timeouts.
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
	// HTTP/1.1 carries one request per connection at a time. Keep every connection a burst
	// opened (closing the ones over an idle limit and dialing again on the next burst cost a TLS
	// handshake per request: at 1,000 concurrent requests, twice the CPU per request), and beyond
	// MaxConnsPerHost let requests wait for a free one rather than open more. Fleet API answers
	// are small and quick, so a wait is short.
	t.MaxConnsPerHost = 512
	t.MaxIdleConnsPerHost = 512
	t.MaxIdleConns = 1024
	t.IdleConnTimeout = 90 * time.Second
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	// HTTP/1.1 to the Fleet API, over a pool of keep-alive connections: Go's HTTP/2 client
	// multiplexes every request onto one connection through a single writer and reader, which
	// under concurrent load cost more CPU per request than the whole rest of the proxy
	// (measured with bench/: 175 µs per request through the in-process handler with HTTP/2,
	// 86 µs with HTTP/1.1). The Fleet API serves both.
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
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
