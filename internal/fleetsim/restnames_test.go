package fleetsim

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/teslamotors/vehicle-command/pkg/proxy"
)

// TestRESTCommandNames runs every REST command name of vehicle-command v0.4.1 through its own
// command table (pkg/proxy.ExtractCommandAction) and client against the simulator, and checks
// which domain and action reached the car. It is the table a proxy test can lean on.
func TestRESTCommandNames(t *testing.T) {
	sim, ts, vin, key := oneVehicleSim(t, Options{}, 60)
	car, _ := newSession(t, ts, vin, key, nil)

	const (
		I = DomainInfotainment
		V = DomainVCSEC
	)
	// Order matters where the car refuses a no-op (charge_stop needs charging, valet off needs
	// valet on). refused is the car's reason when it refuses; notSent is an error the command
	// table returns before anything is sent.
	cases := []struct {
		name, params   string
		domain, action string
		refused        string
		notSent        string
	}{
		{name: "adjust_volume", params: `{"volume":5}`, domain: I, action: "mediaUpdateVolume"},
		{name: "remote_boombox", notSent: "command not implemented"},
		{name: "media_next_fav", domain: I, action: "mediaNextFavorite"},
		{name: "media_prev_fav", domain: I, action: "mediaPreviousFavorite"},
		{name: "media_next_track", domain: I, action: "mediaNextTrack"},
		{name: "media_prev_track", domain: I, action: "mediaPreviousTrack"},
		{name: "media_volume_up", domain: I, action: "mediaUpdateVolume"},
		{name: "media_volume_down", domain: I, action: "mediaUpdateVolume"},
		{name: "media_toggle_playback", domain: I, action: "mediaPlayAction"},
		{name: "auto_conditioning_start", domain: I, action: "hvacAutoAction"},
		{name: "auto_conditioning_stop", domain: I, action: "hvacAutoAction"},
		{name: "charge_max_range", domain: I, action: "chargingStartStopAction"},
		{name: "remote_seat_cooler_request", params: `{"seat_position":1,"seat_cooler_level":2}`, domain: I, action: "hvacSeatCoolerActions"},
		{name: "remote_seat_heater_request", params: `{"seat_position":0,"level":1}`, domain: I, action: "hvacSeatHeaterActions"},
		{name: "remote_auto_seat_climate_request", params: `{"auto_seat_position":1,"auto_climate_on":true}`, domain: I, action: "autoSeatClimateAction"},
		{name: "remote_steering_wheel_heater_request", params: `{"on":true}`, domain: I, action: "hvacSteeringWheelHeaterAction"},
		{name: "set_bioweapon_mode", params: `{"on":true,"manual_override":false}`, domain: I, action: "hvacBioweaponModeAction"},
		{name: "set_cabin_overheat_protection", params: `{"on":true,"fan_only":true}`, domain: I, action: "setCabinOverheatProtectionAction"},
		{name: "set_climate_keeper_mode", params: `{"climate_keeper_mode":2}`, domain: I, action: "hvacClimateKeeperAction"},
		{name: "set_cop_temp", params: `{"cop_temp":1}`, domain: I, action: "setCopTempAction"},
		{name: "set_preconditioning_max", params: `{"on":true}`, domain: I, action: "hvacSetPreconditioningMaxAction"},
		{name: "set_temps", params: `{"driver_temp":22.5,"passenger_temp":20}`, domain: I, action: "hvacTemperatureAdjustmentAction"},
		{name: "actuate_trunk", params: `{"which_trunk":"front"}`, domain: V, action: "closureMoveRequest:frontTrunk=MOVE"},
		{name: "charge_port_door_open", domain: I, action: "chargePortDoorOpen"},
		{name: "charge_port_door_close", domain: I, action: "chargePortDoorClose"},
		{name: "flash_lights", domain: I, action: "vehicleControlFlashLightsAction"},
		{name: "honk_horn", domain: I, action: "vehicleControlHonkHornAction"},
		{name: "remote_start_drive", domain: V, action: "RKE_ACTION_REMOTE_DRIVE"},
		{name: "open_tonneau", domain: V, action: "closureMoveRequest:tonneau=OPEN"},
		{name: "close_tonneau", domain: V, action: "closureMoveRequest:tonneau=CLOSE"},
		{name: "stop_tonneau", domain: V, action: "closureMoveRequest:tonneau=STOP"},
		{name: "window_control", params: `{"command":"vent","lat":0,"lon":0}`, domain: I, action: "vehicleControlWindowAction"},
		{name: "set_low_power_mode", params: `{"enable":true}`, domain: I, action: "setLowPowerModeAction"},
		{name: "keep_accessory_power_mode", params: `{"enable":true}`, domain: I, action: "setKeepAccessoryPowerModeAction"},
		{name: "charge_standard", domain: I, action: "chargingStartStopAction"},
		{name: "charge_stop", domain: I, action: "chargingStartStopAction", refused: "not_charging"},
		{name: "charge_start", domain: I, action: "chargingStartStopAction"},
		{name: "set_charging_amps", params: `{"charging_amps":12}`, domain: I, action: "setChargingAmpsAction"},
		{name: "set_charge_limit", params: `{"percent":85}`, domain: I, action: "chargingSetLimitAction"},
		{name: "set_scheduled_charging", params: `{"enable":true,"time":120}`, domain: I, action: "scheduledChargingAction"},
		{name: "set_scheduled_departure", params: `{"enable":true,"departure_time":480,"preconditioning_enabled":true}`, domain: I, action: "scheduledDepartureAction"},
		{name: "add_charge_schedule", params: `{"lat":37.4,"lon":-122.1,"start_enabled":true,"start_time":60,"end_enabled":false,"days_of_week":"Mon,Tues","id":7,"enabled":true}`, domain: I, action: "addChargeScheduleAction"},
		{name: "add_precondition_schedule", params: `{"lat":37.4,"lon":-122.1,"precondition_time":420,"days_of_week":"Weekdays","enabled":true,"id":8}`, domain: I, action: "addPreconditionScheduleAction"},
		{name: "remove_charge_schedule", params: `{"id":7}`, domain: I, action: "removeChargeScheduleAction"},
		{name: "remove_precondition_schedule", params: `{"id":8}`, domain: I, action: "removePreconditionScheduleAction"},
		{name: "set_managed_charge_current_request", notSent: "command requires using the REST API"},
		{name: "set_managed_charger_location", notSent: "command requires using the REST API"},
		{name: "set_managed_scheduled_charging_time", notSent: "command requires using the REST API"},
		{name: "wake_up"}, // a REST wake_up call through the connector, not a vehicle command
		{name: "set_pin_to_drive", params: `{"on":true,"password":"1234"}`, domain: I, action: "vehicleControlSetPinToDriveAction"},
		{name: "clear_pin_to_drive_admin", domain: I, action: "vehicleControlResetPinToDriveAdminAction"},
		{name: "door_lock", domain: V, action: "RKE_ACTION_LOCK"},
		{name: "door_unlock", domain: V, action: "RKE_ACTION_UNLOCK"},
		{name: "erase_user_data", domain: I, action: "eraseUserDataAction"},
		{name: "reset_pin_to_drive_pin", domain: I, action: "vehicleControlResetPinToDriveAction"},
		{name: "reset_valet_pin", domain: I, action: "vehicleControlResetValetPinAction"},
		{name: "guest_mode", params: `{"enable":true}`, domain: I, action: "guestModeAction"},
		{name: "set_sentry_mode", params: `{"on":true}`, domain: I, action: "vehicleControlSetSentryModeAction"},
		{name: "set_valet_mode", params: `{"on":true,"password":"4321"}`, domain: I, action: "vehicleControlSetValetModeAction"},
		{name: "set_vehicle_name", params: `{"vehicle_name":"Sim"}`, domain: I, action: "setVehicleNameAction"},
		{name: "speed_limit_activate", params: `{"pin":"1234"}`, domain: I, action: "drivingSpeedLimitAction"},
		{name: "speed_limit_deactivate", params: `{"pin":"1234"}`, domain: I, action: "drivingSpeedLimitAction"},
		{name: "speed_limit_clear_pin", params: `{"pin":"1234"}`, domain: I, action: "drivingClearSpeedLimitPinAction"},
		{name: "speed_limit_clear_pin_admin", domain: I, action: "drivingClearSpeedLimitPinAdminAction"},
		{name: "speed_limit_set_limit", params: `{"limit_mph":65}`, domain: I, action: "drivingSetSpeedLimitAction"},
		{name: "trigger_homelink", params: `{"lat":37.4,"lon":-122.1}`, domain: I, action: "vehicleControlTriggerHomelinkAction"},
		{name: "schedule_software_update", params: `{"offset_sec":60}`, domain: I, action: "vehicleControlScheduleSoftwareUpdateAction"},
		{name: "cancel_software_update", domain: I, action: "vehicleControlCancelSoftwareUpdateAction"},
		{name: "navigation_request", notSent: "command requires using the REST API"},
	}
	names := map[string]bool{}
	var want []Execution
	for _, c := range cases {
		names[c.name] = true
		params := proxy.RequestParameters{}
		if c.params != "" {
			if err := json.Unmarshal([]byte(c.params), &params); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		action, err := proxy.ExtractCommandAction(callCtx(t), c.name, params)
		if c.notSent != "" {
			if err == nil || err.Error() != c.notSent {
				t.Errorf("%s: ExtractCommandAction err = %v, want %q", c.name, err, c.notSent)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: ExtractCommandAction: %v", c.name, err)
		}
		err = action(car)
		switch {
		case c.refused != "":
			if err == nil || !strings.HasSuffix(err.Error(), c.refused) {
				t.Errorf("%s: err = %v, want the car's refusal %q", c.name, err, c.refused)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		}
		if c.domain != "" {
			result := "ok"
			if c.refused != "" {
				result = c.refused
			}
			want = append(want, Execution{VIN: vin, Domain: c.domain, Action: c.action, Result: result})
		}
	}
	if len(names) != 69 {
		t.Errorf("%d REST command names, want the 69 of fleet-api.md §4", len(names))
	}
	if diff := cmp.Diff(want, sim.Executions(vin), ignoreAt); diff != "" {
		t.Errorf("executions (-want +got):\n%s", diff)
	}
	if got := sim.Stats().Routes["wake_up"]; got != 1 {
		t.Errorf("wake_up calls = %d, want 1", got)
	}
	st := sim.Vehicle(vin).State()
	if !st.Charging || st.ChargeLimit != 85 || st.Name != "Sim" || !st.ValetMode || !st.SentryMode || !st.FrontTrunkOpen || st.Locked || !st.RemoteStart {
		t.Errorf("state after the run: %+v", st)
	}
}
