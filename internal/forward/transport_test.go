package forward_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/certgen"
	"github.com/teslaproxy/proxy/internal/forward"
)

// unsignedToken returns a JWT-shaped bearer token with the given claims (the proxy never checks
// signatures; the Fleet API does).
func unsignedToken(claims string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".c2lnbmF0dXJl"
}

// inFlight is more requests than any upstream pool default held at once: more than the 512
// HTTP/1.1 connections the proxy used to cap itself at, and four times the 250 streams a Go
// HTTP/2 server allows on one connection, so HTTP/2 must open more connections as streams run out.
const inFlight = 1000

// gate is an upstream handler that answers nobody until n requests are inside it at once. If the
// proxy's transport made any request wait for another to finish (a connection cap, a stream limit
// it respects by queueing), the count never reaches n and every request ends at the test's deadline.
type gate struct {
	n        int64
	inside   atomic.Int64
	peak     atomic.Int64
	h2       atomic.Int64
	open     chan struct{}
	openOnce sync.Once
}

func newGate(n int64) *gate { return &gate{n: n, open: make(chan struct{})} }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		g.h2.Add(1)
	}
	_, _ = io.Copy(io.Discard, r.Body)
	now := g.inside.Add(1)
	defer g.inside.Add(-1)
	for {
		p := g.peak.Load()
		if now <= p || g.peak.CompareAndSwap(p, now) {
			break
		}
	}
	if now >= g.n {
		g.openOnce.Do(func() { close(g.open) })
	}
	select {
	case <-g.open:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"response":{"result":true,"reason":""}}`)
}

// TestRequestsInFlightReachTheUpstreamTogether sends inFlight requests at once through the
// proxy's pass-through and its own-request client (Call) to an upstream that holds every one of
// them until all are there: by default over HTTP/1.1 (to a TLS upstream that offers h2 too, and to
// a plain http:// loopback upstream), and with HTTP2 set over HTTP/2 to the TLS upstream. It
// asserts the count at the upstream, and the protocol that arrived, not any duration.
func TestRequestsInFlightReachTheUpstreamTogether(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tls    bool
		http2  bool
		wantH2 bool
		// n is how many requests are sent at once: inFlight, or to a TLS upstream a number still
		// above the 512 connections the proxy used to cap itself at and twice the 250 streams of
		// one HTTP/2 connection. There, until a connection is up, every waiting request dials
		// one of its own: a thousand TLS handshakes at once under -race on two cores, beside the
		// other packages' tests, left some HTTP/2 connections without their SETTINGS frame for
		// the test server's fixed 2 s, which then closed them (502s in one CI run).
		n int
		// overflow, when not zero, puts the HTTP/1.1 transport behind forward.Overflow with this
		// limit, and an HTTP/2 transport beside it: that many requests go over HTTP/1.1 and the
		// rest, over HTTP/2 where the upstream offers it.
		overflow int
		// caFile trusts the upstream through TransportOptions.ExtraCAFile (the proxy's
		// -upstream-ca, checked by the transport's own handshake) instead of RootCAs.
		caFile bool
		// noH2 makes the TLS upstream offer HTTP/1.1 only.
		noH2 bool
		// skip wraps the HTTP/2 transport in forward.SkipRedundantDials, as the proxy does, and
		// maxConns, when not zero, is the most connections the upstream may see.
		skip     bool
		maxConns int64
	}{
		{name: "https upstream offering h2, default HTTP/1.1", tls: true, n: 600},
		{name: "https upstream offering h2, HTTP2 set", tls: true, http2: true, wantH2: true, n: 600},
		{name: "plain http loopback upstream", n: inFlight},
		{name: "plain http loopback upstream, HTTP2 set", http2: true, n: inFlight},
		{name: "https upstream offering h2, HTTP/1.1 overflowing to HTTP/2", tls: true, wantH2: true, n: 600, overflow: 100},
		{name: "plain http loopback upstream, HTTP/1.1 overflowing", n: inFlight, overflow: 100},
		{name: "https upstream trusted by -upstream-ca, HTTP/1.1 overflowing to HTTP/2", tls: true, wantH2: true, n: 300, overflow: 100, caFile: true},
		// A connection per request over HTTP/1.1, and two HTTP/2 connections for the other 500
		// (250 streams each): the held dials must find their requests served. Without the
		// wrapper, each of the 500 dials a connection of its own.
		{name: "https upstream offering h2, HTTP/1.1 overflowing to HTTP/2, redundant dials skipped", tls: true, wantH2: true, n: 600, overflow: 100, skip: true, maxConns: 100 + 40},
		{name: "https upstream offering h2, HTTP2 set, redundant dials skipped", tls: true, http2: true, wantH2: true, n: 600, skip: true, maxConns: 40},
		// Every request needs a connection of its own: no dial may be held back for good.
		{name: "https upstream offering HTTP/1.1 only, HTTP2 set, redundant dials skipped", tls: true, http2: true, noH2: true, n: 300, skip: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inFlight := tc.n
			g := newGate(int64(inFlight))
			var base string
			var ts *httptest.Server
			var caFile string
			var conns atomic.Int64
			if tc.tls {
				ts = httptest.NewUnstartedServer(g)
				ts.EnableHTTP2 = !tc.noH2
				ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
					if s == http.StateNew {
						conns.Add(1)
					}
				}
				ts.StartTLS()
				t.Cleanup(ts.Close)
				if tc.caFile {
					caFile = filepath.Join(t.TempDir(), "ca.pem")
					if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			newTransport := func(http2 bool) *http.Transport {
				tr, err := forward.NewTransport(forward.TransportOptions{HTTP2: http2, ExtraCAFile: caFile, MaxDialsPerHost: forward.DefaultMaxDialsPerHost})
				if err != nil {
					t.Fatal(err)
				}
				tr.Proxy = nil
				// Over HTTP/1.1 with TLS every request shakes hands on a connection of its own, all
				// at once; under -race on a busy 2-core machine that can take longer than the
				// production handshake timeout. This test is about queueing, not connecting.
				tr.TLSHandshakeTimeout = 3 * time.Minute
				// Likewise a thousand connects at once can overflow the test server's accept
				// queue, and a dropped SYN is retried after a second, then three: more than the
				// production dial timeout of 5 s on a busy machine.
				tr.DialContext = (&net.Dialer{Timeout: 3 * time.Minute}).DialContext
				return tr
			}
			tr := newTransport(tc.http2)
			transports := []*http.Transport{tr}
			var rt http.RoundTripper = tr
			if tc.skip && tc.http2 {
				rt = forward.SkipRedundantDials(tr)
			}
			if tc.overflow > 0 {
				h2 := newTransport(true)
				transports = append(transports, h2)
				var h2rt http.RoundTripper = h2
				if tc.skip {
					h2rt = forward.SkipRedundantDials(h2)
				}
				rt = forward.Overflow(tr, h2rt, tc.overflow)
			}
			if tc.tls {
				if !tc.caFile {
					roots := x509.NewCertPool()
					roots.AddCert(ts.Certificate())
					for _, tr := range transports {
						tr.TLSClientConfig.RootCAs = roots
					}
				}
				base = ts.URL
			} else {
				ts := httptest.NewServer(g)
				t.Cleanup(ts.Close)
				base = ts.URL
			}
			for _, tr := range transports {
				t.Cleanup(tr.CloseIdleConnections)
			}
			up, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			// The deadline only ends a failing run (requests stuck behind a cap); nothing is
			// asserted about how long anything took.
			f, err := forward.New(forward.Options{Upstream: up, Transport: rt, Timeout: 3 * time.Minute, IdleTimeout: 3 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			token := unsignedToken(`{"sub":"u1"}`)
			tok, err := forward.ParseToken("Bearer " + token)
			if err != nil {
				t.Fatal(err)
			}

			var wg sync.WaitGroup
			var firstErr atomic.Value
			statuses := make([]int, inFlight)
			for i := range inFlight {
				wg.Go(func() {
					// A request that fails never reaches the upstream, so the count can no
					// longer be reached: let the others through rather than wait for the deadline.
					defer func() {
						if statuses[i] != http.StatusOK {
							g.openOnce.Do(func() { close(g.open) })
						}
					}()
					path := fmt.Sprintf("/api/1/vehicles/%d/vehicle_data", i)
					if i%2 == 0 {
						req := httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil)
						req.Header.Set("Authorization", "Bearer "+token)
						rec := httptest.NewRecorder()
						f.ServeHTTP(rec, req)
						statuses[i] = rec.Code
						if rec.Code != http.StatusOK {
							firstErr.CompareAndSwap(nil, fmt.Sprintf("pass-through %d: %s", rec.Code, rec.Body.Bytes()))
						}
						return
					}
					reply, err := f.Call(forward.WithToken(ctx, tok), http.MethodPost,
						fmt.Sprintf("/api/1/vehicles/%d/signed_command", i), []byte(`{"routable_message":""}`), nil)
					if err != nil {
						statuses[i] = -1
						firstErr.CompareAndSwap(nil, "Call: "+err.Error())
						return
					}
					statuses[i] = reply.Status
				})
			}
			wg.Wait()

			if got := g.peak.Load(); got != int64(inFlight) {
				t.Errorf("at most %d requests were at the upstream at once, want all %d", got, inFlight)
			}
			failed := 0
			for _, s := range statuses {
				if s != http.StatusOK {
					failed++
				}
			}
			if failed > 0 {
				t.Errorf("%d of %d requests did not get the upstream's 200; the first: %v", failed, inFlight, firstErr.Load())
			}
			wantH2 := int64(0)
			if tc.wantH2 {
				wantH2 = int64(inFlight - tc.overflow)
			}
			if got := g.h2.Load(); got != wantH2 {
				t.Errorf("%d requests arrived over HTTP/2, want %d", got, wantH2)
			}
			t.Logf("%d connections reached the upstream", conns.Load())
			if tc.maxConns > 0 && conns.Load() > tc.maxConns {
				t.Errorf("%d connections reached the upstream, want at most %d", conns.Load(), tc.maxConns)
			}
		})
	}
}

// TestCountConnWaits checks that requests held back by MaxConnsPerHost are counted while they
// wait and no longer once they have a connection.
func TestCountConnWaits(t *testing.T) {
	const n = 8
	g := newGate(n)
	ts := httptest.NewServer(g)
	t.Cleanup(ts.Close)
	tr, err := forward.NewTransport(forward.TransportOptions{MaxConnsPerHost: n / 2})
	if err != nil {
		t.Fatal(err)
	}
	tr.Proxy = nil
	t.Cleanup(tr.CloseIdleConnections)
	var waiting, peakWaiting atomic.Int64
	var mu sync.Mutex
	rt := forward.CountConnWaits(tr, func(d float64) {
		mu.Lock()
		defer mu.Unlock()
		if w := waiting.Add(int64(d)); w > peakWaiting.Load() {
			peakWaiting.Store(w)
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/x", nil)
			if err != nil {
				t.Error(err)
				return
			}
			resp, err := rt.RoundTrip(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	// With the bound at n/2 the gate never opens: n/2 requests are inside it and n/2 wait for
	// a connection. Wait until that state is reached, then let everything go.
	for g.inside.Load() < n/2 || waiting.Load() < n/2 {
		select {
		case <-t.Context().Done():
			t.Fatal("test ended before the bound was reached")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if got := g.peak.Load(); got != n/2 {
		t.Errorf("%d requests at the upstream at once with the bound at %d", got, n/2)
	}
	cancel()
	wg.Wait()
	if got := waiting.Load(); got != 0 {
		t.Errorf("%d requests still counted as waiting after all ended", got)
	}
	if got := peakWaiting.Load(); got < n/2 {
		t.Errorf("at most %d requests counted as waiting, want at least %d", got, n/2)
	}
}

// TestExtraCAIsCheckedByTheTransportsOwnHandshake covers -upstream-ca on the direct path, where
// the transport checks the chain itself (so the system roots stay unloaded when the bundle
// suffices): the bundle's certificates are trusted for the names they carry, IP addresses
// included, and a server whose chain leads elsewhere, or whose certificate names another host, is
// refused with a certificate error before any request is sent.
func TestExtraCAIsCheckedByTheTransportsOwnHandshake(t *testing.T) {
	ours, err := certgen.NewCA("upstream test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certgen.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ours.Issue(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	_, port, err := net.SplitHostPort(ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, ca, host string
		ok             bool
	}{
		{"IP address in the certificate", "ours", "127.0.0.1", true},
		{"host name in the certificate", "ours", "localhost", true},
		{"chain leads to another CA", "other", "127.0.0.1", false},
		{"certificate names other hosts", "ours", "wrong.test", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := map[string]*certgen.CA{"ours": ours, "other": other}[tc.ca]
			file := filepath.Join(dir, tc.ca+".pem")
			if err := os.WriteFile(file, ca.CertPEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			tr, err := forward.NewTransport(forward.TransportOptions{ExtraCAFile: file})
			if err != nil {
				t.Fatal(err)
			}
			tr.Proxy = nil
			// Every name dials the test server: the name is only what the certificate is checked for.
			tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, ts.Listener.Addr().String())
			}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Get("https://" + net.JoinHostPort(tc.host, port) + "/")
			if tc.ok {
				if err != nil {
					t.Fatalf("GET: %v", err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatal("the handshake was accepted")
			}
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Fatalf("error %v is not a certificate verification error", err)
			}
		})
	}
}
