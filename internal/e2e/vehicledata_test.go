package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// effect is one command sent through the proxy and the change it must make in vehicle_data.
type effect struct {
	name, params string
	// path is a dotted path into vehicle_data's response ("vehicle_state.locked",
	// "charge_schedule_data.charge_schedules.#" for a list's length, ".0." for its first item).
	path string
	want any
	// before, when set, runs first (through the simulator, not billed): a state the command
	// must change.
	before func(sim *fleetsim.Server, vin string)
}

// stateChanges lists every state-changing command among the 69 REST names (fleet-api.md §4)
// with what vehicle_data shows after it. Order matters: each row changes what the rows before
// left.
var stateChanges = []effect{
	{name: "door_unlock", path: "vehicle_state.locked", want: false},
	{name: "door_lock", path: "vehicle_state.locked", want: true},
	{name: "actuate_trunk", params: `{"which_trunk":"front"}`, path: "vehicle_state.ft", want: 1.0},
	{name: "actuate_trunk", params: `{"which_trunk":"rear"}`, path: "vehicle_state.rt", want: 1.0},
	{name: "remote_start_drive", path: "vehicle_state.remote_start", want: true},
	{name: "open_tonneau", path: "vehicle_state.tonneau_state", want: "open"},
	{name: "close_tonneau", path: "vehicle_state.tonneau_state", want: "closed"},
	{name: "charge_port_door_close", path: "charge_state.charge_port_door_open", want: false},
	{name: "charge_port_door_open", path: "charge_state.charge_port_door_open", want: true},
	{name: "window_control", params: `{"command":"vent","lat":0,"lon":0}`, path: "vehicle_state.fd_window", want: 1.0},
	{name: "window_control", params: `{"command":"close","lat":0,"lon":0}`, path: "vehicle_state.rp_window", want: 0.0},
	{name: "set_low_power_mode", params: `{"enable":true}`, path: "vehicle_state.low_power_mode", want: true},
	{name: "keep_accessory_power_mode", params: `{"enable":true}`, path: "vehicle_state.keep_accessory_power_mode", want: true},
	{name: "set_charge_limit", params: `{"percent":80}`, path: "charge_state.charge_limit_soc", want: 80.0},
	{name: "charge_standard", path: "charge_state.charge_limit_soc", want: 90.0},
	{name: "charge_max_range", path: "charge_state.charge_limit_soc", want: 100.0},
	{name: "set_charging_amps", params: `{"charging_amps":16}`, path: "charge_state.charge_current_request", want: 16.0},
	{name: "charge_start", path: "charge_state.charging_state", want: "Charging"},
	{name: "charge_stop", path: "charge_state.charging_state", want: "Stopped"},
	{name: "set_scheduled_charging", params: `{"enable":true,"time":120}`, path: "charge_state.scheduled_charging_start_time", want: 120.0},
	{name: "set_scheduled_departure", params: `{"enable":true,"departure_time":480,"preconditioning_enabled":true}`, path: "charge_state.scheduled_departure_time_minutes", want: 480.0},
	{name: "add_charge_schedule", params: `{"lat":37.4,"lon":-122.1,"start_enabled":true,"start_time":60,"end_enabled":false,"days_of_week":"Mon,Tues","id":7,"enabled":true}`, path: "charge_schedule_data.charge_schedules.0.start_time", want: 60.0},
	{name: "remove_charge_schedule", params: `{"id":7}`, path: "charge_schedule_data.charge_schedules.#", want: 0.0},
	{name: "add_precondition_schedule", params: `{"lat":37.4,"lon":-122.1,"precondition_time":420,"days_of_week":"Weekdays","enabled":true,"id":8}`, path: "preconditioning_schedule_data.precondition_schedules.0.precondition_time", want: 420.0},
	{name: "remove_precondition_schedule", params: `{"id":8}`, path: "preconditioning_schedule_data.precondition_schedules.#", want: 0.0},
	{name: "auto_conditioning_start", path: "climate_state.is_climate_on", want: true},
	{name: "auto_conditioning_stop", path: "climate_state.is_climate_on", want: false},
	{name: "set_temps", params: `{"driver_temp":22.5,"passenger_temp":20}`, path: "climate_state.driver_temp_setting", want: 22.5},
	{name: "remote_seat_heater_request", params: `{"seat_position":0,"level":2}`, path: "climate_state.seat_heater_left", want: 2.0},
	{name: "remote_seat_cooler_request", params: `{"seat_position":1,"seat_cooler_level":3}`, path: "climate_state.seat_fan_front_left", want: 2.0},
	{name: "remote_auto_seat_climate_request", params: `{"auto_seat_position":2,"auto_climate_on":true}`, path: "climate_state.auto_seat_climate_right", want: true},
	{name: "remote_steering_wheel_heater_request", params: `{"on":true}`, path: "climate_state.steering_wheel_heater", want: true},
	{name: "set_bioweapon_mode", params: `{"on":true,"manual_override":false}`, path: "climate_state.bioweapon_mode", want: true},
	{name: "set_cabin_overheat_protection", params: `{"on":true,"fan_only":true}`, path: "climate_state.cabin_overheat_protection", want: "FanOnly"},
	{name: "set_climate_keeper_mode", params: `{"climate_keeper_mode":2}`, path: "climate_state.climate_keeper_mode", want: "dog"},
	{name: "set_cop_temp", params: `{"cop_temp":1}`, path: "climate_state.cop_activation_temperature", want: "Low"},
	{name: "set_preconditioning_max", params: `{"on":true}`, path: "climate_state.defrost_mode", want: 2.0},
	{name: "set_vehicle_name", params: `{"vehicle_name":"Road Runner"}`, path: "display_name", want: "Road Runner"},
	{name: "set_sentry_mode", params: `{"on":true}`, path: "vehicle_state.sentry_mode", want: true},
	{name: "set_valet_mode", params: `{"on":true,"password":"4321"}`, path: "vehicle_state.valet_mode", want: true},
	{name: "reset_valet_pin", path: "vehicle_state.valet_pin_needed", want: false},
	{name: "set_pin_to_drive", params: `{"on":true,"password":"1234"}`, path: "vehicle_state.pin_to_drive_enabled", want: true},
	{name: "reset_pin_to_drive_pin", path: "vehicle_state.pin_to_drive_enabled", want: false},
	{name: "clear_pin_to_drive_admin", path: "vehicle_state.pin_to_drive_enabled", want: false, before: func(sim *fleetsim.Server, vin string) {
		sim.Vehicle(vin).Update(func(st *fleetsim.CarState) { st.PINToDrive = true })
	}},
	{name: "guest_mode", params: `{"enable":true}`, path: "vehicle_state.guest_mode_enabled", want: true},
	{name: "speed_limit_set_limit", params: `{"limit_mph":65}`, path: "vehicle_state.speed_limit_mode.current_limit_mph", want: 65.0},
	{name: "speed_limit_activate", params: `{"pin":"1234"}`, path: "vehicle_state.speed_limit_mode.active", want: true},
	{name: "speed_limit_deactivate", params: `{"pin":"1234"}`, path: "vehicle_state.speed_limit_mode.active", want: false},
	{name: "speed_limit_clear_pin", params: `{"pin":"1234"}`, path: "vehicle_state.speed_limit_mode.pin_code_set", want: false},
	{name: "speed_limit_clear_pin_admin", path: "vehicle_state.speed_limit_mode.pin_code_set", want: false, before: func(sim *fleetsim.Server, vin string) {
		sim.Vehicle(vin).Update(func(st *fleetsim.CarState) { st.SpeedLimitPINSet = true })
	}},
	{name: "adjust_volume", params: `{"volume":3}`, path: "vehicle_state.media_info.audio_volume", want: 3.0},
	{name: "media_volume_up", path: "vehicle_state.media_info.audio_volume", want: 4.0},
	{name: "media_volume_down", path: "vehicle_state.media_info.audio_volume", want: 3.0},
	{name: "media_toggle_playback", path: "vehicle_state.media_info.media_playback_status", want: "Playing"},
	{name: "media_next_track", path: "vehicle_state.media_info.now_playing_title", want: "Drive"},
	{name: "media_prev_track", path: "vehicle_state.media_info.now_playing_title", want: "Electric Feel"},
	{name: "media_next_fav", path: "vehicle_state.media_info.now_playing_station", want: "KFOG 104.5 FM"},
	{name: "media_prev_fav", path: "vehicle_state.media_info.now_playing_station", want: "KQED 88.5 FM"},
	{name: "schedule_software_update", params: `{"offset_sec":60}`, path: "vehicle_state.software_update.status", want: "scheduled"},
	{name: "cancel_software_update", path: "vehicle_state.software_update.status", want: "available"},
	{name: "navigation_request", params: `{"type":"share_ext_content_raw","value":{"android.intent.extra.TEXT":"1 Tesla Road, Austin"},"locale":"en-US","timestamp_ms":"1700000000000"}`, path: "drive_state.active_route_destination", want: "1 Tesla Road, Austin"},
	{name: "set_managed_charge_current_request", params: `{"charging_amps":10}`, path: "charge_state.managed_charging_active", want: true},
	{name: "wake_up", path: "state", want: "online", before: func(sim *fleetsim.Server, vin string) { sim.Vehicle(vin).SetAsleep(true) }},
}

