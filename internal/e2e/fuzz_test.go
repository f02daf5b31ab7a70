package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// commandSeeds are command names and bodies to start fuzzing from: the bad-input table's command
// cases and a few good commands.
func commandSeeds() [][2]string {
	seeds := [][2]string{
		{"door_lock", ""}, {"flash_lights", "null"}, {"set_charge_limit", `{"percent":80}`},
		{"actuate_trunk", `{"which_trunk":"rear"}`}, {"set_temps", `{"driver_temp":21,"passenger_temp":21}`},
		{"wake_up", `not json`}, {"window_control", `{"command":"close","lat":0,"lon":0}`},
		{"set_sentry_mode", `{"on":true}`}, {"", `{}`}, {"..", `{}`}, {"set_vehicle_name", `{"vehicle_name":"x"}`},
	}
	for _, c := range badClasses() {
		for _, tc := range c.cases {
			name, ok := strings.CutPrefix(tc.path, commandPath)
			if !ok || len(tc.body) > 1<<10 || tc.auth != "" {
				continue
			}
			seeds = append(seeds, [2]string{name, string(tc.body)})
		}
	}
	return seeds
}

// isParams reports whether body is what a command accepts: nothing, null, or one JSON object.
func isParams(body []byte) bool {
	if len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var m map[string]any
	if dec.Decode(&m) != nil {
		return false
	}
	_, err := dec.Token()
	return errors.Is(err, io.EOF)
}

// allowedCommandStatus are the statuses a command may get from the proxy in front of a healthy
// simulator: never 500.
var allowedCommandStatus = map[int]bool{200: true, 400: true, 403: true, 404: true, 413: true, 502: true, 503: true, 504: true}

// FuzzCommandParams sends random command names and bodies to the proxy's handler in-process (a
// recorder, no client TLS), with the simulator behind it over TLS. Every answer must have an
// allowed status (never 500) and a JSON body; bodies that are not one JSON object get 400
// invalid_json; answers 400, 404 and 413 cost no upstream call.
func FuzzCommandParams(f *testing.F) {
	for _, s := range commandSeeds() {
		f.Add(s[0], []byte(s[1]))
	}
	env := testenv.Start(f, testenv.Options{Vehicles: 1, Logger: zap.NewNop(), Timeout: 3 * time.Second, Echo: true})
	vin := env.VINs[0]
	pub := testenv.PublicKey(f, env.Key)
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		// Commands such as erase_user_data run for real; keep the key enrolled whatever ran.
		env.Sim.Vehicle(vin).Enroll(pub)
		target := "/api/1/vehicles/" + vin + "/command/" + url.PathEscape(name)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+env.Token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		before := env.Sim.Stats().Upstream
		env.App.Handler.ServeHTTP(rec, req)
		upstream := env.Sim.Stats().Upstream - before
		status, got := rec.Code, rec.Body.Bytes()

		if !allowedCommandStatus[status] {
			t.Fatalf("POST %s %q: status %d %s", target, body, status, got)
		}
		if !json.Valid(got) {
			t.Fatalf("POST %s %q: answer is not JSON: %q", target, body, got)
		}
		if status >= 400 {
			var e apiError
			_ = json.Unmarshal(got, &e)
			if e.Error == "" || e.ErrorDescription == "" {
				t.Errorf("POST %s: error answer without error or description: %s", target, got)
			}
			if frag := internalsIn(e.ErrorDescription); frag != "" {
				t.Errorf("POST %s %q: error_description %q gives away internals (%q)", target, body, e.ErrorDescription, frag)
			}
		}
		dots := hasDotSegment("/" + url.PathEscape(name))
		if !dots && name != "" && name != "wake_up" && !isParams(body) {
			var e apiError
			_ = json.Unmarshal(got, &e)
			if status != http.StatusBadRequest || e.Error != "invalid_json" {
				t.Errorf("POST %s %q: %d %s, want 400 invalid_json", target, body, status, got)
			}
		}
		if (status == 400 || status == 404 || status == 413) && upstream != 0 {
			t.Errorf("POST %s %q: answered %d after %d upstream calls; refusals must cost none", target, body, status, upstream)
		}
	})
}

// hasDotSegment reports whether an escaped path has a "." or ".." segment, plain or
// percent-encoded (an independent copy of the router's rule, to check it against).
func hasDotSegment(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		s := strings.ReplaceAll(strings.ToLower(seg), "%2e", ".")
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}

