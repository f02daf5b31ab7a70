package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// TestMain fails the package if any goroutine outlives the tests: every proxy, simulator and
// client is closed by its test's cleanup, so nothing may be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// withoutLeaks is testenv.WithoutLeaks.
var withoutLeaks = testenv.WithoutLeaks

// fleetHosts are the Fleet API hosts the proxy may ever dial or name as upstream.
var fleetHosts = []string{forward.HostNA, forward.HostEU, forward.HostCN}

// isTeslaHost reports whether h is one of the Fleet API hosts the proxy may reach.
func isTeslaHost(h string) bool {
	h = strings.ToLower(h)
	return strings.HasSuffix(h, ".tesla.com") || strings.HasSuffix(h, ".tesla.cn") || strings.HasSuffix(h, ".teslamotors.com")
}

// apiError is the Fleet API's (and the proxy's) error shape.
type apiError struct {
	Response         any    `json:"response"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// internals are fragments that give away Go error texts, stack traces or upstream details; none
// may appear in an error text a client gets.
var internals = []string{
	"goroutine ", ".go:", "panic", "runtime error", "runtime.", "invalid character", "unexpected EOF",
	"cannot unmarshal", "json: ", "http: ", "http2:", "x509", "dial tcp", "connection refused",
	"%!", "0xc0", "127.0.0.1", "<nil>", "context deadline exceeded", "context canceled", "proto:",
	"read tcp", "write tcp", "EOF",
}

var wordRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// checkError checks an answer the proxy wrote itself: the status, a JSON body of exactly the
// shape {"response":null,"error":"<word>","error_description":"<sentence>"}, a non-empty
// description free of Go internals, and the word when want is not "".
func checkError(t testing.TB, status int, h http.Header, body []byte, wantStatus int, wantWord string) apiError {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status %d, want %d; body %s", status, wantStatus, body)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("error answer is not a JSON object: %q", body)
	}
	if len(raw) != 3 || string(raw["response"]) != "null" || raw["error"] == nil || raw["error_description"] == nil {
		t.Errorf("error answer %s: want exactly response:null, error and error_description", body)
	}
	var e apiError
	_ = json.Unmarshal(body, &e)
	if !wordRE.MatchString(e.Error) {
		t.Errorf("error word %q is not a snake_case word", e.Error)
	}
	if wantWord != "" && e.Error != wantWord {
		t.Errorf("error word %q, want %q", e.Error, wantWord)
	}
	if strings.TrimSpace(e.ErrorDescription) == "" {
		t.Errorf("empty error_description in %s", body)
	}
	if frag := internalsIn(e.ErrorDescription); frag != "" {
		t.Errorf("error_description %q gives away internals (%q)", e.ErrorDescription, frag)
	}
	return e
}

// internalsIn returns the first fragment of internals found in s, or "".
func internalsIn(s string) string {
	for _, frag := range internals {
		if strings.Contains(s, frag) {
			return frag
		}
	}
	return ""
}

// do sends one request through the proxy; token "" sends no Authorization header.
func do(t testing.TB, c *http.Client, method, u, token string, body []byte, header http.Header) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, u, err)
	}
	return resp, b
}

// commandOK reports whether body is {"response":{"result":true,…}}.
func commandOK(body []byte) bool {
	var a struct {
		Response *struct {
			Result bool `json:"result"`
		} `json:"response"`
	}
	return json.Unmarshal(body, &a) == nil && a.Response != nil && a.Response.Result
}

// checkHealthy checks that the proxy still answers /health and still carries out a command.
func checkHealthy(t testing.TB, env *testenv.Env) {
	t.Helper()
	resp, body := do(t, env.Client, http.MethodGet, env.URL+"/health", "", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health: %d %s", resp.StatusCode, body)
	}
	resp, body = env.Command(t, env.VINs[0], "door_lock", nil)
	if resp.StatusCode != http.StatusOK || !commandOK(body) {
		t.Fatalf("a good command after the bad input: %d %s", resp.StatusCode, body)
	}
}

// rootsOf returns the CA pool an *http.Client built by testenv or startProxy trusts.
func rootsOf(c *http.Client) *x509.CertPool {
	return c.Transport.(*http.Transport).TLSClientConfig.RootCAs
}

// hostOf returns the host:port of a base URL.
func hostOf(t testing.TB, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// dialTLS opens an HTTP/1.1 TLS connection to addr, for writing requests byte by byte.
func dialTLS(t testing.TB, addr string, roots *x509.CertPool) *tls.Conn {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*tls.Conn)
}

// rawRoundTrip writes raw (a whole HTTP/1.1 request, CRLFs included) on a fresh TLS connection
// and reads one answer.
func rawRoundTrip(t testing.TB, addr string, roots *x509.CertPool, raw string) (*http.Response, []byte) {
	t.Helper()
	c := dialTLS(t, addr, roots)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// seenRequest is one request an upstream recorder saw.
type seenRequest struct {
	Method, URI, Host, SNI string
	Body                   []byte
}

// recorder is a Fleet API stand-in: it records every request, lets intercept answer it, and
// hands the others to next (usually the simulator).
type recorder struct {
	next      http.Handler
	intercept func(w http.ResponseWriter, r *http.Request, body []byte) bool

	mu   sync.Mutex
	seen []seenRequest
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	s := seenRequest{Method: r.Method, URI: r.RequestURI, Host: r.Host, Body: body}
	if r.TLS != nil {
		s.SNI = r.TLS.ServerName
	}
	rc.mu.Lock()
	rc.seen = append(rc.seen, s)
	rc.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if rc.intercept != nil && rc.intercept(w, r, body) {
		return
	}
	if rc.next == nil {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"response":{}}`)
		return
	}
	rc.next.ServeHTTP(w, r)
}