// noVisibleEffect are the other REST names: nothing in vehicle_data can show them (a honk, a
// flash, a garage door, an erase, a tonneau that moves and stops at once), or they are not
// implemented (remote_boombox) or only configure Tesla's servers.
var noVisibleEffect = []string{
	"flash_lights", "honk_horn", "trigger_homelink", "erase_user_data", "stop_tonneau", "remote_boombox",
	"set_managed_charger_location", "set_managed_scheduled_charging_time",
}

// allSections asks vehicle_data for every section.
const allSections = "charge_state;climate_state;drive_state;gui_settings;vehicle_config;vehicle_state;location_data;charge_schedule_data;preconditioning_schedule_data"

// TestEveryStateChangingCommandShowsInVehicleData sends each state-changing command through the
// proxy, to a car that signs (the Vehicle Command Protocol) and to one without the protocol
// (REST), and reads vehicle_data through the proxy after each: the change is there.
func TestEveryStateChangingCommandShowsInVehicleData(t *testing.T) {
	names := map[string]bool{}
	for _, e := range stateChanges {
		names[e.name] = true
	}
	for _, n := range noVisibleEffect {
		if names[n] {
			t.Errorf("%s is listed both with and without an effect", n)
		}
		names[n] = true
	}
	if len(names) != 69 {
		t.Fatalf("%d command names covered, want the 69 of fleet-api.md §4", len(names))
	}

	for _, legacy := range []bool{false, true} {
		t.Run(map[bool]string{false: "signed", true: "REST"}[legacy], func(t *testing.T) {
			env := testenv.Start(t, testenv.Options{Vehicles: 1})
			vin := env.VINs[0]
			// A Cybertruck, so the tonneau shows.
			env.Sim.Vehicle(vin).Update(func(st *fleetsim.CarState) { st.Model = "cybertruck" })
			if legacy {
				env.Sim.SetFault(vin, fleetsim.Fault{Legacy: true})
			}
			for i, e := range stateChanges {
				if e.before != nil {
					e.before(env.Sim, vin)
				}
				var body []byte
				if e.params != "" {
					body = []byte(e.params)
				}
				resp, got := env.Do(t, http.MethodPost, "/api/1/vehicles/"+vin+"/command/"+e.name, body)
				if resp.StatusCode != http.StatusOK || (e.name != "wake_up" && !strings.Contains(string(got), `"result":true`)) {
					t.Errorf("%d %s: %d %s", i, e.name, resp.StatusCode, got)
					continue
				}
				data := vehicleData(t, env, vin, allSections)
				if v, err := lookup(data, e.path); err != nil || !reflect.DeepEqual(v, e.want) {
					t.Errorf("%d %s: vehicle_data %s = %#v (%v), want %#v", i, e.name, e.path, v, err, e.want)
				}
			}
		})
	}
}

