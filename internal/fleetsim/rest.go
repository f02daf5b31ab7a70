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
// commands make. A name restCommands does not know is accepted and changes nothing.
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
	if cmd, ok := restCommands[name]; ok {
		return cmd(&v.state, p, now)
	}
	// Honk, flash, homelink, erase user data, boombox, managed charger location and
	// schedule: accepted, nothing in vehicle_data shows them.
	return ""
}

// restCommand applies one REST command to st, with the command's body p, at time now (the
// state has been brought forward to now). It returns the car's reason for refusing, or "".
type restCommand func(st *CarState, p restParams, now time.Time) string

// restCommands maps each REST command name that changes the car state to its change, one
// table per group of commands.
var restCommands = mergeRESTCommands(
	restClosureCommands(),
	restChargingCommands(),
	restClimateCommands(),
	restSecurityCommands(),
	restInfotainmentCommands(),
)

// mergeRESTCommands joins the groups' tables. A name in two groups is a programming error,
// caught when the package loads.
func mergeRESTCommands(groups ...map[string]restCommand) map[string]restCommand {
	all := map[string]restCommand{}
	for _, g := range groups {
		for name, cmd := range g {
			if _, dup := all[name]; dup {
				panic("fleetsim: REST command " + name + " in two groups")
			}
			all[name] = cmd
		}
	}
	return all
}

// effect makes a restCommand of a change the car never refuses.
func effect(f func(st *CarState, p restParams)) restCommand {
	return func(st *CarState, p restParams, _ time.Time) string {
		f(st, p)
		return ""
	}
}

// restClosureCommands are the doors, trunks, tonneau, charge port and windows.
func restClosureCommands() map[string]restCommand {
	return map[string]restCommand{
		"door_lock":              effect(func(st *CarState, _ restParams) { st.Locked = true }),
		"door_unlock":            effect(func(st *CarState, _ restParams) { st.Locked = false }),
		"remote_start_drive":     effect(func(st *CarState, _ restParams) { st.RemoteStart = true }),
		"open_tonneau":           effect(func(st *CarState, _ restParams) { st.TonneauOpen = true }),
		"close_tonneau":          effect(func(st *CarState, _ restParams) { st.TonneauOpen = false }),
		"charge_port_door_open":  effect(func(st *CarState, _ restParams) { st.ChargePortOpen = true }),
		"charge_port_door_close": effect(func(st *CarState, _ restParams) { st.ChargePortOpen = false }),
		"actuate_trunk": func(st *CarState, p restParams, _ time.Time) string {
			switch p.str("which_trunk") {
			case "front":
				st.FrontTrunkOpen = !st.FrontTrunkOpen
			case "rear", "":
				st.RearTrunkOpen = !st.RearTrunkOpen
			default:
				return "invalid_value"
			}
			return ""
		},
		"window_control": func(st *CarState, p restParams, _ time.Time) string {
			switch p.str("command") {
			case "vent":
				st.WindowsVented = true
			case "close":
				st.WindowsVented = false
			default:
				return "invalid_value"
			}
			return ""
		},
	}
}

