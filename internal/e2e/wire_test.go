package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// rawRequest builds an HTTP/1.1 request as it goes on the wire: the request line, the given
// header lines (each without its CRLF), Connection: close, and an empty line.
func rawRequest(method, target string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return b.String()
}

// echoOf decodes the simulator's echo of a pass-through request.
func echoOf(t testing.TB, status int, body []byte) fleetsim.Echo {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("status %d %s, want the simulator's echo", status, body)
	}
	var e struct {
		Response fleetsim.Echo `json:"response"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("echo %q: %v", body, err)
	}
	return e.Response
}

// TestRequestTargetsAndHostHeaders: neither an absolute-form request target nor a hostile Host
// (or X-Forwarded-Host, or Forwarded) header changes where the proxy sends a request; the
// simulator's echo reports the Host it got.
func TestRequestTargetsAndHostHeaders(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Echo: true})
	addr, roots := hostOf(t, env.URL), rootsOf(env.Client)
	simHost := hostOf(t, env.SimURL)
	vin := env.VINs[0]
	auth := "Authorization: Bearer " + env.Token
	path := "/api/1/vehicles/" + vin + "/vehicle_data"
	tests := []struct {
		name    string
		target  string
		headers []string
	}{
		{"absolute-form http", "http://elsewhere.example" + path, []string{"Host: elsewhere.example", auth}},
		{"absolute-form https with port", "https://elsewhere.example:8443" + path, []string{"Host: elsewhere.example:8443", auth}},
		{"absolute-form naming a Tesla host", "https://" + forward.HostEU + path, []string{"Host: " + forward.HostEU, auth}},
		{"absolute-form with Host disagreeing", "http://elsewhere.example" + path, []string{"Host: other.example", auth}},
		{"absolute-form naming loopback", "http://127.0.0.1:1" + path, []string{"Host: 127.0.0.1:1", auth}},
		{"hostile Host", path, []string{"Host: evil.example", auth}},
		{"Host with a port", path, []string{"Host: evil.example:443", auth}},
		{"Host naming loopback", path, []string{"Host: 127.0.0.1:22", auth}},
		{"Host naming a Tesla host", path, []string{"Host: " + forward.HostEU, auth}},
		{"X-Forwarded-Host", path, []string{"Host: localhost", "X-Forwarded-Host: evil.example", "X-Forwarded-Proto: http", auth}},
		{"Forwarded", path, []string{"Host: localhost", "Forwarded: host=evil.example;proto=http", auth}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawRoundTrip(t, addr, roots, rawRequest("GET", tc.target, tc.headers...))
			e := echoOf(t, resp.StatusCode, body)
			if e.Host != simHost {
				t.Errorf("upstream saw Host %q, want the configured upstream %q", e.Host, simHost)
			}
			if e.RequestURI != path {
				t.Errorf("upstream saw target %q, want %q", e.RequestURI, path)
			}
			for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
				if v := e.Header[h]; v != nil {
					t.Errorf("upstream got %s: %q, which a client must not be able to set", h, v)
				}
			}
		})
	}
	// The brief's own example: the vehicle list, served by the simulator (not its echo).
	t.Run("absolute-form vehicle list", func(t *testing.T) {
		before := env.Sim.Stats().Routes["vehicles"]
		resp, body := rawRoundTrip(t, addr, roots, rawRequest("GET", "http://elsewhere.example/api/1/vehicles", "Host: elsewhere.example", auth))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), vin) {
			t.Fatalf("status %d %s", resp.StatusCode, body)
		}
		if got := env.Sim.Stats().Routes["vehicles"]; got != before+1 {
			t.Errorf("the simulator's vehicle list was called %d times, want 1", got-before)
		}
	})
	checkHealthy(t, env)
}

// TestConnectRefused: CONNECT, in authority form or not, with a token or not, is 405 with Allow.
func TestConnectRefused(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Echo: true})
	addr, roots := hostOf(t, env.URL), rootsOf(env.Client)
	for _, tc := range []struct{ name, target string }{
		{"authority form", "evil.example:443"},
		{"Fleet API host", forward.HostNA + ":443"},
		{"loopback", "127.0.0.1:22"},
		{"path", "/api/1/vehicles"},
	} {
		for _, withToken := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s token=%v", tc.name, withToken), func(t *testing.T) {
				host := tc.target
				if strings.HasPrefix(host, "/") {
					host = "localhost"
				}
				headers := []string{"Host: " + host}
				if withToken {
					headers = append(headers, "Authorization: Bearer "+env.Token)
				}
				before := env.Sim.Stats().Upstream
				resp, body := rawRoundTrip(t, addr, roots, rawRequest("CONNECT", tc.target, headers...))
				checkError(t, resp.StatusCode, resp.Header, body, http.StatusMethodNotAllowed, "method_not_allowed")
				if resp.Header.Get("Allow") == "" || strings.Contains(resp.Header.Get("Allow"), "CONNECT") {
					t.Errorf("Allow %q", resp.Header.Get("Allow"))
				}
				if after := env.Sim.Stats().Upstream; after != before {
					t.Errorf("CONNECT cost %d upstream calls", after-before)
				}
			})
		}
	}
	checkHealthy(t, env)
}

// dotSegmentPaths are paths with "." or ".." segments, written plainly or percent-encoded. A
// server behind the proxy could resolve them into another route than the one matched.
var dotSegmentPaths = []struct{ method, path string }{
	{"GET", "/api/1/vehicles/../x"},
	{"GET", "/api/1/vehicles/%2e%2e/x"},
	{"GET", "/api/1/vehicles/%2E%2E/x"},
	{"GET", "/api/1/vehicles/.%2e/x"},
	{"GET", "/api/1/vehicles/%2e./x"},
	{"GET", "/api/1/vehicles/%2e/x"},
	{"GET", "/api/1/./vehicles"},
	{"GET", "/../api/1/vehicles"},
	{"GET", "/api/1/vehicles/x/.."},
	{"GET", "/api/1/vehicles/x/%2E"},
	{"GET", "/api/1/vehicles/{vin}/vehicle_data/../../{vin}/wake_up"},
	{"POST", "/api/1/vehicles/{vin}/command/../signed_command"},
	{"POST", "/api/1/vehicles/{vin}/command/%2e%2e/signed_command"},
	{"POST", "/api/1/vehicles/fleet_telemetry_config/.."},
	{"POST", "/api/1/vehicles/{vin}/command/door_lock/.."},
	{"DELETE", "/api/1/vehicles/{vin}/../{vin}/fleet_telemetry_config"},
}

// TestDotSegmentsRefused: dot-segment paths get 400 and never reach the Fleet API, over HTTP/1.1
// (written raw) and over HTTP/2 (Go's client sends an opaque path as it is).
func TestDotSegmentsRefused(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Echo: true})
	addr, roots := hostOf(t, env.URL), rootsOf(env.Client)
	vin := env.VINs[0]
	for _, tc := range dotSegmentPaths {
		path := strings.ReplaceAll(tc.path, vinTag, vin)
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			before := env.Sim.Stats().Upstream
			resp, body := rawRoundTrip(t, addr, roots, rawRequest(tc.method, path, "Host: localhost", "Authorization: Bearer "+env.Token, "Content-Length: 0"))
			checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadRequest, "invalid_path")

			req, _ := http.NewRequestWithContext(t.Context(), tc.method, env.URL+"/", nil)
			req.URL.Opaque = path
			req.Header.Set("Authorization", "Bearer "+env.Token)
			r2, err := env.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b2, _ := readAll(r2)
			if r2.ProtoMajor != 2 {
				t.Errorf("the client spoke %s, want HTTP/2", r2.Proto)
			}
			checkError(t, r2.StatusCode, r2.Header, b2, http.StatusBadRequest, "invalid_path")
			if after := env.Sim.Stats().Upstream; after != before {
				t.Errorf("a dot-segment path cost %d upstream calls", after-before)
			}
		})
	}
	checkHealthy(t, env)
}

// TestEncodedPathsPassThroughByteExact: percent-encoded slashes and other escapes reach the Fleet
// API exactly as the client wrote them (%2F kept, case kept, nothing decoded or re-encoded).
func TestEncodedPathsPassThroughByteExact(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Echo: true})
	addr, roots := hostOf(t, env.URL), rootsOf(env.Client)
	vin := env.VINs[0]
	for _, target := range []string{
		"/api/1/vehicles/a%2Fb/vehicle_data",
		"/api/1/vehicles/a%2fb/vehicle_data",
		"/api/1/vehicles/a%252Fb/vehicle_data",
		"/api/1/vehicles/%2F%2F/vehicle_data",
		"/api/1/vehicles/a%5Cb/vehicle_data",
		"/api/1/vehicles/%252e%252e/vehicle_data",
		"/api/1/vehicles/a%20b/vehicle_data",
		"/api/1/vehicles/" + vin + "/vehicle_data?endpoints=location_data;charge_state&x=%2F",
		"/api/1/vehicles/" + vin + "/command%2Fdoor_lock",
		"/api/1/vehicles/" + vin + "%2Fcommand%2Fdoor_lock",
		"/api/1/vehicles//vehicle_data",
	} {
		t.Run(target, func(t *testing.T) {
			wantPath, wantQuery, _ := strings.Cut(target, "?")
			resp, body := rawRoundTrip(t, addr, roots, rawRequest("GET", target, "Host: localhost", "Authorization: Bearer "+env.Token))
			e := echoOf(t, resp.StatusCode, body)
			if e.Path != wantPath || e.RawQuery != wantQuery {
				t.Errorf("HTTP/1.1: upstream saw path %q query %q, want %q %q", e.Path, e.RawQuery, wantPath, wantQuery)
			}
			req, _ := http.NewRequestWithContext(t.Context(), "GET", env.URL+"/", nil)
			req.URL.Opaque, req.URL.RawQuery = wantPath, wantQuery
			req.Header.Set("Authorization", "Bearer "+env.Token)
			r2, err := env.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b2, _ := readAll(r2)
			e = echoOf(t, r2.StatusCode, b2)
			if e.Path != wantPath || e.RawQuery != wantQuery {
				t.Errorf("HTTP/2: upstream saw path %q query %q, want %q %q", e.Path, e.RawQuery, wantPath, wantQuery)
			}
		})
	}
	if n := len(env.Sim.Executions("")); n != 0 {
		t.Errorf("%d commands ran; an encoded slash must not turn a path into a command route", n)
	}
}

// TestMalformedHeadersRefused: header injection attempts (CR, LF, NUL inside header values or
// names, smuggling shapes) are refused with 400 by Go's server before any handler runs.
func TestMalformedHeadersRefused(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Echo: true})
	addr, roots := hostOf(t, env.URL), rootsOf(env.Client)
	vin := env.VINs[0]
	path := "/api/1/vehicles/" + vin + "/vehicle_data"
	auth := "Authorization: Bearer " + env.Token
	tests := []struct {
		name string
		raw  string
	}{
		{"bare CR in a value", rawRequest("GET", path, "Host: localhost", auth, "X-Evil: a\rX-Injected: 1")},
		{"bare CR in Authorization", rawRequest("GET", path, "Host: localhost", auth+"\rX-Injected: 1")},
		{"bare CR in Host", rawRequest("GET", path, "Host: localhost\rX-Injected: 1", auth)},
		{"NUL in a value", rawRequest("GET", path, "Host: localhost", auth, "X-Evil: a\x00b")},
		{"DEL in a value", rawRequest("GET", path, "Host: localhost", auth, "X-Evil: a\x7fb")},
		{"space in a name", rawRequest("GET", path, "Host: localhost", auth, "X Evil: a")},
		{"colon-less line", rawRequest("GET", path, "Host: localhost", auth, "X-Evil")},
		{"CR in a name", rawRequest("GET", path, "Host: localhost", auth, "X-\rEvil: a")},
		{"CR in the request target", rawRequest("GET", path+"\rX-Injected: 1", "Host: localhost", auth)},
		{"no Host", rawRequest("GET", path, auth)},
		{"two Hosts", rawRequest("GET", path, "Host: localhost", "Host: evil.example", auth)},
		{"conflicting Content-Length", rawRequest("POST", path, "Host: localhost", auth, "Content-Length: 1", "Content-Length: 2") + "ab"},
		{"negative Content-Length", rawRequest("POST", path, "Host: localhost", auth, "Content-Length: -1")},
		{"garbage Content-Length", rawRequest("POST", path, "Host: localhost", auth, "Content-Length: 1x")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := env.Sim.Stats().Upstream
			resp, body := rawRoundTrip(t, addr, roots, tc.raw)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d %s, want 400", resp.StatusCode, body)
			}
			if after := env.Sim.Stats().Upstream; after != before {
				t.Errorf("the request cost %d upstream calls", after-before)
			}
		})
	}
	checkHealthy(t, env)
}

// TestHeaderFloodRefused: request headers over 64 KiB get 431 from Go's server, nothing goes
// upstream; headers just under the limit still pass.
func TestHeaderFloodRefused(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Echo: true})
	addr, roots := hostOf(t, env.URL), rootsOf(env.Client)
	path := "/api/1/vehicles/" + env.VINs[0] + "/vehicle_data"
	base := []string{"Host: localhost", "Authorization: Bearer " + env.Token}
	many := func(n, size int) []string {
		h := append([]string(nil), base...)
		for i := range n {
			h = append(h, fmt.Sprintf("X-Flood-%d: %s", i, strings.Repeat("a", size)))
		}
		return h
	}
	tests := []struct {
		name    string
		headers []string
		status  int
	}{
		{"1,000 headers of 100 bytes", many(1000, 100), http.StatusRequestHeaderFieldsTooLarge},
		{"10,000 tiny headers", many(10000, 1), http.StatusRequestHeaderFieldsTooLarge},
		{"one 80 KiB header", many(1, 80<<10), http.StatusRequestHeaderFieldsTooLarge},
		{"one 1 MiB header", many(1, 1<<20), http.StatusRequestHeaderFieldsTooLarge},
		{"just under 64 KiB", many(1, server.MaxHeaderBytes-4<<10), http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := env.Sim.Stats().Upstream
			resp, body := rawRoundTrip(t, addr, roots, rawRequest("GET", path, tc.headers...))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %.200s, want %d", resp.StatusCode, body, tc.status)
			}
			want := 0
			if tc.status == http.StatusOK {
				want = 1
			}
			if got := env.Sim.Stats().Upstream - before; got != want {
				t.Errorf("%d upstream calls, want %d", got, want)
			}
		})
	}
	checkHealthy(t, env)
}

// TestSlowHeadersCutOff: a client that sends its headers a byte at a time is cut off by the
// server's ReadHeaderTimeout (10 s in production, lowered to 300 ms here to keep the test short)
// and nothing goes upstream.
func TestSlowHeadersCutOff(t *testing.T) {
	withoutLeaks(t, "slowloris", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 1, Echo: true})
		const readHeaderTimeout = 300 * time.Millisecond
		srv := server.NewHTTPServer(server.Options{Handler: env.App.Handler, UpstreamTimeout: 5 * time.Second})
		if srv.ReadHeaderTimeout != 10*time.Second {
			t.Errorf("production ReadHeaderTimeout %v, want 10s", srv.ReadHeaderTimeout)
		}
		srv.ReadHeaderTimeout = readHeaderTimeout
		ts, roots := testenv.StartServerTLS(t, srv)

		raw := rawRequest("GET", "/api/1/vehicles/"+env.VINs[0]+"/vehicle_data", "Host: localhost", "Authorization: Bearer "+env.Token)
		before := env.Sim.Stats().Upstream
		c := dialTLS(t, hostOf(t, ts.URL), roots)
		start := time.Now()
		stop := make(chan struct{})
		written := make(chan int, 1)
		go func() {
			n := 0
			defer func() { written <- n }()
			for i := range len(raw) {
				if _, err := c.Write([]byte{raw[i]}); err != nil {
					return
				}
				n++
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// Go's server either closes the connection or answers 400 and then closes it; either
		// way the connection must end, not wait for the rest of the headers.
		got, err := io.ReadAll(c)
		took := time.Since(start)
		close(stop)
		sent := <-written
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection was still open after %v (%d of %d bytes sent)", took, sent, len(raw))
		}
		if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 400 ") && !strings.HasPrefix(string(got), "HTTP/1.1 408 ") {
			t.Errorf("got %q, want nothing or a 400/408 before the connection closed", got)
		}
		if took < readHeaderTimeout-50*time.Millisecond || took > readHeaderTimeout+2*time.Second {
			t.Errorf("cut off after %v, want about %v", took, readHeaderTimeout)
		}
		if sent >= len(raw) {
			t.Errorf("the whole request (%d bytes) went out before the cut-off", sent)
		}
		if after := env.Sim.Stats().Upstream; after != before {
			t.Errorf("the slow request cost %d upstream calls", after-before)
		}
		t.Logf("cut off after %v, %d of %d header bytes sent", took.Round(time.Millisecond), sent, len(raw))
		_ = c.Close()
	})
}

// TestTokenAudienceNeverBecomesUpstream: with no fixed upstream, the proxy picks the Fleet API
// host from the token. An "aud" naming any other host must never be dialed or sent the token:
// every flow (pass-through, command, telemetry config) ends up at a Tesla host. The transport's
// dialer records the host it was asked for and sends every connection to the simulator.
func TestTokenAudienceNeverBecomesUpstream(t *testing.T) {
	key := testenv.NewKey(t)
	pub := testenv.PublicKey(t, key)
	sim := fleetsim.New(fleetsim.Options{Echo: true})
	vin := fleetsim.NewTestVIN(0)
	sim.AddVehicle(vin, pub)
	rec := &recorder{next: sim}
	p := startProxy(t, proxyOptions{Upstream: rec, Key: key})

	tests := []struct {
		name   string
		claims map[string]any
		want   string
	}{
		{"plain foreign host", map[string]any{"sub": "u1", "aud": "https://evil.example"}, forward.HostNA},
		{"fleet-api under a foreign domain", map[string]any{"sub": "u2", "aud": []any{"https://fleet-api.evil.example"}}, forward.HostNA},
		{"Tesla name as a foreign subdomain", map[string]any{"sub": "u3", "aud": []any{"https://" + forward.HostEU + ".evil.example"}}, forward.HostNA},
		{"userinfo", map[string]any{"sub": "u4", "aud": []any{"https://" + forward.HostEU + "@evil.example"}}, forward.HostNA},
		{"port", map[string]any{"sub": "u5", "aud": []any{"https://" + forward.HostEU + ":8443"}}, forward.HostNA},
		{"path", map[string]any{"sub": "u6", "aud": []any{"https://" + forward.HostEU + "/../evil"}}, forward.HostNA},
		{"http scheme", map[string]any{"sub": "u7", "aud": []any{"http://" + forward.HostEU}}, forward.HostNA},
		{"loopback", map[string]any{"sub": "u8", "aud": []any{"https://127.0.0.1", "https://localhost:4443"}}, forward.HostNA},
		{"homoglyph", map[string]any{"sub": "u9", "aud": []any{"https://fleet-api.prd.eu.vn.cloud.teslа.com"}}, forward.HostNA},
		{"escaped", map[string]any{"sub": "u10", "aud": []any{"https://fleet-api.prd.eu.vn.cloud.tesla.com%2F.evil.example"}}, forward.HostNA},
		{"ou_code naming a foreign host", map[string]any{"sub": "u11", "aud": []any{"https://evil.example"}, "ou_code": "evil.example"}, forward.HostNA},
		{"aud not a string", map[string]any{"sub": "u12", "aud": map[string]any{"host": "evil.example"}}, forward.HostNA},
		{"foreign host beside EU", map[string]any{"sub": "u13", "aud": []any{"https://evil.example", "https://" + forward.HostEU}, "ou_code": "EU"}, forward.HostEU},
		{"upper case EU", map[string]any{"sub": "u14", "aud": []any{"HTTPS://" + strings.ToUpper(forward.HostEU)}}, forward.HostEU},
	}
	body := telemetryBody(`["`+vin+`"]`, goodConfigJSON())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := testenv.Token(t, tc.claims)
			start := len(rec.Seen())
			resp, b := do(t, p.Client, "GET", p.URL+"/api/1/vehicles/"+vin+"/vehicle_data", tok, nil, http.Header{"X-Forwarded-Host": {"evil.example"}})
			if resp.StatusCode != http.StatusOK {
				t.Errorf("pass-through: %d %s", resp.StatusCode, b)
			}
			resp, b = do(t, p.Client, "POST", p.URL+"/api/1/vehicles/"+vin+"/command/flash_lights", tok, nil, nil)
			if resp.StatusCode != http.StatusOK || !commandOK(b) {
				t.Errorf("command: %d %s", resp.StatusCode, b)
			}
			resp, b = do(t, p.Client, "POST", p.URL+"/api/1/vehicles/fleet_telemetry_config", tok, body, nil)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("telemetry config: %d %s", resp.StatusCode, b)
			}
			seen := rec.Seen()[start:]
			if len(seen) < 3 {
				t.Fatalf("upstream saw %d requests, want at least 3", len(seen))
			}
			for _, s := range seen {
				if s.Host != tc.want || s.SNI != tc.want {
					t.Errorf("%s %s went to Host %q (TLS name %q), want %s", s.Method, s.URI, s.Host, s.SNI, tc.want)
				}
			}
		})
	}
	// A hostile Host header moves nothing either.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", p.URL+"/api/1/vehicles", nil)
	req.Host = "evil.example"
	req.Header.Set("Authorization", "Bearer "+testenv.Token(t, map[string]any{"sub": "h"}))
	resp, err := p.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if seen := rec.Seen(); seen[len(seen)-1].Host != forward.HostNA {
		t.Errorf("a hostile Host header sent the request to %q", seen[len(seen)-1].Host)
	}
	checkDialedOnlyTesla(t, p.Dial)
	if len(p.Dial.Hosts()) == 0 {
		t.Error("the dial recorder saw no dial at all")
	}
}

// TestHeaderFloodRefusedHTTP2: the same flood over HTTP/2, written frame by frame (Go's own client
// refuses to send headers over the limit the server advertises), gets 431 or a reset (Go's HTTP/2
// server answers 431 just over the limit and drops the connection with GOAWAY PROTOCOL_ERROR when
// the header block is far over it, its CONTINUATION-flood defense), and nothing goes upstream.
func TestHeaderFloodRefusedHTTP2(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Echo: true})
	d := &tls.Dialer{Config: &tls.Config{RootCAs: rootsOf(env.Client), ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(t.Context(), "tcp", hostOf(t, env.URL))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	before := env.Sim.Stats().Upstream
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{
		{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost"},
		{":path", "/api/1/vehicles/" + env.VINs[0] + "/vehicle_data"}, {"authorization", "Bearer " + env.Token},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := range 1000 {
		_ = enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-flood-%d", i), Value: strings.Repeat("a", 100), Sensitive: true})
	}
	b := block.Bytes()
	const chunk = 16 << 10
	first := b[:min(chunk, len(b))]
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: len(b) <= chunk}); err != nil {
		t.Fatal(err)
	}
	for off := chunk; off < len(b); off += chunk {
		end := min(off+chunk, len(b))
		if err := fr.WriteContinuation(1, end == len(b), b[off:end]); err != nil {
			break // the server may hang up before reading it all
		}
	}
	outcome := ""
	for outcome == "" {
		f, err := fr.ReadFrame()
		if err != nil {
			outcome = "connection closed: " + err.Error()
			break
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				outcome = "status " + f.PseudoValue("status")
			}
		case *http2.RSTStreamFrame:
			outcome = "reset " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			outcome = "goaway " + f.ErrCode.String()
		}
	}
	t.Logf("outcome: %s", outcome)
	if outcome != "status 431" && !strings.HasPrefix(outcome, "reset") && !strings.HasPrefix(outcome, "goaway") && !strings.HasPrefix(outcome, "connection closed") {
		t.Errorf("outcome %q, want 431 or a reset", outcome)
	}
	if after := env.Sim.Stats().Upstream; after != before {
		t.Errorf("the flood cost %d upstream calls", after-before)
	}
	checkHealthy(t, env)
}
