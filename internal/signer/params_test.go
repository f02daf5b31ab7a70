package signer_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// TestRefusedBeforeSending sends requests the proxy must refuse on its own (bad parameters, bad
// JSON, unknown command, bad VIN, wrong method, oversized body) through the whole proxy and
// checks the status, the error shape, that the description names the parameter, and that
// nothing at all went upstream (every upstream call is billed).
func TestRefusedBeforeSending(t *testing.T) {
	const limit = 512
	env := testenv.Start(t, testenv.Options{Vehicles: 1, MaxBodyBytes: limit})
	vin := env.VINs[0]
	cmd := func(name string) string { return "/api/1/vehicles/" + vin + "/command/" + name }
	schedule := func(days string) string {
		return `{"lat":37.4,"lon":-122.1,"start_enabled":true,"start_time":60,"end_enabled":false,"days_of_week":"` + days + `","id":7,"enabled":true}`
	}
	cases := []struct {
		name       string
		method     string // POST when empty
		path       string
		body       string
		wantStatus int
		wantWord   string
		want       []string // in error_description
	}{
		// Parameters the library checks.
		{name: "set_charge_limit without percent", path: cmd("set_charge_limit"), body: `{}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"percent"`, "set_charge_limit"}},
		{name: "set_charge_limit without a body", path: cmd("set_charge_limit"), wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"percent"`}},
		{name: "set_charge_limit with a null body", path: cmd("set_charge_limit"), body: `null`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"percent"`}},
		{name: "set_charge_limit percent as a string", path: cmd("set_charge_limit"), body: `{"percent":"80"}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"percent"`}},
		{name: "adjust_volume with a string", path: cmd("adjust_volume"), body: `{"volume":"loud"}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"volume"`}},
		{name: "window_control open", path: cmd("window_control"), body: `{"command":"open","lat":0,"lon":0}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"command"`, "vent", "close"}},
		{name: "window_control without command", path: cmd("window_control"), body: `{}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"command"`}},
		{name: "actuate_trunk side", path: cmd("actuate_trunk"), body: `{"which_trunk":"side"}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"which_trunk"`, "front", "rear"}},
		{name: "actuate_trunk without which_trunk", path: cmd("actuate_trunk"), wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"which_trunk"`, "required"}},
		{name: "actuate_trunk with a number", path: cmd("actuate_trunk"), body: `{"which_trunk":1}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"which_trunk"`}},
		{name: "set_temps driver_temp as a string", path: cmd("set_temps"), body: `{"driver_temp":"hot","passenger_temp":20}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"driver_temp"`}},
		{name: "set_temps passenger_temp as a bool", path: cmd("set_temps"), body: `{"driver_temp":21,"passenger_temp":true}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"passenger_temp"`}},
		{name: "set_sentry_mode on as a string", path: cmd("set_sentry_mode"), body: `{"on":"yes"}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"on"`}},
		{name: "set_charging_amps missing", path: cmd("set_charging_amps"), body: `{"amps":16}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"charging_amps"`}},
		{name: "set_vehicle_name with a number", path: cmd("set_vehicle_name"), body: `{"vehicle_name":5}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"vehicle_name"`}},
		{name: "speed_limit_activate without pin", path: cmd("speed_limit_activate"), body: `{}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"pin"`}},
		{name: "set_scheduled_charging time as a string", path: cmd("set_scheduled_charging"), body: `{"enable":true,"time":"02:00"}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"time"`}},
		{name: "add_charge_schedule bad day", path: cmd("add_charge_schedule"), body: schedule("Funday"), wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"days_of_week"`}},
		{name: "remote_seat_heater_request bad seat", path: cmd("remote_seat_heater_request"), body: `{"seat_position":42,"level":1}`, wantStatus: 400, wantWord: "invalid_parameter", want: []string{`"seat_position"`}},
		{name: "remote_boombox", path: cmd("remote_boombox"), wantStatus: 400, wantWord: "command_not_implemented", want: []string{"remote_boombox"}},

		// The body itself.
		{name: "malformed JSON", path: cmd("set_charge_limit"), body: `{"percent":`, wantStatus: 400, wantWord: "invalid_json", want: []string{"JSON"}},
		{name: "trailing garbage", path: cmd("set_charge_limit"), body: `{"percent":80} x`, wantStatus: 400, wantWord: "invalid_json", want: []string{"JSON"}},
		{name: "trailing brace", path: cmd("set_charge_limit"), body: `{"percent":80}}`, wantStatus: 400, wantWord: "invalid_json", want: []string{"JSON"}},
		{name: "trailing bracket", path: cmd("set_charge_limit"), body: `{"percent":80}]`, wantStatus: 400, wantWord: "invalid_json", want: []string{"JSON"}},
		{name: "two objects", path: cmd("set_charge_limit"), body: `{"percent":80}{"percent":90}`, wantStatus: 400, wantWord: "invalid_json", want: []string{"JSON"}},
		{name: "JSON array", path: cmd("set_charge_limit"), body: `[{"percent":80}]`, wantStatus: 400, wantWord: "invalid_json", want: []string{"JSON object"}},
		{name: "JSON string", path: cmd("set_charge_limit"), body: `"percent=80"`, wantStatus: 400, wantWord: "invalid_json", want: []string{"JSON object"}},
		{name: "body over the limit", path: cmd("set_charge_limit"), body: `{"percent":80,"pad":"` + strings.Repeat("x", 4*limit) + `"}`, wantStatus: 413, wantWord: "body_too_large", want: []string{"512"}},

		// The path and method.
		{name: "unknown command", path: cmd("fly_to_the_moon"), body: `{}`, wantStatus: 404, wantWord: "invalid_command", want: []string{"fly_to_the_moon"}},
		// A numeric Fleet API id costs a (free) vehicle-list call: internal/e2e/numericid_test.go.
		{name: "short VIN", path: "/api/1/vehicles/5YJ3E1EA0KF00001/command/honk_horn", wantStatus: 404, wantWord: "invalid_vin", want: []string{"VIN"}},
		{name: "lower-case VIN", path: "/api/1/vehicles/" + strings.ToLower(vin) + "/command/honk_horn", wantStatus: 404, wantWord: "invalid_vin", want: []string{"VIN"}},
		{name: "GET", method: http.MethodGet, path: cmd("honk_horn"), wantStatus: 405, wantWord: "method_not_allowed", want: []string{"POST"}},
		{name: "PUT with parameters", method: http.MethodPut, path: cmd("set_charge_limit"), body: `{"percent":80}`, wantStatus: 405, wantWord: "method_not_allowed", want: []string{"POST"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = http.MethodPost
			}
			var body []byte
			if c.body != "" {
				body = []byte(c.body)
			}
			before := env.Sim.Stats().Upstream
			resp, got := env.Do(t, method, c.path, body)
			a := proxyError(t, resp.StatusCode, got, c.wantStatus, c.want...)
			if a.Error != c.wantWord {
				t.Errorf("error %q, want %q", a.Error, c.wantWord)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if c.wantStatus == http.StatusMethodNotAllowed && !strings.Contains(resp.Header.Get("Allow"), http.MethodPost) {
				t.Errorf("Allow %q, want POST", resp.Header.Get("Allow"))
			}
			if n := env.Sim.Stats().Upstream - before; n != 0 {
				t.Errorf("%d upstream calls, want none", n)
			}
		})
	}
	if ex := env.Sim.Executions(""); len(ex) != 0 {
		t.Errorf("%d commands reached a vehicle, want none", len(ex))
	}

	// The same vehicle still takes a good command: nothing above disturbed its session.
	resp, got := env.Command(t, vin, "set_charge_limit", map[string]any{"percent": 80})
	mustSucceed(t, resp, got)
	if !bytes.Contains(got, []byte(`"result":true`)) {
		t.Errorf("answer %s", got)
	}
}

// TestBadParametersDoNotWaitForTheVehicle checks that a parameter error is answered at once, even
// while another command holds the vehicle: it costs nothing upstream, so it need not queue.
func TestBadParametersDoNotWaitForTheVehicle(t *testing.T) {
	env, tap := startTapped(t, 1, 0)
	vin := env.VINs[0]
	resp, got := env.Command(t, vin, "flash_lights", nil)
	mustSucceed(t, resp, got)

	release := holdVehicle(t, env, tap, vin)
	defer release()
	// Were it queued, it would wait for the held command until the proxy's 5 s lock deadline
	// and get 503 vehicle_busy.
	resp, got = env.Command(t, vin, "set_charge_limit", map[string]any{"percent": "80"})
	proxyError(t, resp.StatusCode, got, http.StatusBadRequest, `"percent"`)
}
