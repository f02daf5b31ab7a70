package fleetsim

import (
	"encoding/json"
	"math"
	"time"
)

// restParams is a REST command's JSON body.
type restParams map[string]any

func (p restParams) num(key string) (float64, bool) {
	switch v := p[key].(type) {
	case float64:
		return v, true
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	}
	return 0, false
}

func (p restParams) int32(key string) int32 {
	f, _ := p.num(key)
	return int32(math.Round(f))
}

// uint64 reads a non-negative integer, such as a schedule id (0 when absent or negative).
func (p restParams) uint64(key string) uint64 {
	f, _ := p.num(key)
	if f < 0 || f >= math.MaxUint64 {
		return 0
	}
	return uint64(f)
}

func (p restParams) bool(key string) bool { b, _ := p[key].(bool); return b }

func (p restParams) str(key string) string { s, _ := p[key].(string); return s }

// applyREST runs a REST command (POST …/command/{name}) on the car state, as a car without the
// Vehicle Command Protocol does, and for the commands the Fleet API itself carries out
// (navigation and managed charging). It returns the car's reason for refusing, or "". Names and
// parameters are the REST API's (fleet-api.md §4); the changes are the same as the signed
// commands make.
func (v *Vehicle) applyREST(name string, body []byte) string {
	p := restParams{}
	if len(body) > 0 && json.Unmarshal(body, &p) != nil {
		return "invalid_value"
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	v.advance(now)
	defer v.touch(now)
	st := &v.state
	switch name {
	case "door_lock":
		st.Locked = true
	case "door_unlock":
		st.Locked = false
	case "remote_start_drive":
		st.RemoteStart = true
	case "actuate_trunk":
		switch p.str("which_trunk") {
		case "front":
			st.FrontTrunkOpen = !st.FrontTrunkOpen
		case "rear", "":
			st.RearTrunkOpen = !st.RearTrunkOpen
		default:
			return "invalid_value"
		}
	case "open_tonneau":
		st.TonneauOpen = true
	case "close_tonneau":
		st.TonneauOpen = false
	case "charge_port_door_open":
		st.ChargePortOpen = true
	case "charge_port_door_close":
		st.ChargePortOpen = false
	case "window_control":
		switch p.str("command") {
		case "vent":
			st.WindowsVented = true
		case "close":
			st.WindowsVented = false
		default:
			return "invalid_value"
		}
	case "charge_start":
		return st.startCharging()
	case "charge_stop":
		return st.stopCharging()
	case "charge_standard":
		return st.setChargeLimit(90)
	case "charge_max_range":
		return st.setChargeLimit(100)
	case "set_charge_limit":
		return st.setChargeLimit(p.int32("percent"))
	case "set_charging_amps":
		return st.setChargingAmps(p.int32("charging_amps"))
	case "set_scheduled_charging":
		st.ScheduledCharging = p.bool("enable")
		st.ScheduledChargingMinutes = p.int32("time")
	case "set_scheduled_departure":
		on := p.bool("enable")
		st.ScheduledDeparture = on
		st.ScheduledDepartureMinutes = p.int32("departure_time")
		st.PreconditioningEnabled = on && p.bool("preconditioning_enabled")
		st.OffPeakChargingEnabled = on && p.bool("off_peak_charging_enabled")
	case "add_charge_schedule":
		st.ChargeSchedules = upsertSchedule(st.ChargeSchedules, Schedule{
			ID: p.uint64("id"), DaysOfWeek: daysOfWeek(p.str("days_of_week")), Enabled: p.bool("enabled"), OneTime: p.bool("one_time"),
			StartEnabled: p.bool("start_enabled"), StartTime: p.int32("start_time"), EndEnabled: p.bool("end_enabled"), EndTime: p.int32("end_time"),
			Latitude: float32(orZero(p.num("lat"))), Longitude: float32(orZero(p.num("lon"))),
		})
	case "remove_charge_schedule":
		st.ChargeSchedules = removeSchedule(st.ChargeSchedules, p.uint64("id"))
	case "add_precondition_schedule":
		st.PreconditionSchedules = upsertSchedule(st.PreconditionSchedules, Schedule{
			ID: p.uint64("id"), DaysOfWeek: daysOfWeek(p.str("days_of_week")), Enabled: p.bool("enabled"), OneTime: p.bool("one_time"),
			Time: p.int32("precondition_time"), Latitude: float32(orZero(p.num("lat"))), Longitude: float32(orZero(p.num("lon"))),
		})
	case "remove_precondition_schedule":
		st.PreconditionSchedules = removeSchedule(st.PreconditionSchedules, p.uint64("id"))
	case "auto_conditioning_start":
		st.setClimate(true)
	case "auto_conditioning_stop":
		st.setClimate(false)
	case "set_temps":
		if t, ok := p.num("driver_temp"); ok {
			st.DriverTempC = float32(t)
		}
		if t, ok := p.num("passenger_temp"); ok {
			st.PassengerTempC = float32(t)
		}
	case "remote_seat_heater_request":
		i := int(p.int32("seat_position"))
		if i < 0 || i >= len(st.SeatHeaters) {
			return "invalid_value"
		}
		st.SeatHeaters[i] = min(max(p.int32("level"), 0), 3)
	case "remote_seat_cooler_request":
		i := int(p.int32("seat_position")) - 1
		if i < 0 || i > 1 {
			return "invalid_value"
		}
		st.SeatCoolers[i] = min(max(p.int32("seat_cooler_level")-1, 0), 3)
	case "remote_auto_seat_climate_request":
		i := int(p.int32("auto_seat_position")) - 1
		if i < 0 || i > 1 {
			return "invalid_value"
		}
		st.AutoSeatClimate[i] = p.bool("auto_climate_on")
	case "remote_steering_wheel_heater_request":
		st.SteeringWheelHeater = p.bool("on")
	case "set_bioweapon_mode":
		st.BioweaponMode = p.bool("on")
	case "set_cabin_overheat_protection":
		st.setCabinOverheat(p.bool("on"), p.bool("fan_only"))
	case "set_climate_keeper_mode":
		m := int(p.int32("climate_keeper_mode"))
		if m < 0 || m >= len(climateKeeperModes) {
			return "invalid_value"
		}
		st.setClimateKeeper(climateKeeperModes[m])
	case "set_cop_temp":
		// 1 low, 2 medium, 3 high: the numbering vehicle-command sends to signed cars too.
		levels := []string{"", "Low", "Medium", "High"}
		i := int(p.int32("cop_temp"))
		if i < 1 || i >= len(levels) {
			return "invalid_value"
		}
		st.CopActivationTemp = levels[i]
	case "set_preconditioning_max":
		st.setPreconditioningMax(p.bool("on"))
	case "set_sentry_mode":
		st.SentryMode = p.bool("on")
	case "set_valet_mode":
		return st.setValet(p.bool("on"), p.str("password"))
	case "reset_valet_pin":
		st.ValetPINSet = false
	case "set_pin_to_drive":
		st.PINToDrive = p.bool("on")
	case "clear_pin_to_drive_admin", "reset_pin_to_drive_pin":
		st.PINToDrive = false
	case "speed_limit_activate":
		return st.setSpeedLimit(true, p.str("pin"))
	case "speed_limit_deactivate":
		return st.setSpeedLimit(false, p.str("pin"))
	case "speed_limit_clear_pin", "speed_limit_clear_pin_admin":
		st.SpeedLimitPINSet, st.SpeedLimitActive = false, false
	case "speed_limit_set_limit":
		return st.setSpeedLimitMPH(orZero(p.num("limit_mph")))
	case "guest_mode":
		st.GuestMode = p.bool("enable")
	case "set_vehicle_name":
		st.Name = p.str("vehicle_name")
	case "set_low_power_mode":
		st.LowPowerMode = p.bool("enable")
	case "keep_accessory_power_mode":
		st.KeepAccessoryPower = p.bool("enable")
	case "adjust_volume":
		st.setVolume(float32(orZero(p.num("volume"))))
	case "media_volume_up":
		st.setVolume(st.Volume + 1)
	case "media_volume_down":
		st.setVolume(st.Volume - 1)
	case "media_toggle_playback":
		st.MediaPlaying = !st.MediaPlaying
	case "media_next_track":
		st.stepTrack(1)
	case "media_prev_track":
		st.stepTrack(-1)
	case "media_next_fav":
		st.stepFavorite(1)
	case "media_prev_fav":
		st.stepFavorite(-1)
	case "schedule_software_update":
		return st.scheduleUpdate(now, time.Duration(p.int32("offset_sec"))*time.Second)
	case "cancel_software_update":
		st.cancelUpdate()
	case "navigation_request":
		// The Android share intent the Tesla app sends: the destination is the shared text.
		if value, ok := p["value"].(map[string]any); ok {
			st.Destination, _ = value["android.intent.extra.TEXT"].(string)
		}
	case "set_managed_charge_current_request":
		st.ManagedChargeAmps = p.int32("charging_amps")
	default:
		// Honk, flash, homelink, erase user data, boombox, managed charger location and
		// schedule: accepted, nothing in vehicle_data shows them.
	}
	return ""
}

// orZero drops the ok of a lookup whose zero value is the right default.
func orZero(f float64, _ bool) float64 { return f }