// restChargingCommands are charging, its limits and schedules, departure and preconditioning
// schedules, and the Fleet API's managed charging.
func restChargingCommands() map[string]restCommand {
	return map[string]restCommand{
		"charge_start":     func(st *CarState, _ restParams, _ time.Time) string { return st.startCharging() },
		"charge_stop":      func(st *CarState, _ restParams, _ time.Time) string { return st.stopCharging() },
		"charge_standard":  func(st *CarState, _ restParams, _ time.Time) string { return st.setChargeLimit(90) },
		"charge_max_range": func(st *CarState, _ restParams, _ time.Time) string { return st.setChargeLimit(100) },
		"set_charge_limit": func(st *CarState, p restParams, _ time.Time) string { return st.setChargeLimit(p.int32("percent")) },
		"set_charging_amps": func(st *CarState, p restParams, _ time.Time) string {
			return st.setChargingAmps(p.int32("charging_amps"))
		},
		"set_scheduled_charging": effect(func(st *CarState, p restParams) {
			st.ScheduledCharging = p.bool("enable")
			st.ScheduledChargingMinutes = p.int32("time")
		}),
		"set_scheduled_departure": effect(func(st *CarState, p restParams) {
			on := p.bool("enable")
			st.ScheduledDeparture = on
			st.ScheduledDepartureMinutes = p.int32("departure_time")
			st.PreconditioningEnabled = on && p.bool("preconditioning_enabled")
			st.OffPeakChargingEnabled = on && p.bool("off_peak_charging_enabled")
		}),
		"add_charge_schedule": effect(func(st *CarState, p restParams) {
			st.ChargeSchedules = upsertSchedule(st.ChargeSchedules, Schedule{
				ID: p.uint64("id"), DaysOfWeek: daysOfWeek(p.str("days_of_week")), Enabled: p.bool("enabled"), OneTime: p.bool("one_time"),
				StartEnabled: p.bool("start_enabled"), StartTime: p.int32("start_time"), EndEnabled: p.bool("end_enabled"), EndTime: p.int32("end_time"),
				Latitude: float32(orZero(p.num("lat"))), Longitude: float32(orZero(p.num("lon"))),
			})
		}),
		"remove_charge_schedule": effect(func(st *CarState, p restParams) {
			st.ChargeSchedules = removeSchedule(st.ChargeSchedules, p.uint64("id"))
		}),
		"add_precondition_schedule": effect(func(st *CarState, p restParams) {
			st.PreconditionSchedules = upsertSchedule(st.PreconditionSchedules, Schedule{
				ID: p.uint64("id"), DaysOfWeek: daysOfWeek(p.str("days_of_week")), Enabled: p.bool("enabled"), OneTime: p.bool("one_time"),
				Time: p.int32("precondition_time"), Latitude: float32(orZero(p.num("lat"))), Longitude: float32(orZero(p.num("lon"))),
			})
		}),
		"remove_precondition_schedule": effect(func(st *CarState, p restParams) {
			st.PreconditionSchedules = removeSchedule(st.PreconditionSchedules, p.uint64("id"))
		}),
		"set_managed_charge_current_request": effect(func(st *CarState, p restParams) {
			st.ManagedChargeAmps = p.int32("charging_amps")
		}),
	}
}

// restClimateCommands are the cabin climate, seats, steering wheel and their protections.
func restClimateCommands() map[string]restCommand {
	return map[string]restCommand{
		"auto_conditioning_start":              effect(func(st *CarState, _ restParams) { st.setClimate(true) }),
		"auto_conditioning_stop":               effect(func(st *CarState, _ restParams) { st.setClimate(false) }),
		"remote_steering_wheel_heater_request": effect(func(st *CarState, p restParams) { st.SteeringWheelHeater = p.bool("on") }),
		"set_bioweapon_mode":                   effect(func(st *CarState, p restParams) { st.BioweaponMode = p.bool("on") }),
		"set_cabin_overheat_protection":        effect(func(st *CarState, p restParams) { st.setCabinOverheat(p.bool("on"), p.bool("fan_only")) }),
		"set_preconditioning_max":              effect(func(st *CarState, p restParams) { st.setPreconditioningMax(p.bool("on")) }),
		"set_temps": effect(func(st *CarState, p restParams) {
			if t, ok := p.num("driver_temp"); ok {
				st.DriverTempC = float32(t)
			}
			if t, ok := p.num("passenger_temp"); ok {
				st.PassengerTempC = float32(t)
			}
		}),
		"remote_seat_heater_request": func(st *CarState, p restParams, _ time.Time) string {
			i := int(p.int32("seat_position"))
			if i < 0 || i >= len(st.SeatHeaters) {
				return "invalid_value"
			}
			st.SeatHeaters[i] = min(max(p.int32("level"), 0), 3)
			return ""
		},
		"remote_seat_cooler_request": func(st *CarState, p restParams, _ time.Time) string {
			i := int(p.int32("seat_position")) - 1
			if i < 0 || i > 1 {
				return "invalid_value"
			}
			st.SeatCoolers[i] = min(max(p.int32("seat_cooler_level")-1, 0), 3)
			return ""
		},
		"remote_auto_seat_climate_request": func(st *CarState, p restParams, _ time.Time) string {
			i := int(p.int32("auto_seat_position")) - 1
			if i < 0 || i > 1 {
				return "invalid_value"
			}
			st.AutoSeatClimate[i] = p.bool("auto_climate_on")
			return ""
		},
		"set_climate_keeper_mode": func(st *CarState, p restParams, _ time.Time) string {
			m := int(p.int32("climate_keeper_mode"))
			if m < 0 || m >= len(climateKeeperModes) {
				return "invalid_value"
			}
			st.setClimateKeeper(climateKeeperModes[m])
			return ""
		},
		"set_cop_temp": func(st *CarState, p restParams, _ time.Time) string {
			// 1 low, 2 medium, 3 high: the numbering vehicle-command sends to signed cars too.
			levels := []string{"", "Low", "Medium", "High"}
			i := int(p.int32("cop_temp"))
			if i < 1 || i >= len(levels) {
				return "invalid_value"
			}
			st.CopActivationTemp = levels[i]
			return ""
		},
	}
}

