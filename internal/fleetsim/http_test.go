package fleetsim

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"

	"github.com/teslaproxy/proxy/internal/jws"
)

// do sends one request and returns the status, headers and body.
func do(t *testing.T, ts *httptest.Server, method, path string, body io.Reader, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func decodeEcho(t *testing.T, b []byte) Echo {
	t.Helper()
	var env struct {
		Response Echo `json:"response"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("echo %s: %v", b, err)
	}
	return env.Response
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestEcho(t *testing.T) {
	_, ts := startSim(t, Options{Echo: true})
	body := []byte(`{"a":1}`)
	code, _, out := do(t, ts, http.MethodPatch,
		"/api/1/vehicles/5YJ3E1EA0PF000001/vehicle_data%2Fx?endpoints=location_data%3Bcharge_state&b=%20",
		bytes.NewReader(body), http.Header{
			"Authorization":   {"Bearer secret-token"},
			"X-Forwarded-For": {"192.0.2.1"},
			"X-Custom":        {"one", "two"},
			"Connection":      {"X-Hop"},
			"X-Hop":           {"dropped"},
			"Content-Type":    {"application/json"},
		})
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, out)
	}
	got := decodeEcho(t, out)
	want := Echo{
		Method:              http.MethodPatch,
		Path:                "/api/1/vehicles/5YJ3E1EA0PF000001/vehicle_data%2Fx",
		RequestURI:          "/api/1/vehicles/5YJ3E1EA0PF000001/vehicle_data%2Fx?endpoints=location_data%3Bcharge_state&b=%20",
		RawQuery:            "endpoints=location_data%3Bcharge_state&b=%20",
		BodySHA256:          sha(body),
		BodyLength:          int64(len(body)),
		Host:                strings.TrimPrefix(ts.URL, "https://"),
		AuthorizationSHA256: sha([]byte("Bearer secret-token")),
		XForwardedFor:       "192.0.2.1",
		Header: map[string][]string{
			"Accept-Encoding": {"gzip"},
			"Content-Type":    {"application/json"},
			"User-Agent":      {"Go-http-client/1.1"},
			"X-Custom":        {"one", "two"},
			"X-Forwarded-For": {"192.0.2.1"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("echo (-want +got):\n%s", diff)
	}
	if bytes.Contains(out, []byte("secret-token")) {
		t.Error("the echo leaks the bearer token")
	}
}

// TestEchoRawPath sends paths a client library would clean, over a raw connection, and checks
// they arrive unchanged (no redirect, no cleaning).
func TestEchoRawPath(t *testing.T) {
	_, ts := startSim(t, Options{Echo: true})
	for _, target := range []string{
		"/api/1//vehicles/../x/./y",
		"/api/1/vehicles/%2e%2e/a%3Fb",
		"/oauth2/v3/token",
	} {
		conn, err := tls.Dial("tcp", ts.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test server
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: fleet.example\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", target, resp.StatusCode)
			continue
		}
		e := decodeEcho(t, b)
		if e.Path != target || e.RequestURI != target || e.Host != "fleet.example" || e.AuthorizationSHA256 != "" {
			t.Errorf("%s: echo = %+v", target, e)
		}
	}
}

// zeroReader yields n zero bytes without holding them.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

// TestEchoStreams uploads 64 MiB and checks the simulator hashed it without holding it.
func TestEchoStreams(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ts := httptest.NewServer(New(Options{Echo: true})) // plain HTTP: the point is the body, not TLS
	t.Cleanup(ts.Close)
	const size = 64 << 20
	h := sha256.New()
	if _, err := io.Copy(h, &zeroReader{n: size}); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, ts.URL+"/api/1/upload", &zeroReader{n: size})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	e := decodeEcho(t, b)
	if e.BodyLength != size || e.BodySHA256 != want {
		t.Errorf("echo length %d hash %s, want %d %s", e.BodyLength, e.BodySHA256, size, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/4 {
		t.Errorf("allocated %d bytes for a %d-byte upload: the body is being buffered", alloc, size)
	}
}

func TestInjectedHTTPFaults(t *testing.T) {
	sim, ts := startSim(t, Options{})
	vin, other := NewTestVIN(20), NewTestVIN(21)
	sim.AddVehicle(vin)
	sim.AddVehicle(other)

	t.Run("misdirected", func(t *testing.T) {
		const host = "fleet-api.prd.eu.vn.cloud.tesla.com"
		sim.SetFault("", Fault{MisdirectedHost: host})
		defer sim.SetFault("", Fault{})
		code, h, body := do(t, ts, http.MethodGet, "/api/1/vehicles", nil, nil)
		if code != http.StatusMisdirectedRequest || h.Get("Alt-Svc") != "h2=https://"+host {
			t.Fatalf("status %d Alt-Svc %q", code, h.Get("Alt-Svc"))
		}
		var env map[string]any
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatal(err)
		}
		if env["response"] != nil || env["error_description"] != "" {
			t.Errorf("body = %s", body)
		}
		// The regular expression vehicle-command's inet connector uses to find the new host.
		m := regexp.MustCompile(`use base URL: https://([-a-z0-9.]*)`).FindStringSubmatch(string(body))
		if len(m) != 2 || m[1] != host {
			t.Errorf("body %s does not name the host the way inet reads it", body)
		}
	})

	t.Run("rate limited, one vehicle", func(t *testing.T) {
		sim.SetFault(vin, Fault{RateLimitRetryAfter: 7})
		defer sim.SetFault(vin, Fault{})
		code, h, body := do(t, ts, http.MethodGet, "/api/1/vehicles/"+vin+"/vehicle_data", nil, nil)
		if code != http.StatusTooManyRequests || h.Get("Retry-After") != "7" || !json.Valid(body) {
			t.Errorf("status %d Retry-After %q body %s", code, h.Get("Retry-After"), body)
		}
		if code, _, _ := do(t, ts, http.MethodGet, "/api/1/vehicles/"+other+"/vehicle_data", nil, nil); code != http.StatusOK {
			t.Errorf("another vehicle got %d", code)
		}
	})

	t.Run("delay", func(t *testing.T) {
		sim.SetFault(vin, Fault{Delay: 150 * time.Millisecond})
		defer sim.SetFault(vin, Fault{})
		start := time.Now()
		if code, _, _ := do(t, ts, http.MethodPost, "/api/1/vehicles/"+vin+"/wake_up", nil, nil); code != http.StatusOK {
			t.Errorf("status %d", code)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("answered after %v, want at least 150ms", d)
		}
	})

	st := sim.Stats()
	if diff := cmp.Diff(map[string]int{"misdirected": 1, "rate_limited": 1}, st.Injected); diff != "" {
		t.Errorf("injected (-want +got):\n%s", diff)
	}
}

