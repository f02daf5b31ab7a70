package signer_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// commandCase is one REST command name of tesla-http-proxy v0.4.1 and where it must land.
type commandCase struct {
	name, params   string
	domain, action string // the execution the simulator must record
	refused        string // the vehicle's refusal reason, when it declines (result false)
	status         int    // the proxy's status when it is not 200
}

const (
	inf   = fleetsim.DomainInfotainment
	vcsec = fleetsim.DomainVCSEC
	rest  = fleetsim.DomainREST
)

// allCommands lists the 69 names (fleet-api.md §4). Order matters where the car refuses a no-op.
var allCommands = []commandCase{
	{name: "adjust_volume", params: `{"volume":5}`, domain: inf, action: "mediaUpdateVolume"},
	{name: "remote_boombox", status: http.StatusBadRequest},
	{name: "media_next_fav", domain: inf, action: "mediaNextFavorite"},
	{name: "media_prev_fav", domain: inf, action: "mediaPreviousFavorite"},
	{name: "media_next_track", domain: inf, action: "mediaNextTrack"},
	{name: "media_prev_track", domain: inf, action: "mediaPreviousTrack"},
	{name: "media_volume_up", domain: inf, action: "mediaUpdateVolume"},
	{name: "media_volume_down", domain: inf, action: "mediaUpdateVolume"},
	{name: "media_toggle_playback", domain: inf, action: "mediaPlayAction"},
	{name: "auto_conditioning_start", domain: inf, action: "hvacAutoAction"},
	{name: "auto_conditioning_stop", domain: inf, action: "hvacAutoAction"},
	{name: "charge_max_range", domain: inf, action: "chargingStartStopAction"},
	{name: "remote_seat_cooler_request", params: `{"seat_position":1,"seat_cooler_level":2}`, domain: inf, action: "hvacSeatCoolerActions"},
	{name: "remote_seat_heater_request", params: `{"seat_position":0,"level":1}`, domain: inf, action: "hvacSeatHeaterActions"},
	{name: "remote_auto_seat_climate_request", params: `{"auto_seat_position":1,"auto_climate_on":true}`, domain: inf, action: "autoSeatClimateAction"},
	{name: "remote_steering_wheel_heater_request", params: `{"on":true}`, domain: inf, action: "hvacSteeringWheelHeaterAction"},
	{name: "set_bioweapon_mode", params: `{"on":true,"manual_override":false}`, domain: inf, action: "hvacBioweaponModeAction"},
	{name: "set_cabin_overheat_protection", params: `{"on":true,"fan_only":true}`, domain: inf, action: "setCabinOverheatProtectionAction"},
	{name: "set_climate_keeper_mode", params: `{"climate_keeper_mode":2}`, domain: inf, action: "hvacClimateKeeperAction"},
	{name: "set_cop_temp", params: `{"cop_temp":1}`, domain: inf, action: "setCopTempAction"},
	{name: "set_preconditioning_max", params: `{"on":true}`, domain: inf, action: "hvacSetPreconditioningMaxAction"},
	{name: "set_temps", params: `{"driver_temp":22.5,"passenger_temp":20}`, domain: inf, action: "hvacTemperatureAdjustmentAction"},
	{name: "actuate_trunk", params: `{"which_trunk":"front"}`, domain: vcsec, action: "closureMoveRequest:frontTrunk=MOVE"},
	{name: "charge_port_door_open", domain: inf, action: "chargePortDoorOpen"},
	{name: "charge_port_door_close", domain: inf, action: "chargePortDoorClose"},
	{name: "flash_lights", domain: inf, action: "vehicleControlFlashLightsAction"},
	{name: "honk_horn", domain: inf, action: "vehicleControlHonkHornAction"},
	{name: "remote_start_drive", domain: vcsec, action: "RKE_ACTION_REMOTE_DRIVE"},
	{name: "open_tonneau", domain: vcsec, action: "closureMoveRequest:tonneau=OPEN"},
	{name: "close_tonneau", domain: vcsec, action: "closureMoveRequest:tonneau=CLOSE"},
	{name: "stop_tonneau", domain: vcsec, action: "closureMoveRequest:tonneau=STOP"},
	{name: "window_control", params: `{"command":"vent","lat":0,"lon":0}`, domain: inf, action: "vehicleControlWindowAction"},
	{name: "set_low_power_mode", params: `{"enable":true}`, domain: inf, action: "setLowPowerModeAction"},
	{name: "keep_accessory_power_mode", params: `{"enable":true}`, domain: inf, action: "setKeepAccessoryPowerModeAction"},
	{name: "charge_standard", domain: inf, action: "chargingStartStopAction"},
	{name: "charge_stop", domain: inf, action: "chargingStartStopAction", refused: "not_charging"},
	{name: "charge_start", domain: inf, action: "chargingStartStopAction"},
	{name: "set_charging_amps", params: `{"charging_amps":12}`, domain: inf, action: "setChargingAmpsAction"},
	{name: "set_charge_limit", params: `{"percent":85}`, domain: inf, action: "chargingSetLimitAction"},
	{name: "set_scheduled_charging", params: `{"enable":true,"time":120}`, domain: inf, action: "scheduledChargingAction"},
	{name: "set_scheduled_departure", params: `{"enable":true,"departure_time":480,"preconditioning_enabled":true}`, domain: inf, action: "scheduledDepartureAction"},
	{name: "add_charge_schedule", params: `{"lat":37.4,"lon":-122.1,"start_enabled":true,"start_time":60,"end_enabled":false,"days_of_week":"Mon,Tues","id":7,"enabled":true}`, domain: inf, action: "addChargeScheduleAction"},
	{name: "add_precondition_schedule", params: `{"lat":37.4,"lon":-122.1,"precondition_time":420,"days_of_week":"Weekdays","enabled":true,"id":8}`, domain: inf, action: "addPreconditionScheduleAction"},
	{name: "remove_charge_schedule", params: `{"id":7}`, domain: inf, action: "removeChargeScheduleAction"},
	{name: "remove_precondition_schedule", params: `{"id":8}`, domain: inf, action: "removePreconditionScheduleAction"},
	{name: "set_managed_charge_current_request", params: `{"charging_amps":16}`, domain: rest, action: "set_managed_charge_current_request"},
	{name: "set_managed_charger_location", params: `{"location":{"lat":1,"lon":2}}`, domain: rest, action: "set_managed_charger_location"},
	{name: "set_managed_scheduled_charging_time", params: `{"time":300}`, domain: rest, action: "set_managed_scheduled_charging_time"},
	{name: "wake_up"},
	{name: "set_pin_to_drive", params: `{"on":true,"password":"1234"}`, domain: inf, action: "vehicleControlSetPinToDriveAction"},
	{name: "clear_pin_to_drive_admin", domain: inf, action: "vehicleControlResetPinToDriveAdminAction"},
	{name: "door_lock", domain: vcsec, action: "RKE_ACTION_LOCK"},
	{name: "door_unlock", domain: vcsec, action: "RKE_ACTION_UNLOCK"},
	{name: "erase_user_data", domain: inf, action: "eraseUserDataAction"},
	{name: "reset_pin_to_drive_pin", domain: inf, action: "vehicleControlResetPinToDriveAction"},
	{name: "reset_valet_pin", domain: inf, action: "vehicleControlResetValetPinAction"},
	{name: "guest_mode", params: `{"enable":true}`, domain: inf, action: "guestModeAction"},
	{name: "set_sentry_mode", params: `{"on":true}`, domain: inf, action: "vehicleControlSetSentryModeAction"},
	{name: "set_valet_mode", params: `{"on":true,"password":"4321"}`, domain: inf, action: "vehicleControlSetValetModeAction"},
	{name: "set_vehicle_name", params: `{"vehicle_name":"Sim"}`, domain: inf, action: "setVehicleNameAction"},
	{name: "speed_limit_activate", params: `{"pin":"1234"}`, domain: inf, action: "drivingSpeedLimitAction"},
	{name: "speed_limit_deactivate", params: `{"pin":"1234"}`, domain: inf, action: "drivingSpeedLimitAction"},
	{name: "speed_limit_clear_pin", params: `{"pin":"1234"}`, domain: inf, action: "drivingClearSpeedLimitPinAction"},
	{name: "speed_limit_clear_pin_admin", domain: inf, action: "drivingClearSpeedLimitPinAdminAction"},
	{name: "speed_limit_set_limit", params: `{"limit_mph":65}`, domain: inf, action: "drivingSetSpeedLimitAction"},
	{name: "trigger_homelink", params: `{"lat":37.4,"lon":-122.1}`, domain: inf, action: "vehicleControlTriggerHomelinkAction"},
	{name: "schedule_software_update", params: `{"offset_sec":60}`, domain: inf, action: "vehicleControlScheduleSoftwareUpdateAction"},
	{name: "cancel_software_update", domain: inf, action: "vehicleControlCancelSoftwareUpdateAction"},
	{name: "navigation_request", params: `{"type":"share_ext_content_raw","value":{"android.intent.extra.TEXT":"1 Main St"},"locale":"en-US","timestamp_ms":"1700000000000"}`, domain: rest, action: "navigation_request"},
}

