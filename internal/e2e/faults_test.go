package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"google.golang.org/protobuf/proto"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// simProxy is a simulator behind a recorder, and a proxy built by startProxy in front of it.
type simProxy struct {
	*proxy
	Sim   *fleetsim.Server
	Rec   *recorder
	VINs  []string
	Token string
}

// startSimProxy starts a simulator with n vehicles that know the proxy's key, a recorder in
// front of it (intercept may answer requests itself), and a proxy.
func startSimProxy(t testing.TB, n int, o proxyOptions, intercept func(w http.ResponseWriter, r *http.Request, body []byte) bool) *simProxy {
	t.Helper()
	if o.Key == nil {
		o.Key = testenv.NewKey(t)
	}
	sim := fleetsim.New(fleetsim.Options{})
	var vins []string
	for i := range n {
		vin := fleetsim.NewTestVIN(i)
		sim.AddVehicle(vin, testenv.PublicKey(t, o.Key))
		vins = append(vins, vin)
	}
	rec := &recorder{next: sim, intercept: intercept}
	o.Upstream = rec
	p := startProxy(t, o)
	return &simProxy{proxy: p, Sim: sim, Rec: rec, VINs: vins,
		Token: testenv.Token(t, map[string]any{"sub": "fault-user", "aud": []any{"https://" + forward.HostNA}, "ou_code": "NA"})}
}

func (s *simProxy) command(t testing.TB, vin, name string, body []byte) (*http.Response, []byte) {
	t.Helper()
	return do(t, s.Client, "POST", s.URL+"/api/1/vehicles/"+vin+"/command/"+name, s.Token, body, nil)
}

func (s *simProxy) telemetry(t testing.TB, vin string) (*http.Response, []byte) {
	t.Helper()
	return do(t, s.Client, "POST", s.URL+"/api/1/vehicles/fleet_telemetry_config", s.Token, telemetryBody(`["`+vin+`"]`, goodConfigJSON()), nil)
}

func (s *simProxy) get(t testing.TB, path string) (*http.Response, []byte) {
	t.Helper()
	return do(t, s.Client, "GET", s.URL+path, s.Token, nil, nil)
}

// isSignedCommand reports whether r is a signed_command call, and whether its message is a
// session handshake.
func isSignedCommand(r *http.Request, body []byte) (signed, handshake bool) {
	if !strings.HasSuffix(r.URL.Path, "/signed_command") {
		return false, false
	}
	var b struct {
		RoutableMessage string `json:"routable_message"`
	}
	if json.Unmarshal(body, &b) != nil {
		return true, false
	}
	raw, err := base64.StdEncoding.DecodeString(b.RoutableMessage)
	if err != nil {
		return true, false
	}
	var m universal.RoutableMessage
	if proto.Unmarshal(raw, &m) != nil {
		return true, false
	}
	return true, m.GetSessionInfoRequest() != nil
}

// runSim lets the simulator handle r (so a command really runs) and returns its answer.
func runSim(sim http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, r)
	return rec
}

// mayHaveRun and notSent are what answers must say about whether a command ran.
const (
	mayHaveRun = "may have been carried out"
	notSent    = "not sent"
)

func wantDescription(t testing.TB, e apiError, want string) {
	t.Helper()
	if !strings.Contains(e.ErrorDescription, want) {
		t.Errorf("error_description %q does not say %q", e.ErrorDescription, want)
	}
}

// TestUpstreamConnectionRefused: nothing listens at the upstream. Every flow answers 502, and a
// command says it was not sent.
func TestUpstreamConnectionRefused(t *testing.T) {
	for _, fixed := range []bool{true, false} {
		withoutLeaks(t, fmt.Sprintf("fixed=%v", fixed), func(t *testing.T) {
			s := startSimProxy(t, 1, proxyOptions{Fixed: fixed, DeadUpstream: true}, nil)
			vin := s.VINs[0]
			resp, body := s.get(t, "/api/1/vehicles/"+vin+"/vehicle_data")
			checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "upstream_unreachable")
			resp, body = s.command(t, vin, "door_lock", nil)
			e := checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "upstream_unreachable")
			wantDescription(t, e, notSent)
			resp, body = s.telemetry(t, vin)
			checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "upstream_unreachable")
			if !fixed {
				checkDialedOnlyTesla(t, s.Dial)
			}
		})
	}
}