// Seen returns the requests so far.
func (rc *recorder) Seen() []seenRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]seenRequest(nil), rc.seen...)
}

// proxyOptions shape a proxy built by startProxy.
type proxyOptions struct {
	// Upstream plays the Fleet API. It is served over TLS with a certificate for the Tesla hosts.
	Upstream http.Handler
	// Fixed makes Upstream the fixed upstream (the -upstream flag). Otherwise the proxy chooses
	// by token and every connection goes through the dial recorder to Upstream.
	Fixed bool
	// Key is the command key (default: a fresh one).
	Key protocol.ECDHPrivateKey
	// Timeout is the upstream deadline (default 5 s).
	Timeout time.Duration
	// MaxBodyBytes and MaxResponseBytes are the proxy's limits (0: the defaults).
	MaxBodyBytes, MaxResponseBytes int64
	// Logger is the proxy's logger (default: a zaptest logger at info).
	Logger *zap.Logger
	// HTTP1Upstream serves Upstream over HTTP/1.1 only (so that it can hijack connections).
	HTTP1Upstream bool
	// DeadUpstream closes Upstream's listener before the proxy starts: nothing listens there.
	DeadUpstream bool
}

// proxy is a running proxy assembled by internal/app, in front of a test upstream.
type proxy struct {
	URL         string
	Client      *http.Client
	App         *app.App
	Dial        *testenv.DialRecorder
	UpstreamURL string
}

// startProxy assembles the proxy the way cmd/proxy does (app.New, server.NewHTTPServer) in front
// of o.Upstream and serves it over TLS on loopback until the test ends.
func startProxy(t testing.TB, o proxyOptions) *proxy {
	t.Helper()
	log := o.Logger
	if log == nil {
		log = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Key == nil {
		o.Key = testenv.NewKey(t)
	}
	cert, upPool := testenv.Cert(t, fleetHosts...)
	up := httptest.NewUnstartedServer(o.Upstream)
	up.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	up.EnableHTTP2 = !o.HTTP1Upstream
	up.StartTLS()
	t.Cleanup(up.Close)
	upAddr := up.Listener.Addr().String()
	if o.DeadUpstream {
		up.Close()
	}
	tr := testenv.UpstreamTransport(t, o.Timeout, upPool)
	p := &proxy{UpstreamURL: up.URL}
	ao := app.Options{
		Key:              o.Key,
		Transport:        tr,
		Timeout:          o.Timeout,
		MaxBodyBytes:     o.MaxBodyBytes,
		MaxResponseBytes: o.MaxResponseBytes,
		Logger:           log,
	}
	if o.Fixed {
		ao.Upstream, _ = url.Parse(up.URL)
	} else {
		p.Dial = &testenv.DialRecorder{Target: upAddr}
		tr.DialContext = p.Dial.DialContext
	}
	a, err := app.New(ao)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	p.App = a
	ts, pool := testenv.StartServerTLS(t, server.NewHTTPServer(server.Options{Handler: a.Handler, Logger: log, UpstreamTimeout: o.Timeout}))
	p.URL = ts.URL
	p.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	t.Cleanup(p.Client.CloseIdleConnections)
	return p
}

// checkDialedOnlyTesla fails the test if the proxy dialed anything but a Fleet API host.
func checkDialedOnlyTesla(t testing.TB, d *testenv.DialRecorder) {
	t.Helper()
	for _, h := range d.Hosts() {
		if !isTeslaHost(h) {
			t.Errorf("the proxy dialed %q, which is not a Tesla Fleet API host", h)
		}
	}
}
