package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// Placeholders in badCase paths and bodies.
const (
	vinTag      = "{vin}"  // replaced by an enrolled vehicle's VIN
	lowerVINTag = "{lvin}" // replaced by that VIN in lower case
)

// badCase is one bad request and the answer it must get.
type badCase struct {
	name   string
	method string
	path   string
	// auth is the Authorization header; "" means "Bearer <the env's token>", "-" means none.
	auth string
	body []byte
	// status and word are the answer wanted; allow, when not "", the Allow header wanted.
	status int
	word   string
	allow  string
}

// badClass is a named group of bad requests.
type badClass struct {
	name  string
	cases []badCase
}

const (
	commandPath   = "/api/1/vehicles/" + vinTag + "/command/"
	telemetryPath = "/api/1/vehicles/fleet_telemetry_config"
	passPath      = "/api/1/vehicles/" + vinTag + "/vehicle_data"
)

// telemetryBody returns a fleet_telemetry_config body with the given JSON for vins and config.
func telemetryBody(vins string, configJSON string) []byte {
	return []byte(`{"vins":` + vins + `,"config":` + configJSON + `}`)
}

// goodConfigJSON returns a telemetry config that passes every check (exp a day ahead).
func goodConfigJSON() string {
	return fmt.Sprintf(`{"hostname":"telemetry.example.com","port":443,"exp":%d,"fields":{"BatteryLevel":{"interval_seconds":60}}}`,
		time.Now().Add(24*time.Hour).Unix())
}