// vehicleData GETs vehicle_data through the proxy and returns its response object.
func vehicleData(t *testing.T, env *testenv.Env, vin, endpoints string) map[string]any {
	t.Helper()
	resp, body := env.Do(t, http.MethodGet, "/api/1/vehicles/"+vin+"/vehicle_data?endpoints="+endpoints, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vehicle_data: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Response map[string]any `json:"response"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Response == nil {
		t.Fatalf("vehicle_data: %v: %s", err, body)
	}
	return out.Response
}

// lookup follows a dotted path through decoded JSON; "#" is a list's length.
func lookup(v any, path string) (any, error) {
	for _, key := range strings.Split(path, ".") {
		switch node := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = node[key]; !ok {
				return nil, fmt.Errorf("no %q", key)
			}
		case []any:
			if key == "#" {
				return float64(len(node)), nil
			}
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(node) {
				return nil, fmt.Errorf("no item %q in a list of %d", key, len(node))
			}
			v = node[i]
		default:
			return nil, fmt.Errorf("%q: not an object or list", key)
		}
	}
	return v, nil
}

// TestAppReadsThroughTheProxy reads the fleet through the proxy as Home Assistant's Tesla Fleet
// integration does (products, the vehicle, vehicle_data with its endpoints), as teslajs does
// (the vehicle by numeric id, data_request/{section}), and as fleet managers do (fleet_status):
// the proxy passes the simulator's answers through, with the fields these apps read.
func TestAppReadsThroughTheProxy(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 2})
	vin := env.VINs[0]
	get := func(path string) map[string]any {
		t.Helper()
		resp, body := env.Do(t, http.MethodGet, path, nil)
		var out map[string]any
		if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		return out
	}
	products := get("/api/1/products")["response"].([]any)
	p := products[0].(map[string]any)
	if len(products) != 2 || p["vin"] != vin || p["command_signing"] != "required" {
		t.Errorf("products: %v", products)
	}
	id := p["id_s"].(string)
	if s := get("/api/1/vehicles/" + vin)["response"].(map[string]any)["state"]; s != "online" {
		t.Errorf("vehicle state %v", s)
	}
	data := vehicleData(t, env, vin, "charge_state;climate_state;drive_state;vehicle_state;vehicle_config;location_data")
	for path, want := range map[string]any{
		"charge_state.battery_level":                       64.0,
		"charge_state.charging_state":                      "Stopped",
		"climate_state.inside_temp":                        20.0,
		"drive_state.latitude":                             37.4925,
		"drive_state.shift_state":                          nil,
		"vehicle_state.locked":                             true,
		"vehicle_config.car_type":                          "model3",
		"vehicle_state.odometer":                           12480.6,
		"vehicle_state.speed_limit_mode.current_limit_mph": 85.0,
	} {
		got, err := lookup(data, path)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("vehicle_data %s = %#v (%v), want %#v", path, got, err, want)
		}
	}
	if v, _ := lookup(data, "vehicle_state.car_version"); !strings.HasPrefix(fmt.Sprint(v), "2024.44.25.3 ") {
		t.Errorf("car_version %v, want the firmware and a build hash", v)
	}
	cs := get("/api/1/vehicles/" + id + "/data_request/charge_state")["response"].(map[string]any)
	if cs["charge_limit_soc"] != 90.0 {
		t.Errorf("data_request/charge_state by numeric id: %v", cs)
	}
	resp, body := env.Do(t, http.MethodPost, "/api/1/vehicles/fleet_status", []byte(`{"vins":["`+vin+`"]}`))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"key_paired_vins":["`+vin+`"]`) || !strings.Contains(string(body), `"vehicle_command_protocol_required":true`) {
		t.Errorf("fleet_status: %d %s", resp.StatusCode, body)
	}
}