// restSecurityCommands are sentry, valet, PIN to drive, speed limit and guest mode.
func restSecurityCommands() map[string]restCommand {
	clearPINToDrive := effect(func(st *CarState, _ restParams) { st.PINToDrive = false })
	clearSpeedLimitPIN := effect(func(st *CarState, _ restParams) { st.SpeedLimitPINSet, st.SpeedLimitActive = false, false })
	return map[string]restCommand{
		"set_sentry_mode": effect(func(st *CarState, p restParams) { st.SentryMode = p.bool("on") }),
		"set_valet_mode": func(st *CarState, p restParams, _ time.Time) string {
			return st.setValet(p.bool("on"), p.str("password"))
		},
		"reset_valet_pin":             effect(func(st *CarState, _ restParams) { st.ValetPINSet = false }),
		"set_pin_to_drive":            effect(func(st *CarState, p restParams) { st.PINToDrive = p.bool("on") }),
		"clear_pin_to_drive_admin":    clearPINToDrive,
		"reset_pin_to_drive_pin":      clearPINToDrive,
		"speed_limit_activate":        func(st *CarState, p restParams, _ time.Time) string { return st.setSpeedLimit(true, p.str("pin")) },
		"speed_limit_deactivate":      func(st *CarState, p restParams, _ time.Time) string { return st.setSpeedLimit(false, p.str("pin")) },
		"speed_limit_clear_pin":       clearSpeedLimitPIN,
		"speed_limit_clear_pin_admin": clearSpeedLimitPIN,
		"speed_limit_set_limit": func(st *CarState, p restParams, _ time.Time) string {
			return st.setSpeedLimitMPH(orZero(p.num("limit_mph")))
		},
		"guest_mode": effect(func(st *CarState, p restParams) { st.GuestMode = p.bool("enable") }),
	}
}

// restInfotainmentCommands are the car's name, power modes, media, software updates and
// navigation.
func restInfotainmentCommands() map[string]restCommand {
	return map[string]restCommand{
		"set_vehicle_name":          effect(func(st *CarState, p restParams) { st.Name = p.str("vehicle_name") }),
		"set_low_power_mode":        effect(func(st *CarState, p restParams) { st.LowPowerMode = p.bool("enable") }),
		"keep_accessory_power_mode": effect(func(st *CarState, p restParams) { st.KeepAccessoryPower = p.bool("enable") }),
		"adjust_volume":             effect(func(st *CarState, p restParams) { st.setVolume(float32(orZero(p.num("volume")))) }),
		"media_volume_up":           effect(func(st *CarState, _ restParams) { st.setVolume(st.Volume + 1) }),
		"media_volume_down":         effect(func(st *CarState, _ restParams) { st.setVolume(st.Volume - 1) }),
		"media_toggle_playback":     effect(func(st *CarState, _ restParams) { st.MediaPlaying = !st.MediaPlaying }),
		"media_next_track":          effect(func(st *CarState, _ restParams) { st.stepTrack(1) }),
		"media_prev_track":          effect(func(st *CarState, _ restParams) { st.stepTrack(-1) }),
		"media_next_fav":            effect(func(st *CarState, _ restParams) { st.stepFavorite(1) }),
		"media_prev_fav":            effect(func(st *CarState, _ restParams) { st.stepFavorite(-1) }),
		"schedule_software_update": func(st *CarState, p restParams, now time.Time) string {
			return st.scheduleUpdate(now, time.Duration(p.int32("offset_sec"))*time.Second)
		},
		"cancel_software_update": effect(func(st *CarState, _ restParams) { st.cancelUpdate() }),
		"navigation_request": effect(func(st *CarState, p restParams) {
			// The Android share intent the Tesla app sends: the destination is the shared text.
			if value, ok := p["value"].(map[string]any); ok {
				st.Destination, _ = value["android.intent.extra.TEXT"].(string)
			}
		}),
	}
}

// orZero drops the ok of a lookup whose zero value is the right default.
func orZero(f float64, _ bool) float64 { return f }