// badClasses are the bad inputs sent through the running proxy, by class. None may reach the
// Fleet API.
func badClasses() []badClass {
	vins := `["` + vinTag + `"]`
	var classes []badClass
	add := func(name string, cases ...badCase) { classes = append(classes, badClass{name, cases}) }

	// Command bodies that are not one JSON object.
	var malformed []badCase
	for _, b := range []string{
		`{"percent":`, `{"percent":80`, `{`, `{"`, `not json`, `{"percent":80}}`,
		`{"percent":80} {"percent":70}`, `[{"percent":80}]`, `"percent"`, `80`, `true`,
		`{"percent":80,}`, `{'percent':80}`, "\xff\xfe{}", `{"percent":08}`, `{"percent":80]`,
	} {
		malformed = append(malformed, badCase{name: "command " + b, method: "POST", path: commandPath + "set_charge_limit",
			body: []byte(b), status: 400, word: "invalid_json"})
	}
	// Telemetry bodies that are not one JSON object.
	cfg := goodConfigJSON()
	full := string(telemetryBody(vins, cfg))
	for _, b := range []string{
		`{`, `not json`, `[]`, `""`, `null`, full[:len(full)/2], full[:len(full)-1], full + `}`, full + full,
		`{"vins":` + vins + `,"config":` + cfg + `,}`,
	} {
		malformed = append(malformed, badCase{name: "telemetry " + shortName(b), method: "POST", path: telemetryPath,
			body: []byte(b), status: 400, word: "invalid_telemetry_config"})
	}
	add("malformed JSON", malformed...)

	// Well-formed JSON with the wrong types or values.
	wrong := []badCase{}
	for _, c := range []struct{ command, body string }{
		{"set_charge_limit", `{"percent":"eighty"}`},
		{"set_charge_limit", `{"percent":true}`},
		{"set_charge_limit", `{"percent":null}`},
		{"set_charge_limit", `{"percent":{"value":80}}`},
		{"set_charge_limit", `null`},
		{"set_charge_limit", `{}`},
		{"set_sentry_mode", `{"on":"yes"}`},
		{"actuate_trunk", `{"which_trunk":1}`},
		{"actuate_trunk", `{"which_trunk":"side"}`},
		{"actuate_trunk", `{}`},
		{"set_temps", `{"driver_temp":"hot","passenger_temp":20}`},
		{"set_charging_amps", `{"charging_amps":[16]}`},
		{"window_control", `{"command":5}`},
		{"window_control", `{"command":"open"}`},
		{"set_vehicle_name", `{"vehicle_name":42}`},
		{"adjust_volume", `{"volume":"loud"}`},
	} {
		wrong = append(wrong, badCase{name: c.command + " " + c.body, method: "POST", path: commandPath + c.command,
			body: []byte(c.body), status: 400, word: "invalid_parameter"})
	}
	for _, b := range []struct{ name, body string }{
		{"vins not a list", string(telemetryBody(`"`+vinTag+`"`, cfg))},
		{"vins of numbers", string(telemetryBody(`[1,2]`, cfg))},
		{"vins empty", string(telemetryBody(`[]`, cfg))},
		{"lower-case vin", string(telemetryBody(`["`+lowerVINTag+`"]`, cfg))},
		{"config a list", string(telemetryBody(vins, `[`+cfg+`]`))},
		{"config a string", string(telemetryBody(vins, `"`+strings.ReplaceAll(cfg, `"`, `\"`)+`"`))},
		{"port a string", string(telemetryBody(vins, `{"hostname":"t.example.com","port":"443","fields":{"BatteryLevel":{"interval_seconds":60}}}`))},
		{"port out of range", string(telemetryBody(vins, `{"hostname":"t.example.com","port":70000,"fields":{"BatteryLevel":{"interval_seconds":60}}}`))},
		{"hostname with scheme", string(telemetryBody(vins, `{"hostname":"https://t.example.com","fields":{"BatteryLevel":{"interval_seconds":60}}}`))},
		{"fields a list", string(telemetryBody(vins, `{"hostname":"t.example.com","fields":["BatteryLevel"]}`))},
		{"interval negative", string(telemetryBody(vins, `{"hostname":"t.example.com","fields":{"BatteryLevel":{"interval_seconds":-1}}}`))},
		{"exp in the past", string(telemetryBody(vins, `{"hostname":"t.example.com","exp":1000,"fields":{"BatteryLevel":{"interval_seconds":60}}}`))},
		{"ca not PEM", string(telemetryBody(vins, `{"hostname":"t.example.com","ca":"hello","fields":{"BatteryLevel":{"interval_seconds":60}}}`))},
		{"prefer_typed a string", string(telemetryBody(vins, `{"hostname":"t.example.com","prefer_typed":"yes","fields":{"BatteryLevel":{"interval_seconds":60}}}`))},
	} {
		wrong = append(wrong, badCase{name: "telemetry " + b.name, method: "POST", path: telemetryPath,
			body: []byte(b.body), status: 400, word: "invalid_telemetry_config"})
	}
	add("wrong types", wrong...)

	// Bodies over the 1 MiB limit (testenv's default).
	big := func(n int) []byte { return []byte(`{"percent":80,"pad":"` + strings.Repeat("x", n) + `"}`) }
	bigTelemetry := []byte(`{"vins":` + vins + `,"pad":"` + strings.Repeat("x", 1<<20) + `","config":` + cfg + `}`)
	add("over the body limit",
		badCase{name: "command 1 MiB+", method: "POST", path: commandPath + "set_charge_limit", body: big(1 << 20), status: 413, word: "body_too_large"},
		badCase{name: "command 4 MiB", method: "POST", path: commandPath + "set_charge_limit", body: big(4 << 20), status: 413, word: "body_too_large"},
		badCase{name: "wake_up 1 MiB+", method: "POST", path: commandPath + "wake_up", body: big(1 << 20), status: 413, word: "body_too_large"},
		badCase{name: "telemetry 1 MiB+", method: "POST", path: telemetryPath, body: bigTelemetry, status: 413, word: "body_too_large"},
	)

	add("empty bodies",
		badCase{name: "telemetry no body", method: "POST", path: telemetryPath, status: 400, word: "invalid_telemetry_config"},
		badCase{name: "telemetry empty body", method: "POST", path: telemetryPath, body: []byte{}, status: 400, word: "invalid_telemetry_config"},
		badCase{name: "telemetry blank body", method: "POST", path: telemetryPath, body: []byte(" \n"), status: 400, word: "invalid_telemetry_config"},
		badCase{name: "telemetry {}", method: "POST", path: telemetryPath, body: []byte(`{}`), status: 400, word: "invalid_telemetry_config"},
		badCase{name: "telemetry no config", method: "POST", path: telemetryPath, body: []byte(`{"vins":` + vins + `}`), status: 400, word: "invalid_telemetry_config"},
		badCase{name: "telemetry empty config", method: "POST", path: telemetryPath, body: telemetryBody(vins, `{}`), status: 400, word: "invalid_telemetry_config"},
		badCase{name: "command needing a parameter", method: "POST", path: commandPath + "set_charge_limit", status: 400, word: "invalid_parameter"},
		badCase{name: "command needing a parameter, empty body", method: "POST", path: commandPath + "set_charging_amps", body: []byte{}, status: 400, word: "invalid_parameter"},
	)

	var vinCases []badCase
	for _, v := range []string{
		"abc", "5YJ3E1EA1KF00000", "5YJ3E1EA1KF0000000", "5yj3e1ea1kf000000", "5YJ3E1EA1KF-00000",
		"5YJ3E1EA1KF00000%20", "%35YJ3E1EA1KF00000", "5YJ3E1EA1KF0000%C3%A9", "5YJ3E1EA1KF00000%2F",
		// A plausible numeric id (such as 1492931207375872) is looked up in the free vehicle
		// list instead: numericid_test.go.
		"0", "00000000000000000", "99999999999999999999", "0149293120737587",
	} {
		vinCases = append(vinCases, badCase{name: v, method: "POST", path: "/api/1/vehicles/" + v + "/command/door_lock", status: 404, word: "invalid_vin"})
	}
	add("invalid VINs", vinCases...)

	var unknown []badCase
	for _, n := range []string{"launch_rocket", "DOOR_LOCK", "door_lock%00", "door%5Flock", "signed_command", "front", "vent", "x", "%F0%9F%9A%80"} {
		unknown = append(unknown, badCase{name: n, method: "POST", path: commandPath + n, status: 404, word: "invalid_command"})
	}
	add("unknown commands", unknown...)

	var methodCases []badCase
	for _, m := range []string{"GET", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		methodCases = append(methodCases,
			badCase{name: m + " command", method: m, path: commandPath + "door_lock", status: 405, word: "method_not_allowed", allow: "POST"},
			badCase{name: m + " telemetry config", method: m, path: telemetryPath, status: 405, word: "method_not_allowed", allow: "POST"},
		)
	}
	methodCases = append(methodCases,
		badCase{name: "POST health", method: "POST", path: "/health", auth: "-", status: 405, word: "method_not_allowed", allow: "GET, HEAD"},
		badCase{name: "DELETE health", method: "DELETE", path: "/health", auth: "-", status: 405, word: "method_not_allowed", allow: "GET, HEAD"},
		badCase{name: "PUT public key", method: "PUT", path: "/.well-known/appspecific/com.tesla.3p.public-key.pem", auth: "-", body: []byte("x"), status: 405, word: "method_not_allowed", allow: "GET, HEAD"},
	)
	add("wrong methods", methodCases...)

	notJSONPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte("not json")) + ".c2ln"
	var tokenCases []badCase
	for _, a := range []struct{ name, auth, word string }{
		{"missing", "-", "missing_token"},
		{"basic", "Basic dXNlcjpwYXNz", "invalid_token"},
		{"bearer only", "Bearer", "invalid_token"},
		{"bearer blank", "Bearer    ", "invalid_token"},
		{"opaque", "Bearer abcdef0123456789", "invalid_token"},
		{"two parts", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0", "invalid_token"},
		{"four parts", "Bearer a.eyJzdWIiOiJ4In0.c2ln.d", "invalid_token"},
		{"empty payload", "Bearer eyJhbGciOiJSUzI1NiJ9..c2ln", "invalid_token"},
		{"payload not base64", "Bearer eyJhbGciOiJSUzI1NiJ9.!!!.c2ln", "invalid_token"},
		{"payload not JSON", "Bearer " + notJSONPayload, "invalid_token"},
		{"payload a list", "Bearer eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`[1]`)) + ".c2ln", "invalid_token"},
		{"token over 16 KiB", "Bearer eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"`+strings.Repeat("x", 16<<10)+`"}`)) + ".c2ln", "invalid_token"},
	} {
		for _, r := range []struct{ name, method, path string }{
			{"pass-through", "GET", passPath},
			{"command", "POST", commandPath + "door_lock"},
			{"telemetry", "POST", telemetryPath},
		} {
			var body []byte
			if r.path == telemetryPath {
				body = telemetryBody(vins, cfg)
			}
			tokenCases = append(tokenCases, badCase{name: a.name + " " + r.name, method: r.method, path: r.path, auth: a.auth,
				body: body, status: 401, word: a.word})
		}
	}
	add("bad tokens", tokenCases...)
	return classes
}

func shortName(s string) string {
	if len(s) > 40 {
		return s[:20] + "…" + s[len(s)-15:]
	}
	return s
}

// TestBadInput sends every bad request through the running proxy, over TLS, against the
// simulator. Each must get its status and the JSON error shape, must not reach the Fleet API,
// and must leave the proxy healthy.
func TestBadInput(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1})
	h1 := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: rootsOf(env.Client), MinVersion: tls.VersionTLS12},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
	}}
	t.Cleanup(h1.CloseIdleConnections)
	for _, c := range []struct {
		proto  string
		client *http.Client
	}{{"HTTP2", env.Client}, {"HTTP1", h1}} {
		t.Run(c.proto, func(t *testing.T) { sendBadInput(t, env, c.client) })
	}
}