// TestUpstreamResetMidBody: the upstream breaks off in the middle of its answer. A pass-through
// client must see a broken transfer (an error reading the body), never a clean end of a
// truncated body; a command whose answer broke off gets 502 and is said to maybe have run.
func TestUpstreamResetMidBody(t *testing.T) {
	const total, sent = 100_000, 10_000
	breakOff := func(w http.ResponseWriter, chunked bool, rst bool) {
		if !chunked {
			w.Header().Set("Content-Length", fmt.Sprint(total))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(bytes.Repeat([]byte("x"), sent))
		http.NewResponseController(w).Flush()
		if rst {
			// A TCP reset: hijack the HTTP/1.1 connection and close it with SO_LINGER 0.
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				if tc, ok := c.(*tls.Conn); ok {
					if nc, ok := tc.NetConn().(interface{ SetLinger(int) error }); ok {
						_ = nc.SetLinger(0)
					}
				}
				_ = c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	for _, tc := range []struct {
		name           string
		http1, chunked bool
	}{
		{"HTTP/2 stream reset, Content-Length", false, false},
		{"HTTP/2 stream reset, no length", false, true},
		{"TCP reset, Content-Length", true, false},
		{"TCP reset, chunked", true, true},
	} {
		withoutLeaks(t, tc.name, func(t *testing.T) {
			var sim http.Handler
			s := startSimProxy(t, 1, proxyOptions{Fixed: true, HTTP1Upstream: tc.http1}, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
				if strings.HasSuffix(r.URL.Path, "/vehicle_data") {
					breakOff(w, tc.chunked, tc.http1)
					return true
				}
				if signed, handshake := isSignedCommand(r, body); signed && !handshake {
					runSim(sim, r) // the command runs; its answer breaks off
					breakOff(w, tc.chunked, tc.http1)
					return true
				}
				return false
			})
			sim = s.Sim
			vin := s.VINs[0]
			// Pass-through over HTTP/2 and over HTTP/1.1.
			h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: s.Client.Transport.(*http.Transport).TLSClientConfig.Clone(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
			t.Cleanup(h1.CloseIdleConnections)
			for _, c := range []*http.Client{s.Client, h1} {
				req, _ := http.NewRequestWithContext(t.Context(), "GET", s.URL+"/api/1/vehicles/"+vin+"/vehicle_data", nil)
				req.Header.Set("Authorization", "Bearer "+s.Token)
				resp, err := c.Do(req)
				if err != nil {
					// Broken before the headers reached the client: also not a clean answer.
					t.Logf("the client got no answer: %v", err)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Logf("%s: %d, %d body bytes, then %v", resp.Proto, resp.StatusCode, len(b), err)
				if err == nil {
					t.Errorf("%s: the client read a clean %d-byte body (status %d) from an upstream that broke off", resp.Proto, len(b), resp.StatusCode)
				}
				if len(b) > total {
					t.Errorf("%s: read %d bytes, more than the upstream sent", resp.Proto, len(b))
				}
			}
			// A command: its first call (the handshake) is whole, the command's answer breaks off.
			before := len(s.Sim.Executions(vin))
			resp, body := s.command(t, vin, "flash_lights", nil)
			e := checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "")
			wantDescription(t, e, mayHaveRun)
			if got := len(s.Sim.Executions(vin)) - before; got != 1 {
				t.Errorf("the command ran %d times, want exactly once", got)
			}
		})
	}
}

// TestUpstreamSlowHeaders: an upstream that does not start its answer within the timeout gets
// 504, for pass-through, commands (handshake and command) and telemetry configs.
func TestUpstreamSlowHeaders(t *testing.T) {
	const timeout = 500 * time.Millisecond
	withoutLeaks(t, "slow", func(t *testing.T) {
		var slowAll, slowCommand atomic.Bool
		s := startSimProxy(t, 2, proxyOptions{Fixed: true, Timeout: timeout}, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			_, handshake := isSignedCommand(r, body)
			if slowAll.Load() || (slowCommand.Load() && !handshake) {
				select {
				case <-r.Context().Done():
					// The proxy gave up and hung up. A real server has no one to answer
					// now; an empty 200 written here could still race into the proxy's
					// read of the closing connection (Go's transport prefers a response
					// that races its cancellation), which no real upstream would send.
					panic(http.ErrAbortHandler)
				case <-time.After(10 * timeout):
				}
				return true
			}
			return false
		})
		vin, fresh := s.VINs[0], s.VINs[1]
		if resp, body := s.command(t, vin, "flash_lights", nil); resp.StatusCode != 200 || !commandOK(body) {
			t.Fatalf("first command: %d %s", resp.StatusCode, body)
		}
		slowAll.Store(true)
		start := time.Now()
		resp, body := s.get(t, "/api/1/vehicles/"+vin+"/vehicle_data")
		checkError(t, resp.StatusCode, resp.Header, body, http.StatusGatewayTimeout, "upstream_timeout")
		if took := time.Since(start); took > 4*timeout {
			t.Errorf("pass-through 504 took %v", took)
		}
		resp, body = s.telemetry(t, vin)
		checkError(t, resp.StatusCode, resp.Header, body, http.StatusGatewayTimeout, "")
		resp, body = s.command(t, fresh, "flash_lights", nil)
		e := checkError(t, resp.StatusCode, resp.Header, body, http.StatusGatewayTimeout, "")
		wantDescription(t, e, notSent)
		slowAll.Store(false)
		slowCommand.Store(true)
		resp, body = s.command(t, vin, "flash_lights", nil)
		e = checkError(t, resp.StatusCode, resp.Header, body, http.StatusGatewayTimeout, "")
		wantDescription(t, e, mayHaveRun)
		slowCommand.Store(false)
		if resp, body := s.command(t, vin, "flash_lights", nil); resp.StatusCode != 200 || !commandOK(body) {
			t.Errorf("a command after the timeouts: %d %s", resp.StatusCode, body)
		}
	})
}

// TestUpstreamStalledBody: an upstream that sends its headers and part of the body, then
// stalls. Pass-through is cut off by the forwarder's idle timeout (the client sees a broken
// transfer); a command or telemetry answer is cut off by the upstream deadline (504).
func TestUpstreamStalledBody(t *testing.T) {
	stall := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"response":`))
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	}
	withoutLeaks(t, "pass-through", func(t *testing.T) {
		const idle = 400 * time.Millisecond
		up, pool := testenv.StartTLS(t, http.HandlerFunc(stall))
		tr := testenv.UpstreamTransport(t, 5*time.Second, pool)
		fixed, _ := url.Parse(up.URL)
		// app.Options takes the idle limit, but not the short one this test needs from the start, so
		// this one proxy is assembled from its parts.
		fwd, err := forward.New(forward.Options{Upstream: fixed, Transport: tr, Timeout: 5 * time.Second, IdleTimeout: idle})
		if err != nil {
			t.Fatal(err)
		}
		ts, roots := testenv.StartServerTLS(t, server.NewHTTPServer(server.Options{Handler: server.NewRouter(server.Deps{Forward: fwd}), UpstreamTimeout: 5 * time.Second}))
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
		t.Cleanup(c.CloseIdleConnections)
		start := time.Now()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/api/1/vehicles", nil)
		req.Header.Set("Authorization", "Bearer "+testenv.Token(t, map[string]any{"sub": "s"}))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err == nil {
			t.Errorf("a stalled body ended cleanly after %v: %q", took, b)
		}
		if took > idle+3*time.Second {
			t.Errorf("the stalled transfer was cut off after %v, want about %v", took, idle)
		}
	})
	withoutLeaks(t, "command and telemetry", func(t *testing.T) {
		const timeout = 500 * time.Millisecond
		var stallCommand, stallTelemetry atomic.Bool
		var sim http.Handler
		s := startSimProxy(t, 1, proxyOptions{Fixed: true, Timeout: timeout}, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			if signed, handshake := isSignedCommand(r, body); signed && !handshake && stallCommand.Load() {
				runSim(sim, r)
				stall(w, r)
				return true
			}
			if strings.HasSuffix(r.URL.Path, "_jws") && stallTelemetry.Load() {
				stall(w, r)
				return true
			}
			return false
		})
		sim = s.Sim
		vin := s.VINs[0]
		stallCommand.Store(true)
		before := len(s.Sim.Executions(vin))
		resp, body := s.command(t, vin, "flash_lights", nil)
		e := checkError(t, resp.StatusCode, resp.Header, body, http.StatusGatewayTimeout, "")
		wantDescription(t, e, mayHaveRun)
		if got := len(s.Sim.Executions(vin)) - before; got != 1 {
			t.Errorf("the command ran %d times, want once", got)
		}
		stallCommand.Store(false)
		stallTelemetry.Store(true)
		resp, body = s.telemetry(t, vin)
		checkError(t, resp.StatusCode, resp.Header, body, http.StatusGatewayTimeout, "")
	})
}

// TestInvalidSignedCommandAnswers: a 200 from signed_command that is not JSON, not base64 or not
// a protocol message gets 502, saying the command may have run (or, for the handshake, that it
// was not sent); the next command still works.
func TestInvalidSignedCommandAnswers(t *testing.T) {
	answers := []struct{ name, body string }{
		{"not JSON", `not json`},
		{"truncated JSON", `{"response":"AAAA`},
		{"empty object", `{}`},
		{"null response", `{"response":null}`},
		{"number response", `{"response":42}`},
		{"not base64", `{"response":"%%%not base64%%%"}`},
		{"not a protocol message", `{"response":"` + base64.StdEncoding.EncodeToString([]byte{0xff, 0xff, 0xff, 0x07}) + `"}`},
		{"HTML", `<html><body>502 Bad Gateway</body></html>`},
		{"empty body", ``},
	}
	withoutLeaks(t, "answers", func(t *testing.T) {
		var mode atomic.Value // "", "command:<body>", "handshake:<body>"
		mode.Store("")
		var sim http.Handler
		s := startSimProxy(t, len(answers)+1, proxyOptions{Fixed: true, Timeout: 2 * time.Second}, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			signed, handshake := isSignedCommand(r, body)
			m := mode.Load().(string)
			if !signed || m == "" {
				return false
			}
			kind, answer, _ := strings.Cut(m, ":")
			if (kind == "handshake") != handshake {
				return false
			}
			if !handshake {
				runSim(sim, r)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, answer)
			return true
		})
		sim = s.Sim
		for i, a := range answers {
			t.Run(a.name, func(t *testing.T) {
				vin := s.VINs[0]
				if resp, body := s.command(t, vin, "flash_lights", nil); resp.StatusCode != 200 || !commandOK(body) {
					t.Fatalf("command before: %d %s", resp.StatusCode, body)
				}
				before := len(s.Sim.Executions(vin))
				mode.Store("command:" + a.body)
				resp, body := s.command(t, vin, "flash_lights", nil)
				mode.Store("")
				e := checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "invalid_upstream_answer")
				wantDescription(t, e, mayHaveRun)
				if got := len(s.Sim.Executions(vin)) - before; got != 1 {
					t.Errorf("the command ran %d times, want once", got)
				}
				// A vehicle never seen before: the handshake's answer is the broken one.
				fresh := s.VINs[i+1]
				mode.Store("handshake:" + a.body)
				resp, body = s.command(t, fresh, "flash_lights", nil)
				mode.Store("")
				e = checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "invalid_upstream_answer")
				wantDescription(t, e, notSent)
				if n := len(s.Sim.Executions(fresh)); n != 0 {
					t.Errorf("%d commands ran after a broken handshake", n)
				}
				if resp, body := s.command(t, fresh, "flash_lights", nil); resp.StatusCode != 200 || !commandOK(body) {
					t.Errorf("the next command: %d %s", resp.StatusCode, body)
				}
			})
		}
	})
}

