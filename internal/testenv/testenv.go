// Package testenv starts the whole proxy for tests: the Fleet API simulator behind real TLS on
// loopback, the proxy assembled by internal/app in front of it behind real TLS, and a client that
// trusts it. Nothing here dials anything but loopback.
package testenv

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/certgen"
	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/metrics"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/signer"
)

// Options shape an Env. The zero value is usable.
type Options struct {
	// Vehicles is how many simulated vehicles to enroll the key on (default 3).
	Vehicles int
	// Key is the command key; nil means a fresh one.
	Key protocol.ECDHPrivateKey
	// Timeout is the proxy's upstream deadline (default 5 s).
	Timeout time.Duration
	// MaxBodyBytes bounds bodies the proxy reads (default 1 MiB).
	MaxBodyBytes int64
	// Sessions, when not nil, is the proxy's session store (the test closes it); nil means a
	// fresh memory store.
	Sessions *sessions.Store
	// Shared, when not nil, is a session store shared with other replicas (the test closes it).
	Shared signer.SharedStore
	// Logger is the proxy's logger; nil means a zaptest logger at info level.
	Logger *zap.Logger
	// Sim, when not nil, is used instead of a new simulator.
	Sim *fleetsim.Server
	// Metrics, when not nil, collects the proxy's metrics and is served at /metrics.
	Metrics *metrics.Metrics
	// AllowNets limits the client networks served.
	AllowNets []netip.Prefix
	// App, when not nil, may change the proxy's options before it is assembled (to turn on
	// features such as -auto-wake).
	App func(*app.Options)
	// Upstream, when not nil, wraps the simulator's handler (to answer a route it does not
	// simulate).
	Upstream func(http.Handler) http.Handler
	// Echo makes the new simulator answer the read routes with echoes (fleetsim.Options.Echo),
	// for tests of what the proxy passes through.
	Echo bool
}

// Env is a running simulator and proxy.
type Env struct {
	// Sim is the simulated Fleet API and its vehicles.
	Sim *fleetsim.Server
	// SimURL is the simulator's https base URL.
	SimURL string
	// App is the assembled proxy.
	App *app.App
	// URL is the proxy's https base URL.
	URL string
	// Client trusts the proxy's certificate.
	Client *http.Client
	// Key is the command key enrolled on every vehicle.
	Key protocol.ECDHPrivateKey
	// Token is a bearer token (JWT-shaped, unsigned) accepted by the simulator.
	Token string
	// VINs are the simulated vehicles.
	VINs []string
}

// Start brings up a simulator and a proxy in front of it, and stops both when the test ends.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Vehicles == 0 {
		o.Vehicles = 3
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Key == nil {
		o.Key = NewKey(t)
	}
	log := o.Logger
	if log == nil {
		log = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	pub := PublicKey(t, o.Key)
	sim := o.Sim
	if sim == nil {
		sim = fleetsim.New(fleetsim.Options{Logger: log.Named("sim"), TrustedKeys: []*ecdh.PublicKey{pub}, Echo: o.Echo})
	}
	var vins []string
	for i := 0; i < o.Vehicles; i++ {
		vin := fleetsim.NewTestVIN(i)
		if sim.Vehicle(vin) == nil {
			sim.AddVehicle(vin, pub)
		}
		vins = append(vins, vin)
	}
	var simHandler http.Handler = sim
	if o.Upstream != nil {
		simHandler = o.Upstream(sim)
	}
	simTS, simPool := StartTLS(t, simHandler)
	up, _ := url.Parse(simTS.URL)

	tr := UpstreamTransport(t, o.Timeout, simPool)
	ao := app.Options{
		Key:          o.Key,
		Upstream:     up,
		Transport:    tr,
		Timeout:      o.Timeout,
		MaxBodyBytes: o.MaxBodyBytes,
		Sessions:     o.Sessions,
		Shared:       o.Shared,
		AllowNets:    o.AllowNets,
		Logger:       log,
	}
	if o.Metrics != nil {
		ao.Metrics, ao.Observe, ao.InFlight, ao.OnUpstream = o.Metrics.Handler(), o.Metrics.Observe, o.Metrics.InFlight, o.Metrics.Upstream
		ao.OnHandshake, ao.OnSession = o.Metrics.Handshake, o.Metrics.Session
		ao.OnWake, ao.OnWakeAvoided, ao.OnWakePoll = o.Metrics.WakeSent, o.Metrics.WakeAvoided, o.Metrics.WakePoll
		ao.OnVehicleIDLookup, ao.OnReadSaved = o.Metrics.VehicleIDLookup, o.Metrics.ReadSaved
		ao.OnLegacyLearned = o.Metrics.LegacyCallSaved
	}
	if o.App != nil {
		o.App(&ao)
	}
	a, err := app.New(ao)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	ts, pool := StartServerTLS(t, server.NewHTTPServer(server.Options{Handler: a.Handler, Logger: log, UpstreamTimeout: o.Timeout}))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
	t.Cleanup(client.CloseIdleConnections)
	return &Env{
		Sim: sim, SimURL: simTS.URL, App: a, URL: ts.URL, Client: client, Key: o.Key, VINs: vins,
		Token: Token(t, map[string]any{"sub": "test-user", "aud": []any{"https://" + forward.HostNA}, "ou_code": "NA"}),
	}
}