// TestEveryCommandNameReachesTheVehicle sends each of the 69 REST command names through the
// proxy (real TLS both ways) and checks, with the simulator's record, that each reached the
// vehicle exactly once as the right domain and action, or as its REST form with the app's body.
func TestEveryCommandNameReachesTheVehicle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1})
	vin := env.VINs[0]
	if len(allCommands) != 69 {
		t.Fatalf("%d command names in the table, want 69", len(allCommands))
	}
	var want []fleetsim.Execution
	for _, c := range allCommands {
		var body []byte
		if c.params != "" {
			body = []byte(c.params)
		}
		resp, got := env.Do(t, http.MethodPost, "/api/1/vehicles/"+vin+"/command/"+c.name, body)
		switch {
		case c.status != 0:
			if resp.StatusCode != c.status {
				t.Errorf("%s: status %d %s, want %d", c.name, resp.StatusCode, got, c.status)
			}
		case c.name == "wake_up":
			if resp.StatusCode != 200 || !bytes.Contains(got, []byte(`"online"`)) {
				t.Errorf("wake_up: %d %s", resp.StatusCode, got)
			}
		case c.refused != "":
			a := decode(t, got)
			if resp.StatusCode != 200 || a.Response == nil || a.Response.Result || a.Response.Reason != c.refused {
				t.Errorf("%s: %d %s, want 200 result false reason %q", c.name, resp.StatusCode, got, c.refused)
			}
		default:
			a := decode(t, got)
			if resp.StatusCode != 200 || a.Response == nil || !a.Response.Result {
				t.Errorf("%s: %d %s, want 200 result true", c.name, resp.StatusCode, got)
			}
		}
		if c.domain != "" {
			e := fleetsim.Execution{VIN: vin, Domain: c.domain, Action: c.action, Result: "ok"}
			if c.refused != "" {
				e.Result = c.refused
			}
			if c.domain == rest {
				e.Body = body
			}
			want = append(want, e)
		}
	}
	if diff := cmp.Diff(want, env.Sim.Executions(vin), cmpopts.IgnoreFields(fleetsim.Execution{}, "At")); diff != "" {
		t.Errorf("executions (-want +got):\n%s", diff)
	}
	st := env.Sim.Stats()
	if st.Routes["wake_up"] != 1 {
		t.Errorf("wake_up calls = %d, want exactly 1 (no polling loop)", st.Routes["wake_up"])
	}
	vs := st.Vehicles[vin]
	if vs.Handshakes.VCSEC != 1 || vs.Handshakes.Infotainment != 1 {
		t.Errorf("handshakes = %+v, want one per domain for the whole run", vs.Handshakes)
	}
}