// TestUpstreamAnswerTooLarge: answers the proxy must read itself (signed_command, the telemetry
// JWS endpoint) are bounded; over the limit is 502. Pass-through answers stream at any size.
func TestUpstreamAnswerTooLarge(t *testing.T) {
	const limit = 8 << 10
	withoutLeaks(t, "too large", func(t *testing.T) {
		big := `{"response":"` + strings.Repeat("A", limit) + `"}`
		var sim http.Handler
		s := startSimProxy(t, 1, proxyOptions{Fixed: true, MaxResponseBytes: limit}, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			signed, handshake := isSignedCommand(r, body)
			switch {
			case signed && !handshake:
				runSim(sim, r)
				_, _ = io.WriteString(w, big)
				return true
			case strings.HasSuffix(r.URL.Path, "_jws"), strings.HasSuffix(r.URL.Path, "/vehicle_data"):
				_, _ = io.WriteString(w, big)
				return true
			}
			return false
		})
		sim = s.Sim
		vin := s.VINs[0]
		resp, body := s.command(t, vin, "flash_lights", nil)
		e := checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "upstream_answer_too_large")
		wantDescription(t, e, mayHaveRun)
		if n := len(s.Sim.Executions(vin)); n != 1 {
			t.Errorf("the command ran %d times, want once", n)
		}
		resp, body = s.telemetry(t, vin)
		checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "upstream_answer_too_large")
		resp, body = s.get(t, "/api/1/vehicles/"+vin+"/vehicle_data")
		if resp.StatusCode != 200 || string(body) != big {
			t.Errorf("pass-through of a large answer: %d, %d bytes, want 200 and %d bytes", resp.StatusCode, len(body), len(big))
		}
	})
}

