package server_test

import (
	"bytes"
	"crypto/ecdh"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/jws"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// telemetryMaxBody is the body limit of the telemetry route in these tests.
const telemetryMaxBody = 8 << 10

// telemetryUpstream records every request and answers with a canned reply, or, when none is
// set, lets the simulator (which verifies the JWS and stores the config) answer. It remembers
// the answer it sent so a test can compare it with what the client got.
type telemetryUpstream struct {
	sim *fleetsim.Server

	mu     sync.Mutex
	calls  []seenRequest
	reply  *cannedReply
	answer cannedReply
}

func (u *telemetryUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.calls = append(u.calls, seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: body})
	reply := u.reply
	u.mu.Unlock()
	var ans cannedReply
	if reply != nil {
		ans = *reply
	} else {
		rec := httptest.NewRecorder()
		r2 := r.Clone(r.Context())
		r2.Body = io.NopCloser(bytes.NewReader(body))
		u.sim.ServeHTTP(rec, r2)
		ans = cannedReply{Status: rec.Code, Header: rec.Header().Clone(), Body: rec.Body.Bytes()}
	}
	u.mu.Lock()
	u.answer = ans
	u.mu.Unlock()
	for k, vs := range ans.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(ans.Status)
	_, _ = w.Write(ans.Body)
}

// reset clears the record and sets the canned reply (nil: the simulator answers).
func (u *telemetryUpstream) reset(reply *cannedReply) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls, u.reply, u.answer = nil, reply, cannedReply{}
}

func (u *telemetryUpstream) record() ([]seenRequest, cannedReply) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.calls), u.answer
}

type telemetryEnv struct {
	env   *proxyEnv
	up    *telemetryUpstream
	pub   *ecdh.PublicKey
	vins  []string
	token string
}

// startTelemetry runs the router with the Telemetry handler, signing with a fresh key, in front
// of the simulator with two vehicles that have the key enrolled.
func startTelemetry(t *testing.T) *telemetryEnv {
	t.Helper()
	key := testenv.NewKey(t)
	pub := testenv.PublicKey(t, key)
	sim := fleetsim.New(fleetsim.Options{TrustedKeys: []*ecdh.PublicKey{pub}})
	vins := []string{fleetsim.NewTestVIN(1), fleetsim.NewTestVIN(2)}
	for _, vin := range vins {
		sim.AddVehicle(vin, pub)
	}
	up := &telemetryUpstream{sim: sim}
	upstream, pool := testenv.StartTLS(t, up)
	fixed, _ := url.Parse(upstream.URL)
	log := zaptest.NewLogger(t)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool, logger: log, telemetry: func(fwd *forward.Forwarder) http.Handler {
		return &server.Telemetry{Key: key, Forward: fwd, MaxBodyBytes: telemetryMaxBody, Logger: log.Named("telemetry")}
	}})
	return &telemetryEnv{env: env, up: up, pub: pub, vins: vins,
		token: testenv.Token(t, map[string]any{"sub": "telemetry-test", "ou_code": "NA"})}
}

// post sends body to the telemetry route with the env's token (or auth, when not nil).
func (e *telemetryEnv) post(t *testing.T, method string, body []byte, auth *string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.env.URL+server.PathTelemetry, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth == nil {
		req.Header.Set("Authorization", "Bearer "+e.token)
	} else if *auth != "" {
		req.Header.Set("Authorization", *auth)
	}
	req.Header.Set("Content-Type", "application/json")
	return e.env.do(t, req)
}

// goodConfig returns a fresh config that passes every check, using every checked key.
func goodConfig(t *testing.T) map[string]any {
	t.Helper()
	cert, _ := testenv.Cert(t, "telemetry.example.com")
	return map[string]any{
		"hostname":        "telemetry.example.com",
		"port":            4443,
		"ca":              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})),
		"exp":             time.Now().Add(24 * time.Hour).Unix(),
		"alert_types":     []any{"service"},
		"prefer_typed":    true,
		"delivery_policy": "latest",
		"fields": map[string]any{
			"BatteryLevel": map[string]any{"interval_seconds": 60},
			"VehicleSpeed": map[string]any{"interval_seconds": 10, "minimum_delta": 1.5, "resend_interval_seconds": 300},
		},
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeNumbers decodes JSON with numbers as json.Number, as the proxy and jws.Verify do.
func decodeNumbers(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding %q: %v", b, err)
	}
	return m
}

