package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// secret is a value that must appear neither in logs nor in anything a client gets back.
type secret struct{ what, value string }

// keySecrets returns every spelling of a private key that could leak: the scalar in hex and
// base64, the SEC1 and PKCS8 PEM files, their base64 bodies and first lines.
func keySecrets(t testing.TB, k *ecdsa.PrivateKey) []secret {
	t.Helper()
	d, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	out := []secret{
		{"key hex", hex.EncodeToString(d)},
		{"key HEX", strings.ToUpper(hex.EncodeToString(d))},
		{"key base64", base64.StdEncoding.EncodeToString(d)[:40]},
		{"key base64url", base64.RawURLEncoding.EncodeToString(d)[:40]},
	}
	sec1, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	for name, der := range map[string][]byte{"SEC1": sec1, "PKCS8": pkcs8} {
		typ := "EC PRIVATE KEY"
		if name == "PKCS8" {
			typ = "PRIVATE KEY"
		}
		p := string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
		lines := strings.Split(p, "\n")
		out = append(out,
			secret{name + " PEM", p},
			secret{name + " DER base64", base64.StdEncoding.EncodeToString(der)},
			secret{name + " PEM first line", lines[1]},
		)
	}
	return out
}

// TestSecretsStayOut runs every flow (pass-through, command, telemetry config, failing commands,
// a 401, 421s) with the proxy logging at debug level, then checks that no token, key, JWS or
// signed payload appears in the logs or in any answer the client got.
func TestSecretsStayOut(t *testing.T) {
	logs := &testenv.SyncBuffer{}
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig()), logs, zap.DebugLevel))

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := ecKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	key := protocol.UnmarshalECDHPrivateKey(scalar)
	sim := fleetsim.New(fleetsim.Options{})
	vin, stranger := fleetsim.NewTestVIN(0), fleetsim.NewTestVIN(1)
	sim.AddVehicle(vin, testenv.PublicKey(t, key))
	sim.AddVehicle(stranger) // does not know the key
	rec := &recorder{next: sim}
	p := startProxy(t, proxyOptions{Upstream: rec, Key: key, Logger: logger})

	// A token with a signature part of its own, so each part can be looked for.
	sig := make([]byte, 64)
	_, _ = rand.Read(sig)
	claims, _ := json.Marshal(map[string]any{"sub": "secret-user", "aud": []any{"https://" + forward.HostNA}, "ou_code": "NA", "exp": 4102444800})
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	payload := base64.RawURLEncoding.EncodeToString(claims)
	token := header + "." + payload + "." + base64.RawURLEncoding.EncodeToString(sig)
	badToken := "opaque-" + hex.EncodeToString(sig[:24])

	var client bytes.Buffer // everything the client got back
	call := func(method, path, tok string, body []byte) int {
		resp, b := do(t, p.Client, method, p.URL+path, tok, body, nil)
		fmt.Fprintf(&client, "%d %v %s\n", resp.StatusCode, resp.Header, b)
		return resp.StatusCode
	}
	cmd := "/api/1/vehicles/" + vin + "/command/"
	steps := []struct {
		name   string
		before func()
		method string
		path   string
		tok    string
		body   []byte
		want   int
	}{
		{"pass-through GET", nil, "GET", "/api/1/vehicles/" + vin + "/vehicle_data?endpoints=charge_state", token, nil, 200},
		{"pass-through POST", nil, "POST", "/api/1/vehicles/fleet_status", token, []byte(`{"vins":["` + vin + `"]}`), 200},
		{"infotainment command", nil, "POST", cmd + "set_charge_limit", token, []byte(`{"percent":80}`), 200},
		{"VCSEC command", nil, "POST", cmd + "door_lock", token, nil, 200},
		{"telemetry config", nil, "POST", "/api/1/vehicles/fleet_telemetry_config", token, telemetryBody(`["`+vin+`"]`, goodConfigJSON()), 200},
		{"bad parameters", nil, "POST", cmd + "set_charge_limit", token, []byte(`{"percent":"x"}`), 400},
		{"failing command", func() { sim.SetFault(vin, fleetsim.Fault{FailAfterExecution: 500}) }, "POST", cmd + "flash_lights", token, nil, 502},
		{"refused command", func() { sim.SetFault(vin, fleetsim.Fault{Refuse: "not_allowed"}) }, "POST", cmd + "flash_lights", token, nil, 200},
		{"key not paired", func() { sim.SetFault(vin, fleetsim.Fault{}) }, "POST", "/api/1/vehicles/" + stranger + "/command/flash_lights", token, nil, 403},
		{"401 malformed token", nil, "POST", cmd + "flash_lights", badToken, nil, 401},
		{"401 pass-through", nil, "GET", "/api/1/vehicles", badToken, nil, 401},
		{"421 to another region", func() { sim.SetFault("", fleetsim.Fault{MisdirectedHost: forward.HostEU}) }, "GET", "/api/1/vehicles/" + vin + "/vehicle_data", token, nil, 421},
		{"421 command", nil, "POST", cmd + "flash_lights", token, nil, 421},
		{"421 to a foreign host", func() { sim.SetFault("", fleetsim.Fault{MisdirectedHost: "fleet-api.evil.example"}) }, "POST", "/api/1/vehicles/fleet_telemetry_config", token, telemetryBody(`["`+vin+`"]`, goodConfigJSON()), 421},
		{"after the 421s", func() { sim.SetFault("", fleetsim.Fault{}) }, "POST", cmd + "flash_lights", token, nil, 200},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		if got := call(s.method, s.path, s.tok, s.body); got != s.want {
			t.Errorf("%s: status %d, want %d", s.name, got, s.want)
		}
	}

	secrets := append(keySecrets(t, ecKey),
		secret{"token", token}, secret{"token payload", payload}, secret{"token signature", base64.RawURLEncoding.EncodeToString(sig)},
		secret{"malformed token", badToken})
	var jwsSeen, signedSeen int
	for _, s := range rec.Seen() {
		var b struct {
			RoutableMessage string   `json:"routable_message"`
			Token           string   `json:"token"`
			VINs            []string `json:"vins"`
		}
		if json.Unmarshal(s.Body, &b) != nil {
			continue
		}
		if b.RoutableMessage != "" {
			signedSeen++
			secrets = append(secrets, secret{"signed payload", b.RoutableMessage})
		}
		if b.Token != "" {
			jwsSeen++
			parts := strings.Split(b.Token, ".")
			secrets = append(secrets, secret{"JWS", b.Token}, secret{"JWS payload", parts[1]}, secret{"JWS signature", parts[2]})
		}
	}
	if jwsSeen == 0 || signedSeen < 4 {
		t.Fatalf("the upstream saw %d JWS and %d signed messages; the flows did not run", jwsSeen, signedSeen)
	}
	logText := logs.String()
	if !strings.Contains(logText, `"level":"DEBUG"`) && !strings.Contains(logText, `"L":"DEBUG"`) {
		t.Logf("no debug line was logged (the proxy may log nothing at debug)")
	}
	if !strings.Contains(logText, "request") {
		t.Fatalf("the log holds no access lines; is the logger wired? %q", logText)
	}
	for _, s := range secrets {
		if strings.Contains(logText, s.value) {
			t.Errorf("the log contains the %s", s.what)
		}
		if strings.Contains(client.String(), s.value) {
			t.Errorf("an answer to the client contains the %s", s.what)
		}
	}
	// The bearer header itself, in any spelling.
	for _, s := range []string{"Bearer " + token[:20], "Authorization"} {
		if strings.Contains(logText, s) {
			t.Errorf("the log contains %q", s)
		}
	}
	t.Logf("%d log bytes, %d client bytes checked for %d secrets", len(logText), client.Len(), len(secrets))
}