// Test421Bounded: a 421 naming a host outside Tesla's domains is passed back and that host is
// never dialed; a 421 that bounces between regions costs at most 2 upstream calls per request.
func Test421Bounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		host     string
		maxCalls int
	}{
		{"non-Tesla fleet-api host", "fleet-api.evil.example", 1},
		{"non-Tesla host", "evil.example", 1},
		{"Tesla look-alike", forward.HostEU + ".evil.example", 1},
		{"loopback", "127.0.0.1", 1},
		{"bouncing between regions", forward.HostEU, 2},
	} {
		withoutLeaks(t, tc.name, func(t *testing.T) {
			s := startSimProxy(t, 1, proxyOptions{}, nil)
			vin := s.VINs[0]
			s.Sim.SetFault("", fleetsim.Fault{MisdirectedHost: tc.host})
			flows := []struct {
				name string
				run  func() (*http.Response, []byte)
			}{
				{"pass-through", func() (*http.Response, []byte) { return s.get(t, "/api/1/vehicles/"+vin+"/vehicle_data") }},
				{"pass-through POST", func() (*http.Response, []byte) {
					return do(t, s.Client, "POST", s.URL+"/api/1/vehicles/fleet_status", s.Token, []byte(`{"vins":["`+vin+`"]}`), nil)
				}},
				{"command", func() (*http.Response, []byte) { return s.command(t, vin, "flash_lights", nil) }},
				{"telemetry", func() (*http.Response, []byte) { return s.telemetry(t, vin) }},
			}
			for _, f := range flows {
				for round := range 2 { // the second round runs with whatever host was learned
					before := s.Sim.Stats().Upstream
					resp, body := f.run()
					if resp.StatusCode != http.StatusMisdirectedRequest {
						t.Errorf("%s #%d: %d %s, want the 421 passed back", f.name, round, resp.StatusCode, body)
					}
					if calls := s.Sim.Stats().Upstream - before; calls < 1 || calls > tc.maxCalls {
						t.Errorf("%s #%d: %d upstream calls, want 1 to %d", f.name, round, calls, tc.maxCalls)
					}
					if bytes.Count(body, []byte(`"error"`)) != 1 {
						t.Errorf("%s #%d: body holds other than one answer: %s", f.name, round, body)
					}
				}
			}
			checkDialedOnlyTesla(t, s.Dial)
			for _, h := range s.Dial.Hosts() {
				if h != forward.HostNA && h != forward.HostEU {
					t.Errorf("dialed %q", h)
				}
			}
			if n := len(s.Sim.Executions("")); n != 0 {
				t.Errorf("%d commands ran", n)
			}
		})
	}
}