// checkRelayed checks that the client got exactly the upstream's answer.
func checkRelayed(t *testing.T, resp *http.Response, body []byte, ans cannedReply) {
	t.Helper()
	if resp.StatusCode != ans.Status {
		t.Errorf("status %d, upstream answered %d", resp.StatusCode, ans.Status)
	}
	if !bytes.Equal(body, ans.Body) {
		t.Errorf("body %q, upstream answered %q", body, ans.Body)
	}
	got := resp.Header.Clone()
	got.Del("Date")
	got.Del("Content-Length")
	want := ans.Header.Clone()
	want.Del("Content-Length")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers differ from the upstream's (-upstream +client):\n%s", diff)
	}
}

// TestTelemetrySignsAndForwards: the config is signed into a JWS that verifies with the proxy's
// key and carries exactly the config, posted to fleet_telemetry_config_jws with the caller's
// Authorization, and the Fleet API's answer comes back unchanged.
func TestTelemetrySignsAndForwards(t *testing.T) {
	e := startTelemetry(t)
	config := goodConfig(t)
	body := mustJSON(t, map[string]any{"vins": e.vins, "config": config})
	wantConfig := decodeNumbers(t, body)["config"].(map[string]any)

	resp, got := e.post(t, http.MethodPost, body, nil)
	calls, ans := e.up.record()
	if len(calls) != 1 {
		t.Fatalf("%d upstream calls, want 1; answer %d %s", len(calls), resp.StatusCode, got)
	}
	call := calls[0]
	if call.Method != http.MethodPost || call.RequestURI != server.PathTelemetryJWS {
		t.Errorf("upstream got %s %s, want POST %s", call.Method, call.RequestURI, server.PathTelemetryJWS)
	}
	if a := call.Header.Get("Authorization"); a != "Bearer "+e.token {
		t.Error("Authorization did not reach the upstream unchanged")
	}
	if ct := call.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("upstream Content-Type %q", ct)
	}

	var sent map[string]json.RawMessage
	if err := json.Unmarshal(call.Body, &sent); err != nil {
		t.Fatalf("upstream body %q: %v", call.Body, err)
	}
	if keys := slices.Sorted(maps.Keys(sent)); !slices.Equal(keys, []string{"token", "vins"}) {
		t.Errorf("upstream body keys %v, want [token vins]", keys)
	}
	var vins []string
	var token string
	if json.Unmarshal(sent["vins"], &vins) != nil || !slices.Equal(vins, e.vins) {
		t.Errorf("upstream vins %s, want %v", sent["vins"], e.vins)
	}
	if json.Unmarshal(sent["token"], &token) != nil || token == "" {
		t.Fatalf("upstream token missing: %s", sent["token"])
	}
	claims, err := jws.Verify(token, e.pub)
	if err != nil {
		t.Fatalf("the token does not verify with the proxy key's public half: %v", err)
	}
	if jws.TelemetryAudience != "com.tesla.fleet.TelemetryClient" {
		t.Errorf("TelemetryAudience = %q", jws.TelemetryAudience)
	}
	if claims["aud"] != jws.TelemetryAudience {
		t.Errorf("aud = %v, want %s", claims["aud"], jws.TelemetryAudience)
	}
	if claims["iss"] != jws.Issuer(e.pub) {
		t.Errorf("iss = %v, want the proxy key %s", claims["iss"], jws.Issuer(e.pub))
	}
	delete(claims, "aud")
	delete(claims, "iss")
	if diff := cmp.Diff(wantConfig, claims); diff != "" {
		t.Errorf("signed claims differ from the config (-config +claims):\n%s", diff)
	}

	checkRelayed(t, resp, got, ans)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d %s, want 200 from the simulator", resp.StatusCode, got)
	}
	if w := resp.Header.Values("Warning"); len(w) != 0 {
		t.Errorf("Warning %q on a config without iss or aud", w)
	}
	if n := e.up.sim.Stats().JWSAccepted; n != 1 {
		t.Errorf("simulator accepted %d tokens, want 1", n)
	}
	for _, vin := range e.vins {
		if diff := cmp.Diff(wantConfig, e.up.sim.TelemetryConfig(vin)); diff != "" {
			t.Errorf("config stored for %s differs (-sent +stored):\n%s", vin, diff)
		}
	}
}