func TestVehiclesWakeAndREST(t *testing.T) {
	sim, ts := startSim(t, Options{})
	vin, legacy := NewTestVIN(30), NewTestVIN(31)
	sim.AddVehicle(vin).SetAsleep(true)
	sim.AddVehicle(legacy)
	sim.SetFault(legacy, Fault{Legacy: true})

	code, _, body := do(t, ts, http.MethodGet, "/api/1/vehicles", nil, nil)
	var list struct {
		Response []struct {
			VIN   string `json:"vin"`
			State string `json:"state"`
			IDS   string `json:"id_s"`
		} `json:"response"`
		Count int `json:"count"`
	}
	if err := json.Unmarshal(body, &list); err != nil || code != http.StatusOK {
		t.Fatalf("status %d body %s: %v", code, body, err)
	}
	if list.Count != 2 || len(list.Response) != 2 || list.Response[0].VIN != vin || list.Response[0].State != "asleep" || list.Response[1].State != "online" {
		t.Errorf("vehicles = %s", body)
	}

	// wake_up by numeric id.
	code, _, body = do(t, ts, http.MethodPost, "/api/1/vehicles/"+list.Response[0].IDS+"/wake_up", nil, nil)
	var woke struct {
		Response struct {
			VIN   string `json:"vin"`
			State string `json:"state"`
		} `json:"response"`
	}
	if err := json.Unmarshal(body, &woke); err != nil || code != http.StatusOK || woke.Response.State != "online" || woke.Response.VIN != vin {
		t.Errorf("wake_up: %d %s", code, body)
	}
	if sim.Vehicle(vin).Asleep() {
		t.Error("still asleep after wake_up")
	}

	// REST commands: refused by a protocol car, recorded verbatim by a legacy one.
	code, _, body = do(t, ts, http.MethodPost, "/api/1/vehicles/"+vin+"/command/door_lock", strings.NewReader(`{}`), nil)
	if code != http.StatusForbidden || !strings.Contains(string(body), `"error":"Tesla Vehicle Command Protocol required`) {
		t.Errorf("protocol car: %d %s", code, body)
	}
	raw := []byte(`{"percent": 80 , "extra":[1,2]}`)
	code, _, body = do(t, ts, http.MethodPost, "/api/1/vehicles/"+legacy+"/command/set_charge_limit", bytes.NewReader(raw), nil)
	if code != http.StatusOK || string(body) != `{"response":{"reason":"","result":true}}`+"\n" {
		t.Errorf("legacy car: %d %s", code, body)
	}
	code, _, _ = do(t, ts, http.MethodPost, "/api/1/vehicles/"+legacy+"/command/honk_horn", nil, nil)
	if code != http.StatusOK {
		t.Errorf("legacy honk: %d", code)
	}
	want := []Execution{
		{VIN: legacy, Domain: DomainREST, Action: "set_charge_limit", Body: raw, Result: "ok"},
		{VIN: legacy, Domain: DomainREST, Action: "honk_horn", Result: "ok"},
	}
	if diff := cmp.Diff(want, sim.Executions(""), ignoreAt); diff != "" {
		t.Errorf("executions (-want +got):\n%s", diff)
	}
	if got := sim.Vehicle(legacy).State().ChargeLimit; got != 80 {
		t.Errorf("legacy car's charge limit after REST set_charge_limit = %d, want 80", got)
	}
	code, _, body = do(t, ts, http.MethodPost, "/api/1/vehicles/"+legacy+"/signed_command", strings.NewReader(`{"routable_message":""}`), nil)
	if code != http.StatusUnprocessableEntity {
		t.Errorf("signed_command on a legacy car: %d %s", code, body)
	}
	if code, _, _ := do(t, ts, http.MethodPost, "/api/1/vehicles/5YJ3E1EA0PF999999/signed_command", strings.NewReader(`{}`), nil); code != http.StatusNotFound {
		t.Errorf("unknown VIN: %d", code)
	}

	st := sim.Stats()
	wantRoutes := map[string]int{"vehicles": 1, "wake_up": 1, "command": 3, "signed_command": 2}
	if diff := cmp.Diff(wantRoutes, st.Routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	wantBilling := map[string]int{BillingData: 1, BillingWakes: 1, BillingCommands: 5}
	if diff := cmp.Diff(wantBilling, st.Billing); diff != "" {
		t.Errorf("billing (-want +got):\n%s", diff)
	}
	if st.Upstream != 7 || st.Vehicles[legacy].REST != 2 {
		t.Errorf("upstream %d, legacy REST %d", st.Upstream, st.Vehicles[legacy].REST)
	}
}

func TestTelemetryJWS(t *testing.T) {
	app, stranger := newClientKey(t), newClientKey(t)
	sim, ts := startSim(t, Options{TrustedKeys: []*ecdh.PublicKey{app.pub}})
	vin, unpaired := NewTestVIN(40), NewTestVIN(41)
	sim.AddVehicle(vin, app.pub)
	sim.AddVehicle(unpaired)

	config := map[string]any{"hostname": "telemetry.example.com", "port": 443, "fields": map[string]any{"BatteryLevel": map[string]any{"interval_seconds": 60}}}
	token, _, err := jws.SignTelemetryConfig(app.lib, config)
	if err != nil {
		t.Fatal(err)
	}
	post := func(token string, vins ...string) (int, []byte) {
		b, _ := json.Marshal(map[string]any{"vins": vins, "token": token})
		code, _, body := do(t, ts, http.MethodPost, "/api/1/vehicles/fleet_telemetry_config_jws", bytes.NewReader(b), nil)
		return code, body
	}

	code, body := post(token, vin, unpaired)
	want := `{"response":{"skipped_vehicles":{"max_configs":[],"missing_key":["` + unpaired + `"],"unsupported_firmware":[],"unsupported_hardware":[]},"updated_vehicles":1}}` + "\n"
	if code != http.StatusOK || string(body) != want {
		t.Errorf("accepted token: %d %s\nwant %s", code, body, want)
	}

	code, _, body = do(t, ts, http.MethodGet, "/api/1/vehicles/"+vin+"/fleet_telemetry_config", nil, nil)
	want = `{"response":{"config":{"fields":{"BatteryLevel":{"interval_seconds":60}},"hostname":"telemetry.example.com","port":443},"key_paired":true,"limit_reached":false,"synced":true}}` + "\n"
	if code != http.StatusOK || string(body) != want {
		t.Errorf("GET config: %d %s\nwant %s", code, body, want)
	}
	code, _, body = do(t, ts, http.MethodDelete, "/api/1/vehicles/"+vin+"/fleet_telemetry_config", nil, nil)
	if code != http.StatusOK || string(body) != `{"response":{"updated_vehicles":1}}`+"\n" {
		t.Errorf("DELETE: %d %s", code, body)
	}
	if sim.TelemetryConfig(vin) != nil {
		t.Error("config still stored after DELETE")
	}

	// Refused: untrusted signer, tampered token, wrong audience.
	untrusted, _, err := jws.SignTelemetryConfig(stranger.lib, config)
	if err != nil {
		t.Fatal(err)
	}
	wrongAud, err := jws.Sign(app.lib, config, "com.tesla.fleet.SomethingElse")
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"untrusted": untrusted,
		"tampered":  token[:len(token)-4] + "AAAA",
		"wrong aud": wrongAud,
		"garbage":   "a.b.c",
	} {
		if code, body := post(tok, vin); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", name, code, body)
		}
	}
	st := sim.Stats()
	if st.JWSAccepted != 1 || st.JWSRejected != 4 {
		t.Errorf("JWS accepted %d rejected %d, want 1 and 4", st.JWSAccepted, st.JWSRejected)
	}
}