// TestServerErrorAfterCommandSent: the Fleet API answers 5xx after the command ran. The proxy
// must not send it again (the vehicle ran it exactly once) and must say it may have succeeded.
func TestServerErrorAfterCommandSent(t *testing.T) {
	for _, tc := range []struct {
		upstream, want int
	}{
		{500, http.StatusBadGateway},
		{502, http.StatusBadGateway},
		{503, http.StatusGatewayTimeout},
		{504, http.StatusGatewayTimeout},
		{540, http.StatusBadGateway},
	} {
		withoutLeaks(t, fmt.Sprint(tc.upstream), func(t *testing.T) {
			s := startSimProxy(t, 1, proxyOptions{Fixed: true}, nil)
			vin := s.VINs[0]
			for i, name := range []string{"flash_lights", "door_lock"} { // infotainment, VCSEC
				before := len(s.Sim.Executions(vin))
				upBefore := s.Sim.Stats().Upstream
				s.Sim.SetFault(vin, fleetsim.Fault{FailAfterExecution: tc.upstream})
				resp, body := s.command(t, vin, name, nil)
				s.Sim.SetFault(vin, fleetsim.Fault{})
				e := checkError(t, resp.StatusCode, resp.Header, body, tc.want, "upstream_error_after_send")
				wantDescription(t, e, mayHaveRun)
				// Nothing is re-sent later either.
				time.Sleep(200 * time.Millisecond)
				if got := len(s.Sim.Executions(vin)) - before; got != 1 {
					t.Errorf("%s ran %d times, want exactly once", name, got)
				}
				// One handshake (first command of each domain) plus the one command.
				if calls := s.Sim.Stats().Upstream - upBefore; calls > 2 || (i > 0 && calls > 2) {
					t.Errorf("%s cost %d upstream calls, want at most a handshake and the command", name, calls)
				}
			}
			if resp, body := s.command(t, vin, "flash_lights", nil); resp.StatusCode != 200 || !commandOK(body) {
				t.Errorf("a command after the failures: %d %s", resp.StatusCode, body)
			}
		})
	}
}