// TestTelemetryOverwritesIssAud: a caller's iss and aud are replaced by the proxy's, and the
// answer carries a Warning saying so.
func TestTelemetryOverwritesIssAud(t *testing.T) {
	e := startTelemetry(t)
	config := goodConfig(t)
	config["iss"] = "someone-else"
	config["aud"] = "com.example.elsewhere"
	resp, got := e.post(t, http.MethodPost, mustJSON(t, map[string]any{"vins": e.vins[:1], "config": config}), nil)
	calls, ans := e.up.record()
	if len(calls) != 1 {
		t.Fatalf("%d upstream calls, want 1; answer %d %s", len(calls), resp.StatusCode, got)
	}
	var sent struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(calls[0].Body, &sent); err != nil {
		t.Fatal(err)
	}
	claims, err := jws.Verify(sent.Token, e.pub)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if claims["iss"] != jws.Issuer(e.pub) || claims["aud"] != jws.TelemetryAudience {
		t.Errorf("iss %v aud %v, want the proxy's key and %s", claims["iss"], claims["aud"], jws.TelemetryAudience)
	}
	warning := strings.Join(resp.Header.Values("Warning"), "\n")
	if !strings.Contains(warning, "iss") || !strings.Contains(warning, "aud") {
		t.Errorf("Warning %q does not say iss and aud were overwritten", warning)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, ans.Body) {
		t.Errorf("answer %d %q, upstream answered %d %q", resp.StatusCode, got, ans.Status, ans.Body)
	}
}