func TestControlEndpoints(t *testing.T) {
	sim, ts := startSim(t, Options{})
	vin := NewTestVIN(50)
	v := sim.AddVehicle(vin)

	code, _, body := do(t, ts, http.MethodPost, "/sim/faults", strings.NewReader(`{"vin":"`+vin+`","fault":{"legacy":true,"delay_ms":5,"rate_limit_retry_after":3}}`), nil)
	if code != http.StatusOK {
		t.Fatalf("set fault: %d %s", code, body)
	}
	if diff := cmp.Diff(Fault{Legacy: true, Delay: 5 * time.Millisecond, RateLimitRetryAfter: 3}, sim.Fault(vin)); diff != "" {
		t.Errorf("fault (-want +got):\n%s", diff)
	}
	if code, _, _ := do(t, ts, http.MethodPost, "/sim/faults", strings.NewReader(`{"vin":"`+vin+`","fault":{"no_such":1}}`), nil); code != http.StatusBadRequest {
		t.Errorf("unknown fault field: %d", code)
	}
	if code, _, _ := do(t, ts, http.MethodPost, "/sim/faults", strings.NewReader(`{"vin":"`+vin+`","fault":{}}`), nil); code != http.StatusOK || !sim.Fault(vin).IsZero() {
		t.Errorf("clearing the fault: %d %+v", code, sim.Fault(vin))
	}

	epoch := func() [16]byte {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.domains[universal.Domain_DOMAIN_INFOTAINMENT].epoch
	}
	before := epoch()
	if code, _, _ := do(t, ts, http.MethodPost, "/sim/reboot?vin="+vin, nil, nil); code != http.StatusOK || epoch() == before {
		t.Errorf("reboot: %d, epoch changed: %v", code, epoch() != before)
	}
	if code, _, _ := do(t, ts, http.MethodPost, "/sim/vehicles/"+vin+"/asleep", strings.NewReader(`{"asleep":true}`), nil); code != http.StatusOK || !v.Asleep() {
		t.Errorf("asleep: %d", code)
	}

	do(t, ts, http.MethodGet, "/api/1/vehicles", nil, nil)
	code, _, body = do(t, ts, http.MethodGet, "/sim/stats", nil, nil)
	var st Stats
	if err := json.Unmarshal(body, &st); err != nil || code != http.StatusOK {
		t.Fatalf("stats: %d %s", code, body)
	}
	if diff := cmp.Diff(sim.Stats(), st); diff != "" {
		t.Errorf("/sim/stats differs from Stats() (-Go +HTTP):\n%s", diff)
	}
	if st.Upstream != 1 {
		t.Errorf("control endpoints were counted: upstream %d", st.Upstream)
	}
	if code, _, _ := do(t, ts, http.MethodDelete, "/sim/stats", nil, nil); code != http.StatusOK || sim.Stats().Upstream != 0 {
		t.Error("DELETE /sim/stats did not reset")
	}
	if code, _, _ := do(t, ts, http.MethodGet, "/sim/nothing", nil, nil); code != http.StatusNotFound {
		t.Errorf("unknown control endpoint: %d", code)
	}
	code, _, body = do(t, ts, http.MethodGet, "/sim/executions?vin="+vin, nil, nil)
	if code != http.StatusOK || string(body) != "[]\n" {
		t.Errorf("executions: %d %s", code, body)
	}
}

// TestNoNonLoopback is a guard: the test servers listen on loopback only.
func TestNoNonLoopback(t *testing.T) {
	_, ts := startSim(t, Options{})
	host, _, err := net.SplitHostPort(ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("test server listens on %s", host)
	}
}