// Do sends a request to the proxy with the Env's token and returns the answer with its body read.
func (e *Env) Do(t testing.TB, method, path string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
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

// Command posts a REST vehicle command through the proxy.
func (e *Env) Command(t testing.TB, vin, name string, params any) (*http.Response, []byte) {
	t.Helper()
	var body []byte
	if params != nil {
		var err error
		if body, err = json.Marshal(params); err != nil {
			t.Fatal(err)
		}
	}
	return e.Do(t, http.MethodPost, "/api/1/vehicles/"+vin+"/command/"+name, body)
}

// NewKey returns a fresh P-256 command key.
func NewKey(t testing.TB) protocol.ECDHPrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	key := protocol.UnmarshalECDHPrivateKey(scalar)
	if key == nil {
		t.Fatal("could not load a generated key")
	}
	return key
}

// PublicKey returns a command key's public half.
func PublicKey(t testing.TB, key protocol.ECDHPrivateKey) *ecdh.PublicKey {
	t.Helper()
	pub, err := ecdh.P256().NewPublicKey(key.PublicBytes())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// Token returns a JWT-shaped bearer token with the given claims. It is unsigned: the proxy never
// verifies tokens (the Fleet API does) and the simulator does not either.
func Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(b) + ".c2lnbmF0dXJl"
}

// Cert returns a self-signed certificate for localhost, 127.0.0.1, ::1 and names, and a pool
// trusting it.
func Cert(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	cert, pool, err := certgen.SelfSigned(names...)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pool
}

// StartTLS serves h on a loopback TLS server with a certificate from Cert.
func StartTLS(t testing.TB, h http.Handler, names ...string) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	// No timeouts: a stand-in server must not cut off a test's deliberately slow exchange.
	return StartServerTLS(t, &http.Server{Handler: h}, names...) //nolint:gosec // G112: see above
}

// StartServerTLS serves srv (such as one from server.NewHTTPServer, with its timeouts) on a
// loopback TLS server with a certificate from Cert, HTTP/2 enabled, until the test ends.
func StartServerTLS(t testing.TB, srv *http.Server, names ...string) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	cert, pool := Cert(t, names...)
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = srv
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts, pool
}

// UpstreamTransport returns the proxy's upstream transport (forward.NewTransport) with timeout
// as its response-header deadline, trusting roots only and never using an outbound proxy. Its
// idle connections are closed when the test ends.
func UpstreamTransport(t testing.TB, timeout time.Duration, roots *x509.CertPool) *http.Transport {
	t.Helper()
	tr, err := forward.NewTransport(forward.TransportOptions{ResponseHeaderTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	tr.TLSClientConfig.RootCAs = roots
	tr.Proxy = nil
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// DialRecorder sends every connection to Target (a loopback host:port) and records the host
// each dial asked for, so that upstream choice is tested without dialing anything real. Set a
// transport's DialContext to its DialContext.
type DialRecorder struct {
	Target string

	mu    sync.Mutex
	hosts []string
}

// DialContext records the host of addr and dials Target instead.
func (d *DialRecorder) DialContext(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	d.mu.Lock()
	d.hosts = append(d.hosts, host)
	d.mu.Unlock()
	var dialer net.Dialer
	return dialer.DialContext(ctx, "tcp", d.Target)
}

// Hosts returns every host dialed so far, in order.
func (d *DialRecorder) Hosts() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.hosts...)
}

// SyncBuffer is a bytes.Buffer that a logger or a child process's output copier may write to
// while the test reads it. It is a zapcore.WriteSyncer.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Sync does nothing: the bytes are already in memory.
func (s *SyncBuffer) Sync() error { return nil }

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WithoutLeaks runs f as a subtest, so everything f started is closed by its cleanups when f
// returns, and then fails t if a goroutine started meanwhile is still running.
func WithoutLeaks(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	if !t.Run(name, f) {
		return
	}
	goleak.VerifyNone(t, before)
}