// TestTelemetryRejectsBadConfigs: every bad request is a 400 invalid_telemetry_config naming
// the field, and nothing goes upstream (nothing is billed).
func TestTelemetryRejectsBadConfigs(t *testing.T) {
	e := startTelemetry(t)
	vin := e.vins[0]
	withConfig := func(change func(c map[string]any)) []byte {
		c := goodConfig(t)
		change(c)
		return mustJSON(t, map[string]any{"vins": []string{vin}, "config": c})
	}
	field := func(v any) []byte {
		return withConfig(func(c map[string]any) {
			c["fields"] = map[string]any{"BatteryLevel": map[string]any{"interval_seconds": 60}, "Odometer": v}
		})
	}
	for _, tc := range []struct {
		name string
		body []byte
		want string // in error_description
	}{
		{"port as string", withConfig(func(c map[string]any) { c["port"] = "443" }), "config.port"},
		{"port 0", withConfig(func(c map[string]any) { c["port"] = 0 }), "config.port"},
		{"port 70000", withConfig(func(c map[string]any) { c["port"] = 70000 }), "config.port"},
		{"port fractional", withConfig(func(c map[string]any) { c["port"] = 443.5 }), "config.port"},
		{"hostname with scheme", withConfig(func(c map[string]any) { c["hostname"] = "https://telemetry.example.com" }), "config.hostname"},
		{"hostname with path", withConfig(func(c map[string]any) { c["hostname"] = "telemetry.example.com/in" }), "config.hostname"},
		{"hostname with port", withConfig(func(c map[string]any) { c["hostname"] = "telemetry.example.com:4443" }), "config.hostname"},
		{"hostname empty", withConfig(func(c map[string]any) { c["hostname"] = "" }), "config.hostname"},
		{"hostname missing", withConfig(func(c map[string]any) { delete(c, "hostname") }), "config.hostname"},
		{"fields missing", withConfig(func(c map[string]any) { delete(c, "fields") }), "config.fields"},
		{"fields empty", withConfig(func(c map[string]any) { c["fields"] = map[string]any{} }), "config.fields"},
		{"fields not an object", withConfig(func(c map[string]any) { c["fields"] = []any{"BatteryLevel"} }), "config.fields"},
		{"field value not an object", field(60), "config.fields.Odometer"},
		{"interval_seconds 0", field(map[string]any{"interval_seconds": 0}), "config.fields.Odometer.interval_seconds"},
		{"interval_seconds negative", field(map[string]any{"interval_seconds": -5}), "config.fields.Odometer.interval_seconds"},
		{"interval_seconds string", field(map[string]any{"interval_seconds": "60"}), "config.fields.Odometer.interval_seconds"},
		{"interval_seconds missing", field(map[string]any{"minimum_delta": 1}), "config.fields.Odometer.interval_seconds"},
		{"exp in the past", withConfig(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), "config.exp"},
		{"exp string", withConfig(func(c map[string]any) { c["exp"] = "tomorrow" }), "config.exp"},
		{"ca not PEM", withConfig(func(c map[string]any) { c["ca"] = "not a certificate" }), "config.ca"},
		{"ca a private key", withConfig(func(c map[string]any) {
			c["ca"] = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
		}), "config.ca"},
		{"alert_types a string", withConfig(func(c map[string]any) { c["alert_types"] = "service" }), "config.alert_types"},
		{"alert_types with a number", withConfig(func(c map[string]any) { c["alert_types"] = []any{"service", 3} }), "config.alert_types[1]"},
		{"prefer_typed a string", withConfig(func(c map[string]any) { c["prefer_typed"] = "true" }), "config.prefer_typed"},
		{"vins empty", mustJSON(t, map[string]any{"vins": []string{}, "config": goodConfig(t)}), "vins"},
		{"vins not a list", mustJSON(t, map[string]any{"vins": vin, "config": goodConfig(t)}), "vins"},
		{"vins missing", mustJSON(t, map[string]any{"config": goodConfig(t)}), "vins"},
		{"VIN wrong length", mustJSON(t, map[string]any{"vins": []string{vin, vin[:16]}, "config": goodConfig(t)}), "vins[1]"},
		{"VIN lower case", mustJSON(t, map[string]any{"vins": []string{strings.ToLower(vin)}, "config": goodConfig(t)}), "vins[0]"},
		{"config not an object", mustJSON(t, map[string]any{"vins": []string{vin}, "config": "hostname=x"}), "config"},
		{"config missing", mustJSON(t, map[string]any{"vins": []string{vin}}), "config"},
		{"body a list", []byte(`[{"vins":[]}]`), "object"},
		{"malformed JSON", []byte(`{"vins":["` + vin + `"],"config":{`), "JSON"},
		{"trailing data", append(withConfig(func(map[string]any) {}), []byte(` {"vins":[]}`)...), "after"},
		{"empty body", nil, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset(nil)
			resp, body := e.post(t, http.MethodPost, tc.body, nil)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d %s, want 400", resp.StatusCode, body)
			}
			word, desc := decodeErr(t, body)
			if word != "invalid_telemetry_config" {
				t.Errorf("error %q, want invalid_telemetry_config", word)
			}
			if !strings.Contains(desc, tc.want) {
				t.Errorf("error_description %q does not name %q", desc, tc.want)
			}
			if calls, _ := e.up.record(); len(calls) != 0 {
				t.Errorf("%d upstream calls for a rejected config, want 0", len(calls))
			}
		})
	}

	t.Run("every problem at once", func(t *testing.T) {
		e.up.reset(nil)
		body := mustJSON(t, map[string]any{"vins": []string{"short"}, "config": map[string]any{"port": "x", "prefer_typed": 1}})
		resp, b := e.post(t, http.MethodPost, body, nil)
		_, desc := decodeErr(t, b)
		for _, want := range []string{"vins[0]", "config.hostname", "config.port", "config.fields", "config.prefer_typed"} {
			if !strings.Contains(desc, want) {
				t.Errorf("status %d: description %q does not name %s", resp.StatusCode, desc, want)
			}
		}
	})
}