var (
	commandShape = regexp.MustCompile(`^/api/1/vehicles/[^/]+/command/[^/]+$`)
	tokenChars   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// FuzzRouting sends random methods and request targets through the router, with stub signed
// handlers and a stub upstream transport. Nothing may panic or answer 500; the signed handlers
// run only for their exact shapes (and always for them); CONNECT and dot-segment paths never
// reach the upstream; what reaches the upstream has the client's escaped path and query, byte
// for byte, and goes to the configured host.
func FuzzRouting(f *testing.F) {
	seeds := []struct {
		method, target string
	}{
		{"POST", "/api/1/vehicles/5YJ3E1EA1KF000001/command/door_lock"},
		{"POST", "/api/1/vehicles/fleet_telemetry_config"},
		{"GET", "/api/1/vehicles/fleet_telemetry_config"},
		{"POST", "/api/1/vehicles/a%2Fb/command/door_lock"},
		{"POST", "/api/1/vehicles/x/command/door_lock/"},
		{"POST", "/api/1/vehicles/x/command%2Fdoor_lock"},
		{"POST", "/api/1/vehicles//command/door_lock"},
		{"POST", "//api/1/vehicles/x/command/door_lock"},
		{"POST", "/API/1/vehicles/x/command/door_lock"},
		{"POST", "/api/1/vehicles/fleet_telemetry_config?x=1"},
		{"POST", "/api/1/vehicles/fleet_telemetry_config/"},
		{"GET", "/health"},
		{"GET", "*"},
		{"OPTIONS", "*"},
		{"CONNECT", "evil.example:443"},
		{"CONNECT", "/api/1/vehicles"},
		{"GET", "http://evil.example/api/1/vehicles"},
		{"GET", "/api/1/vehicles/x/vehicle_data?endpoints=location_data;charge_state"},
		{"PROPFIND", "/api/1/vehicles"},
		{"GET", "/api/1/vehicles/%zz/vehicle_data"},
	}
	for _, s := range seeds {
		f.Add(s.method, s.target, true)
	}
	for _, d := range dotSegmentPaths {
		f.Add(d.method, strings.ReplaceAll(d.path, vinTag, "5YJ3E1EA1KF000001"), true)
	}
	for _, c := range badClasses() {
		for _, tc := range c.cases {
			f.Add(tc.method, strings.ReplaceAll(tc.path, vinTag, "5YJ3E1EA1KF000001"), tc.auth == "")
		}
	}
	f.Add("GET", "/api/1/vehicles", false)

	var (
		hit      string
		outgoing *http.Request
	)
	upstream := &url.URL{Scheme: "https", Host: "fleet.test"}
	fwd, err := forward.New(forward.Options{
		Upstream: upstream,
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			outgoing = r
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(`{"response":{}}`)), Request: r}, nil
		}),
	})
	if err != nil {
		f.Fatal(err)
	}
	stub := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hit = name
			w.WriteHeader(http.StatusNoContent)
		})
	}
	h := server.NewRouter(server.Deps{
		Logger: zap.NewNop(), Forward: fwd, Commands: stub("command"), Telemetry: stub("telemetry"),
		PublicKeyPEM: []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"),
	})
	token := testenv.Token(f, map[string]any{"sub": "fuzz"})

	f.Fuzz(func(t *testing.T, method, target string, withToken bool) {
		// Only what Go's server would hand to a handler: a method token, a target without
		// spaces or control bytes that parses as a request URI (or an authority for CONNECT).
		if !tokenChars.MatchString(method) || target == "" {
			return
		}
		for i := 0; i < len(target); i++ {
			if target[i] <= ' ' || target[i] == 0x7f {
				return
			}
		}
		var u *url.URL
		if method == http.MethodConnect && !strings.HasPrefix(target, "/") {
			u = &url.URL{Host: target}
		} else {
			var err error
			if u, err = url.ParseRequestURI(target); err != nil {
				return
			}
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Method, req.URL, req.RequestURI, req.Host = method, u, target, "proxy.test"
		if withToken {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		hit, outgoing = "", nil
		rec := httptest.NewRecorder()
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s %q panicked: %v", method, target, v)
				}
			}()
			h.ServeHTTP(rec, req)
		}()

		p := u.EscapedPath()
		dots := hasDotSegment(p)
		post := method == http.MethodPost
		if rec.Code == http.StatusInternalServerError {
			t.Fatalf("%s %q: 500 %s", method, target, rec.Body)
		}
		switch {
		case method == http.MethodConnect:
			if rec.Code != http.StatusMethodNotAllowed || hit != "" || outgoing != nil {
				t.Errorf("CONNECT %q: %d, hit %q, upstream %v; want 405 and nothing run", target, rec.Code, hit, outgoing != nil)
			}
			return
		case dots || !strings.HasPrefix(p, "/"):
			if rec.Code != http.StatusBadRequest || hit != "" || outgoing != nil {
				t.Errorf("%s %q: %d, hit %q, upstream %v; want 400 and nothing run", method, target, rec.Code, hit, outgoing != nil)
			}
			return
		}
		switch hit {
		case "command":
			if !post || !withToken || !commandShape.MatchString(p) {
				t.Errorf("%s %q (path %q) reached the command handler", method, target, p)
			}
		case "telemetry":
			if !post || !withToken || p != server.PathTelemetry {
				t.Errorf("%s %q (path %q) reached the telemetry handler", method, target, p)
			}
		}
		if withToken && post && commandShape.MatchString(p) && hit != "command" {
			t.Errorf("POST %q has the command shape but got %d (hit %q)", target, rec.Code, hit)
		}
		if withToken && post && p == server.PathTelemetry && hit != "telemetry" {
			t.Errorf("POST %q is the telemetry route but got %d (hit %q)", target, rec.Code, hit)
		}
		if outgoing != nil {
			if !withToken {
				t.Errorf("%s %q reached the upstream without a token", method, target)
			}
			if hit != "" {
				t.Errorf("%s %q ran the %s handler and the upstream", method, target, hit)
			}
			if outgoing.URL.Host != upstream.Host || (outgoing.Host != "" && outgoing.Host != upstream.Host) {
				t.Errorf("%s %q went to %q (Host %q)", method, target, outgoing.URL.Host, outgoing.Host)
			}
			if got := outgoing.URL.EscapedPath(); got != p || outgoing.URL.RawQuery != u.RawQuery {
				t.Errorf("%s %q went upstream as path %q query %q, want %q %q", method, target, got, outgoing.URL.RawQuery, p, u.RawQuery)
			}
			if outgoing.Method != method {
				t.Errorf("%s %q went upstream as %s", method, target, outgoing.Method)
			}
		}
	})
}