// sendBadInput sends every case of badClasses with client.
func sendBadInput(t *testing.T, env *testenv.Env, client *http.Client) {
	vin := env.VINs[0]
	total := 0
	for _, class := range badClasses() {
		t.Run(class.name, func(t *testing.T) {
			t.Logf("%d inputs", len(class.cases))
			for _, tc := range class.cases {
				total++
				t.Run(tc.name, func(t *testing.T) {
					path := strings.ReplaceAll(tc.path, vinTag, vin)
					body := tc.body
					if body != nil {
						body = bytes.ReplaceAll(body, []byte(vinTag), []byte(vin))
						body = bytes.ReplaceAll(body, []byte(lowerVINTag), []byte(strings.ToLower(vin)))
					}
					var r io.Reader
					if body != nil {
						r = bytes.NewReader(body)
					}
					req, err := http.NewRequestWithContext(t.Context(), tc.method, env.URL+path, r)
					if err != nil {
						t.Fatal(err)
					}
					if body != nil {
						req.Header.Set("Content-Type", "application/json")
					}
					switch tc.auth {
					case "":
						req.Header.Set("Authorization", "Bearer "+env.Token)
					case "-":
					default:
						req.Header.Set("Authorization", tc.auth)
					}
					before := env.Sim.Stats().Upstream
					resp, err := client.Do(req)
					if err != nil {
						t.Fatalf("%s %s: %v", tc.method, path, err)
					}
					if want := map[*http.Client]int{env.Client: 2}[client]; want != 0 && resp.ProtoMajor != want {
						t.Errorf("spoke %s", resp.Proto)
					}
					got, err := readAll(resp)
					if err != nil {
						t.Fatalf("reading the answer: %v", err)
					}
					checkError(t, resp.StatusCode, resp.Header, got, tc.status, tc.word)
					if tc.allow != "" && resp.Header.Get("Allow") != tc.allow {
						t.Errorf("Allow %q, want %q", resp.Header.Get("Allow"), tc.allow)
					}
					if after := env.Sim.Stats().Upstream; after != before {
						t.Errorf("the bad request cost %d upstream calls, want none", after-before)
					}
					checkHealthy(t, env)
				})
			}
		})
	}
	t.Logf("%d bad inputs", total)
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err := buf.ReadFrom(resp.Body)
	return buf.Bytes(), err
}