// TestTelemetryLimitsMethodsAndToken: 413 over the body limit, 405 for other methods, 401
// without a token, none of them calling upstream; a body exactly at the limit is accepted.
func TestTelemetryLimitsMethodsAndToken(t *testing.T) {
	e := startTelemetry(t)
	padded := func(size int) []byte {
		c := goodConfig(t)
		c["padding"] = ""
		base := mustJSON(t, map[string]any{"vins": e.vins[:1], "config": c})
		if size < len(base) {
			t.Fatalf("limit %d below the base body size %d", size, len(base))
		}
		c["padding"] = strings.Repeat("x", size-len(base))
		b := mustJSON(t, map[string]any{"vins": e.vins[:1], "config": c})
		if len(b) != size {
			t.Fatalf("padded body is %d bytes, want %d", len(b), size)
		}
		return b
	}
	noCalls := func(t *testing.T) {
		t.Helper()
		if calls, _ := e.up.record(); len(calls) != 0 {
			t.Errorf("%d upstream calls, want 0", len(calls))
		}
	}

	t.Run("over the limit", func(t *testing.T) {
		e.up.reset(nil)
		resp, body := e.post(t, http.MethodPost, padded(telemetryMaxBody+1), nil)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d %s, want 413", resp.StatusCode, body)
		}
		if word, _ := decodeErr(t, body); word != "body_too_large" {
			t.Errorf("error %q, want body_too_large", word)
		}
		noCalls(t)
	})
	t.Run("at the limit", func(t *testing.T) {
		e.up.reset(nil)
		resp, body := e.post(t, http.MethodPost, padded(telemetryMaxBody), nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d %s, want 200", resp.StatusCode, body)
		}
	})
	for _, method := range []string{http.MethodGet, http.MethodPut} {
		t.Run(method, func(t *testing.T) {
			e.up.reset(nil)
			resp, body := e.post(t, method, nil, nil)
			if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), http.MethodPost) {
				t.Errorf("status %d Allow %q, want 405 allowing POST", resp.StatusCode, resp.Header.Get("Allow"))
			}
			if word, _ := decodeErr(t, body); word != "method_not_allowed" {
				t.Errorf("error %q, want method_not_allowed", word)
			}
			noCalls(t)
		})
	}
	for _, auth := range []string{"", "Bearer not-a-jwt"} {
		t.Run(fmt.Sprintf("authorization %q", auth), func(t *testing.T) {
			e.up.reset(nil)
			resp, body := e.post(t, http.MethodPost, mustJSON(t, map[string]any{"vins": e.vins, "config": goodConfig(t)}), &auth)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d %s, want 401", resp.StatusCode, body)
			}
			decodeErr(t, body)
			noCalls(t)
		})
	}
}

// TestTelemetryRelaysUpstreamErrors: the Fleet API's refusals and failures reach the caller
// unchanged: status, headers and body.
func TestTelemetryRelaysUpstreamErrors(t *testing.T) {
	e := startTelemetry(t)
	body := mustJSON(t, map[string]any{"vins": e.vins, "config": goodConfig(t)})
	jsonHeader := func(extra ...string) http.Header {
		h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
		for i := 0; i+1 < len(extra); i += 2 {
			h.Add(extra[i], extra[i+1])
		}
		return h
	}
	for _, reply := range []cannedReply{
		{Status: http.StatusOK, Header: jsonHeader("X-Txid", "abc123", "Vary", "Origin", "Vary", "Accept"),
			Body: []byte(`{"response":{"updated_vehicles":0,"skipped_vehicles":{"missing_key":["` + e.vins[0] + `"]}}}`)},
		{Status: http.StatusBadRequest, Header: jsonHeader(), Body: []byte(`{"response":null,"error":"invalid_command","error_description":"bad token"}`)},
		{Status: http.StatusUnauthorized, Header: jsonHeader("Www-Authenticate", `Bearer error="invalid_token"`), Body: []byte(`{"response":null,"error":"invalid_token","error_description":""}`)},
		{Status: http.StatusPreconditionFailed, Header: jsonHeader(), Body: []byte(`{"response":null,"error":"Public key has not been paired with the application","error_description":""}`)},
		{Status: http.StatusTooManyRequests, Header: jsonHeader("Retry-After", "17"), Body: []byte(`{"response":null,"error":"rate limited","error_description":""}`)},
		{Status: http.StatusInternalServerError, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("internal error\n")},
		{Status: http.StatusServiceUnavailable, Header: jsonHeader("Retry-After", "5"), Body: []byte(`{"response":null,"error":"upstream internal error","error_description":""}`)},
	} {
		t.Run(http.StatusText(reply.Status), func(t *testing.T) {
			e.up.reset(&reply)
			resp, got := e.post(t, http.MethodPost, body, nil)
			calls, ans := e.up.record()
			if len(calls) != 1 {
				t.Errorf("%d upstream calls, want 1", len(calls))
			}
			checkRelayed(t, resp, got, ans)
		})
	}
}
