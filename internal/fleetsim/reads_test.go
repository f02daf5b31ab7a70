package fleetsim

import (
	"crypto/ecdh"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// getJSON GETs path and decodes the answer's "response".
func getJSON(t *testing.T, ts *httptest.Server, path string) (int, any) {
	t.Helper()
	code, _, body := do(t, ts, http.MethodGet, path, nil, nil)
	var env struct {
		Response any `json:"response"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	return code, env.Response
}

// flatten turns decoded JSON into "a_b_c" keys, as Home Assistant's Tesla Fleet integration
// flattens vehicle_data before its entities read it.
func flatten(prefix string, v any, out map[string]any) {
	m, ok := v.(map[string]any)
	if !ok {
		out[prefix] = v
		return
	}
	for k, x := range m {
		if prefix != "" {
			k = prefix + "_" + k
		}
		flatten(k, x, out)
	}
}

// haKeys are the flattened vehicle_data keys Home Assistant's tesla_fleet entities read (its
// sensor, binary_sensor, climate, cover, lock, select, switch, number, device_tracker,
// media_player and update platforms), with the endpoints its coordinator asks for.
var haKeys = []string{
	"state", "vin", "display_name",
	"charge_state_charging_state", "charge_state_battery_level", "charge_state_usable_battery_level",
	"charge_state_charge_energy_added", "charge_state_charger_power", "charge_state_charger_voltage",
	"charge_state_charger_actual_current", "charge_state_charge_rate", "charge_state_conn_charge_cable",
	"charge_state_fast_charger_type", "charge_state_battery_range", "charge_state_est_battery_range",
	"charge_state_ideal_battery_range", "charge_state_minutes_to_full_charge", "charge_state_battery_heater_on",
	"charge_state_charger_phases", "charge_state_preconditioning_enabled", "charge_state_scheduled_charging_pending",
	"charge_state_trip_charging", "charge_state_charge_port_door_open", "charge_state_charge_port_latch",
	"charge_state_charge_current_request", "charge_state_charge_current_request_max", "charge_state_charge_limit_soc",
	"charge_state_charge_limit_soc_min", "charge_state_charge_limit_soc_max", "charge_state_user_charge_enable_request",
	"drive_state_speed", "drive_state_power", "drive_state_shift_state", "drive_state_latitude", "drive_state_longitude",
	"drive_state_heading", "drive_state_active_route_destination", "drive_state_active_route_minutes_to_arrival",
	"drive_state_active_route_miles_to_arrival", "drive_state_active_route_traffic_minutes_delay",
	"drive_state_active_route_energy_at_arrival",
	"climate_state_inside_temp", "climate_state_outside_temp", "climate_state_driver_temp_setting",
	"climate_state_passenger_temp_setting", "climate_state_is_climate_on", "climate_state_climate_keeper_mode",
	"climate_state_min_avail_temp", "climate_state_max_avail_temp", "climate_state_cabin_overheat_protection",
	"climate_state_cop_activation_temperature", "climate_state_is_preconditioning",
	"climate_state_cabin_overheat_protection_actively_cooling", "climate_state_seat_heater_left",
	"climate_state_seat_heater_right", "climate_state_seat_heater_rear_left", "climate_state_seat_heater_rear_center",
	"climate_state_seat_heater_rear_right", "climate_state_seat_fan_front_left", "climate_state_seat_fan_front_right",
	"climate_state_steering_wheel_heater", "climate_state_steering_wheel_heat_level", "climate_state_defrost_mode",
	"climate_state_auto_seat_climate_left", "climate_state_auto_seat_climate_right",
	"vehicle_state_odometer", "vehicle_state_locked", "vehicle_state_sentry_mode", "vehicle_state_valet_mode",
	"vehicle_state_is_user_present", "vehicle_state_dashcam_state", "vehicle_state_fd_window",
	"vehicle_state_fp_window", "vehicle_state_rd_window", "vehicle_state_rp_window", "vehicle_state_df",
	"vehicle_state_dr", "vehicle_state_pf", "vehicle_state_pr", "vehicle_state_ft", "vehicle_state_rt",
	"vehicle_state_tpms_pressure_fl", "vehicle_state_tpms_pressure_fr", "vehicle_state_tpms_pressure_rl",
	"vehicle_state_tpms_pressure_rr", "vehicle_state_tpms_soft_warning_fl", "vehicle_state_tpms_soft_warning_rr",
	"vehicle_state_car_version", "vehicle_state_software_update_status", "vehicle_state_software_update_version",
	"vehicle_state_software_update_download_perc", "vehicle_state_software_update_install_perc",
	"vehicle_state_media_info_media_playback_status", "vehicle_state_media_info_now_playing_title",
	"vehicle_state_media_info_now_playing_source", "vehicle_state_media_info_audio_volume",
	"vehicle_state_media_info_audio_volume_max", "vehicle_state_media_info_audio_volume_increment",
	"vehicle_state_center_display_state", "vehicle_state_speed_limit_mode_active",
	"vehicle_state_speed_limit_mode_current_limit_mph", "vehicle_state_remote_start",
	"vehicle_config_car_type", "vehicle_config_rear_seat_heaters", "vehicle_config_third_row_seats",
	"vehicle_config_can_actuate_trunks", "vehicle_config_cop_user_set_temp_supported", "vehicle_config_has_seat_cooling",
	"vehicle_config_sun_roof_installed", "vehicle_config_roof_color",
}

// TestAppsReadWhatTheyExpect reads the simulator as Home Assistant's Tesla Fleet integration and
// teslajs do: the routes they call answer, with the fields they read.
func TestAppsReadWhatTheyExpect(t *testing.T) {
	sim, ts := startSim(t, Options{})
	vin := NewTestVIN(1)
	sim.AddVehicle(vin)

	// Home Assistant: products, then the vehicle (awake?), then vehicle_data with its endpoints.
	code, products := getJSON(t, ts, "/api/1/products")
	list, _ := products.([]any)
	if code != 200 || len(list) != 1 {
		t.Fatalf("products: %d %v", code, products)
	}
	p := list[0].(map[string]any)
	if p["vin"] != vin || p["command_signing"] != "required" || p["display_name"] == nil {
		t.Errorf("product: %v", p)
	}
	if code, v := getJSON(t, ts, "/api/1/vehicles/"+vin); code != 200 || v.(map[string]any)["state"] != "online" {
		t.Errorf("vehicle: %d %v", code, v)
	}
	code, data := getJSON(t, ts, "/api/1/vehicles/"+vin+"/vehicle_data?endpoints=charge_state%3Bclimate_state%3Bdrive_state%3Bvehicle_state%3Bvehicle_config%3Blocation_data")
	if code != 200 {
		t.Fatalf("vehicle_data: %d %v", code, data)
	}
	flat := map[string]any{}
	flatten("", data, flat)
	var missing []string
	for _, k := range haKeys {
		if _, ok := flat[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Errorf("vehicle_data lacks what Home Assistant reads: %v", missing)
	}
	for _, k := range []string{"id", "id_s", "vin", "state", "display_name"} {
		if flat[k] == nil {
			t.Errorf("vehicle_data top level lacks %s", k)
		}
	}

	// teslajs: the vehicle by numeric id, the older data_request form, mobile access, nearby
	// charging sites.
	id := strconv.FormatInt(vehicleID(vin), 10)
	for _, path := range []string{
		"/api/1/vehicles/" + id,
		"/api/1/vehicles/" + id + "/vehicle_data",
		"/api/1/vehicles/" + id + "/data_request/charge_state",
		"/api/1/vehicles/" + id + "/data_request/climate_state",
		"/api/1/vehicles/" + id + "/data_request/drive_state",
		"/api/1/vehicles/" + id + "/data_request/gui_settings",
		"/api/1/vehicles/" + id + "/data_request/vehicle_state",
		"/api/1/vehicles/" + id + "/data_request/vehicle_config",
		"/api/1/vehicles/" + id + "/mobile_enabled",
		"/api/1/vehicles/" + id + "/nearby_charging_sites",
		"/api/1/vehicles/" + id + "/service_data",
		"/api/1/vehicles/" + id + "/release_notes",
		"/api/1/vehicles/" + id + "/drivers",
		"/api/1/vehicles/" + id + "/invitations",
		"/api/1/users/me",
		"/api/1/users/region",
	} {
		if code, v := getJSON(t, ts, path); code != 200 || v == nil {
			t.Errorf("GET %s: %d %v", path, code, v)
		}
	}
	_, cs := getJSON(t, ts, "/api/1/vehicles/"+id+"/data_request/charge_state")
	if lvl := cs.(map[string]any)["battery_level"]; lvl != 64.0 {
		t.Errorf("data_request/charge_state battery_level = %v, want 64", lvl)
	}
	_, ds := getJSON(t, ts, "/api/1/vehicles/"+id+"/data_request/drive_state")
	if ds.(map[string]any)["latitude"] == nil {
		t.Errorf("data_request/drive_state has no location: %v", ds)
	}
}

// TestVehicleDataEndpoints checks the endpoints parameter: the default leaves the location out,
// location_data adds it, a list selects sections.
func TestVehicleDataEndpoints(t *testing.T) {
	sim, ts := startSim(t, Options{})
	vin := NewTestVIN(2)
	sim.AddVehicle(vin)
	keys := func(query string) (sections []string, located bool) {
		code, v := getJSON(t, ts, "/api/1/vehicles/"+vin+"/vehicle_data"+query)
		if code != 200 {
			t.Fatalf("%s: %d %v", query, code, v)
		}
		for k, x := range v.(map[string]any) {
			if _, ok := x.(map[string]any); ok && k != "granular_access" {
				sections = append(sections, k)
			}
		}
		sort.Strings(sections)
		if d, ok := v.(map[string]any)["drive_state"].(map[string]any); ok {
			_, located = d["latitude"]
		}
		return sections, located
	}
	for _, tc := range []struct {
		query   string
		want    []string
		located bool
	}{
		{"", []string{"charge_state", "climate_state", "drive_state", "gui_settings", "vehicle_config", "vehicle_state"}, false},
		{"?endpoints=charge_state", []string{"charge_state"}, false},
		{"?endpoints=charge_state;location_data", []string{"charge_state", "drive_state"}, true},
		{"?endpoints=drive_state%3Blocation_data", []string{"drive_state"}, true},
		{"?endpoints=drive_state", []string{"drive_state"}, false},
		{"?endpoints=vehicle_data_combo;location_data", []string{"charge_state", "climate_state", "drive_state", "gui_settings", "vehicle_config", "vehicle_state"}, true},
		{"?endpoints=closures_state", []string{"vehicle_state"}, false},
		{"?endpoints=charge_schedule_data;preconditioning_schedule_data", []string{"charge_schedule_data", "preconditioning_schedule_data"}, false},
	} {
		got, located := keys(tc.query)
		if diff := cmp.Diff(tc.want, got); diff != "" || located != tc.located {
			t.Errorf("%q: sections (-want +got):\n%s located %v, want %v", tc.query, diff, located, tc.located)
		}
	}
}

// TestTimeMoves: a charging car gains battery at its current and stops at its limit; climate
// brings the cabin to the setting; a driving car moves and uses energy.
func TestTimeMoves(t *testing.T) {
	clock := newFakeClock()
	sim, ts := startSim(t, Options{Now: clock.Now})
	vin := NewTestVIN(3)
	v := sim.AddVehicle(vin)
	v.Update(func(st *CarState) {
		st.BatteryLevel, st.ChargeLimit, st.ChargingAmps = 50, 80, 32
		st.InsideTempC, st.OutsideTempC = 30, 30
		st.Charging, st.ClimateOn = true, true
	})

	// 32 A at 240 V is 7.68 kW: 10.24 % of a 75 kWh battery per hour.
	clock.Advance(time.Hour)
	st := v.State()
	if math.Abs(st.BatteryLevel-60.24) > 0.01 || !st.Charging {
		t.Errorf("after 1 h at 32 A: battery %.3f charging %v, want 60.24 and still charging", st.BatteryLevel, st.Charging)
	}
	if math.Abs(st.ChargeEnergyAdded-7.68) > 0.01 {
		t.Errorf("energy added %.3f kWh, want 7.68", st.ChargeEnergyAdded)
	}
	if st.InsideTempC != 21 {
		t.Errorf("inside %.2f °C after an hour of climate, want the 21 °C setting", st.InsideTempC)
	}
	_, cs := getJSON(t, ts, "/api/1/vehicles/"+vin+"/vehicle_data?endpoints=charge_state")
	c := cs.(map[string]any)["charge_state"].(map[string]any)
	if c["battery_level"] != 60.0 || c["charging_state"] != "Charging" || c["charger_power"] != 8.0 || c["charger_actual_current"] != 32.0 {
		t.Errorf("charge_state while charging: %v", c)
	}

	// Two more hours: it reaches 80 % and stops there.
	clock.Advance(2 * time.Hour)
	st = v.State()
	if st.BatteryLevel != 80 || st.Charging || st.chargingState() != "Complete" {
		t.Errorf("after 3 h: battery %.3f charging %v state %s, want 80, stopped, Complete", st.BatteryLevel, st.Charging, st.chargingState())
	}

	// Climate off: the cabin drifts back toward outside, slowly.
	v.Update(func(st *CarState) { st.ClimateOn = false })
	clock.Advance(10 * time.Minute)
	if got := v.State().InsideTempC; math.Abs(got-22) > 0.01 {
		t.Errorf("inside %.2f °C 10 min after climate off, want 22 (0.1 °C/min toward 30)", got)
	}

	// Driving north at 60 mph for a minute: one mile on the odometer, a mile further north.
	before := v.State()
	v.Update(func(st *CarState) { st.ShiftState, st.Speed, st.Heading = "D", 60, 0 })
	clock.Advance(time.Minute)
	st = v.State()
	if d := st.Odometer - before.Odometer; math.Abs(d-1) > 1e-6 {
		t.Errorf("odometer moved %.4f mi, want 1", d)
	}
	if d := (st.Latitude - before.Latitude) * milesPerDegLat; math.Abs(d-1) > 1e-6 {
		t.Errorf("moved %.4f mi north, want 1", d)
	}
	if st.BatteryLevel >= before.BatteryLevel {
		t.Errorf("battery %.3f after driving, want below %.3f", st.BatteryLevel, before.BatteryLevel)
	}
}

// TestSleepAndWake: an idle car falls asleep after SleepAfter, data and commands then get 408,
// wake_up takes WakeTime, and activity keeps a car awake.
func TestSleepAndWake(t *testing.T) {
	clock := newFakeClock()
	sim, ts := startSim(t, Options{Now: clock.Now, SleepAfter: 10 * time.Minute, WakeTime: 20 * time.Second})
	vin, busy := NewTestVIN(4), NewTestVIN(5)
	sim.AddVehicle(vin)
	sim.AddVehicle(busy).Update(func(st *CarState) { st.SentryMode = true })
	state := func(vin string) string {
		_, v := getJSON(t, ts, "/api/1/vehicles/"+vin)
		return v.(map[string]any)["state"].(string)
	}
	vehicleData := func() int {
		code, _, _ := do(t, ts, http.MethodGet, "/api/1/vehicles/"+vin+"/vehicle_data", nil, nil)
		return code
	}

	// Reads keep it awake: one every 9 minutes for half an hour.
	for range 3 {
		clock.Advance(9 * time.Minute)
		if code := vehicleData(); code != 200 {
			t.Fatalf("vehicle_data while awake: %d", code)
		}
	}
	// Left alone, it sleeps; the vehicle list does not wake it.
	clock.Advance(10 * time.Minute)
	if s := state(vin); s != "asleep" {
		t.Fatalf("state after 10 idle minutes: %s, want asleep", s)
	}
	if s := state(busy); s != "online" {
		t.Errorf("a car in sentry mode fell asleep: %s", s)
	}
	code, _, body := do(t, ts, http.MethodGet, "/api/1/vehicles/"+vin+"/vehicle_data", nil, nil)
	if code != http.StatusRequestTimeout || !strings.Contains(string(body), "vehicle is offline or asleep") {
		t.Errorf("vehicle_data of a sleeping car: %d %s", code, body)
	}
	code, _, _ = do(t, ts, http.MethodPost, "/api/1/vehicles/"+vin+"/signed_command", strings.NewReader(`{"routable_message":"AA=="}`), nil)
	if code != http.StatusRequestTimeout {
		t.Errorf("signed_command to a sleeping car: %d, want 408", code)
	}

	// wake_up answers at once, still asleep; the car is online WakeTime later.
	_, woke := getWake(t, ts, vin)
	if woke != "asleep" {
		t.Errorf("wake_up answered state %s, want asleep (waking)", woke)
	}
	clock.Advance(19 * time.Second)
	if code := vehicleData(); code != http.StatusRequestTimeout {
		t.Errorf("vehicle_data 19 s into a 20 s wake: %d, want 408", code)
	}
	if !sim.Vehicle(vin).Waking() {
		t.Error("Waking() = false during the wake")
	}
	clock.Advance(time.Second)
	if s := state(vin); s != "online" {
		t.Errorf("state after the wake time: %s", s)
	}
	if code := vehicleData(); code != 200 {
		t.Errorf("vehicle_data after waking: %d", code)
	}
	if st := sim.Stats(); st.Billing[BillingWakes] != 1 || st.Injected["asleep"] != 0 {
		t.Errorf("billing %v injected %v: want 1 wake and no injected fault", st.Billing, st.Injected)
	}
}

func getWake(t *testing.T, ts *httptest.Server, vin string) (int, string) {
	t.Helper()
	code, _, body := do(t, ts, http.MethodPost, "/api/1/vehicles/"+vin+"/wake_up", nil, nil)
	var out struct {
		Response struct {
			State string `json:"state"`
		} `json:"response"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("wake_up: %v %s", err, body)
	}
	return code, out.Response.State
}

// TestVehicleListPages pages through the list as the Fleet API pages it.
func TestVehicleListPages(t *testing.T) {
	sim, ts := startSim(t, Options{})
	for i := range 5 {
		sim.AddVehicle(NewTestVIN(10 + i))
	}
	var seen []string
	for page := 1; ; page++ {
		code, _, body := do(t, ts, http.MethodGet, fmt.Sprintf("/api/1/vehicles?page=%d&per_page=2", page), nil, nil)
		var out struct {
			Response   []struct{ VIN string } `json:"response"`
			Pagination struct {
				Next  *int `json:"next"`
				Pages int  `json:"pages"`
				Count int  `json:"count"`
			} `json:"pagination"`
			Count int `json:"count"`
		}
		if err := json.Unmarshal(body, &out); err != nil || code != 200 {
			t.Fatalf("page %d: %d %s", page, code, body)
		}
		if out.Pagination.Pages != 3 || out.Count != 5 {
			t.Errorf("page %d: pagination %+v count %d", page, out.Pagination, out.Count)
		}
		for _, v := range out.Response {
			seen = append(seen, v.VIN)
		}
		if out.Pagination.Next == nil {
			break
		}
		if *out.Pagination.Next != page+1 || page > 3 {
			t.Fatalf("page %d: next %d", page, *out.Pagination.Next)
		}
	}
	if diff := cmp.Diff(sim.VINs(), seen); diff != "" {
		t.Errorf("VINs over all pages (-want +got):\n%s", diff)
	}
}

// TestFleetStatus: paired and unpaired cars, firmware and the protocol requirement.
func TestFleetStatus(t *testing.T) {
	app, other := newClientKey(t), newClientKey(t)
	sim, ts := startSim(t, Options{TrustedKeys: []*ecdh.PublicKey{app.pub}})
	paired, unpaired, legacy, unknown := NewTestVIN(20), NewTestVIN(21), NewTestVIN(22), NewTestVIN(23)
	sim.AddVehicle(paired, app.pub)
	sim.AddVehicle(unpaired, other.pub)
	sim.AddVehicle(legacy, app.pub).Update(func(st *CarState) { st.Firmware = "2023.20.9" })
	sim.SetFault(legacy, Fault{Legacy: true})
	body := fmt.Sprintf(`{"vins":[%q,%q,%q,%q]}`, paired, unpaired, legacy, unknown)
	code, _, out := do(t, ts, http.MethodPost, "/api/1/vehicles/fleet_status", strings.NewReader(body), nil)
	var got struct {
		Response struct {
			Paired   []string `json:"key_paired_vins"`
			Unpaired []string `json:"unpaired_vins"`
			Info     map[string]struct {
				Firmware string `json:"firmware_version"`
				VCP      bool   `json:"vehicle_command_protocol_required"`
			} `json:"vehicle_info"`
		} `json:"response"`
	}
	if err := json.Unmarshal(out, &got); err != nil || code != 200 {
		t.Fatalf("fleet_status: %d %s", code, out)
	}
	r := got.Response
	if diff := cmp.Diff([]string{paired, legacy}, r.Paired); diff != "" {
		t.Errorf("key_paired_vins (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{unpaired, unknown}, r.Unpaired); diff != "" {
		t.Errorf("unpaired_vins (-want +got):\n%s", diff)
	}
	if len(r.Info) != 3 || !r.Info[paired].VCP || r.Info[legacy].VCP || r.Info[legacy].Firmware != "2023.20.9" || r.Info[paired].Firmware != defaultFirmware {
		t.Errorf("vehicle_info: %+v", r.Info)
	}
}

// TestSmallerReads: nearby charging sites (car online), invitations that can be revoked, and an
// unknown path that gets the Fleet API's 404.
func TestSmallerReads(t *testing.T) {
	sim, ts := startSim(t, Options{})
	vin := NewTestVIN(24)
	sim.AddVehicle(vin)
	_, sites := getJSON(t, ts, "/api/1/vehicles/"+vin+"/nearby_charging_sites?count=2&radius=20&detail=true")
	s := sites.(map[string]any)
	if sc := s["superchargers"].([]any); len(sc) != 2 || sc[0].(map[string]any)["total_stalls"] == nil {
		t.Errorf("superchargers: %v", s["superchargers"])
	}
	sim.Vehicle(vin).SetAsleep(true)
	if code, _, _ := do(t, ts, http.MethodGet, "/api/1/vehicles/"+vin+"/nearby_charging_sites", nil, nil); code != http.StatusRequestTimeout {
		t.Errorf("nearby_charging_sites of a sleeping car: %d, want 408", code)
	}

	code, _, body := do(t, ts, http.MethodPost, "/api/1/vehicles/"+vin+"/invitations", nil, nil)
	var inv struct {
		Response struct {
			ID    int64  `json:"id"`
			State string `json:"state"`
		} `json:"response"`
	}
	if err := json.Unmarshal(body, &inv); err != nil || code != 200 || inv.Response.State != "pending" {
		t.Fatalf("create invitation: %d %s", code, body)
	}
	if code, _, body := do(t, ts, http.MethodPost, fmt.Sprintf("/api/1/vehicles/%s/invitations/%d/revoke", vin, inv.Response.ID), nil, nil); code != 200 {
		t.Errorf("revoke: %d %s", code, body)
	}
	_, list := getJSON(t, ts, "/api/1/vehicles/"+vin+"/invitations")
	if l := list.([]any); len(l) != 1 || l[0].(map[string]any)["state"] != "revoked" {
		t.Errorf("invitations after revoke: %v", list)
	}

	code, _, body = do(t, ts, http.MethodGet, "/api/1/vehicles/"+vin+"/no_such_thing", nil, nil)
	if code != http.StatusNotFound || !strings.Contains(string(body), `"error":"not_found"`) {
		t.Errorf("unknown path: %d %s", code, body)
	}
}

// TestSetWakeDelay: one car's wake time, set after the fact, overrides the server's.
func TestSetWakeDelay(t *testing.T) {
	clock := newFakeClock()
	sim, ts := startSim(t, Options{Now: clock.Now})
	slow, quick := NewTestVIN(30), NewTestVIN(31)
	sim.AddVehicle(slow).SetAsleep(true)
	sim.AddVehicle(quick).SetAsleep(true)
	sim.SetWakeDelay(slow, 15*time.Second)
	if _, s := getWake(t, ts, quick); s != "online" {
		t.Errorf("quick car after wake_up: %s", s)
	}
	if _, s := getWake(t, ts, slow); s != "asleep" {
		t.Errorf("slow car right after wake_up: %s", s)
	}
	clock.Advance(15 * time.Second)
	if sim.Vehicle(slow).Asleep() {
		t.Error("slow car still asleep after its wake delay")
	}
}
