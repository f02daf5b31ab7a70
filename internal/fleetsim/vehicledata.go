package fleetsim

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// The sections of GET …/vehicle_data, as its endpoints parameter names them (Fleet API
// vehicle-endpoints#vehicle-data).
const (
	sectionCharge          = "charge_state"
	sectionClimate         = "climate_state"
	sectionDrive           = "drive_state"
	sectionGUI             = "gui_settings"
	sectionVehicleConfig   = "vehicle_config"
	sectionVehicleState    = "vehicle_state"
	sectionLocation        = "location_data"
	sectionChargeSchedules = "charge_schedule_data"
	sectionPrecondition    = "preconditioning_schedule_data"
	sectionClosures        = "closures_state"
	sectionCombo           = "vehicle_data_combo"
)

// defaultSections is what vehicle_data answers without endpoints: every section but the
// location, which the Fleet API has sent only on request (location_data) since firmware 2023.38.
var defaultSections = []string{sectionCharge, sectionClimate, sectionDrive, sectionGUI, sectionVehicleConfig, sectionVehicleState}

// parseSections reads the endpoints parameter (names separated by ';', as the Fleet API takes
// them; ',' works too). Unknown names are ignored, as the Fleet API ignores them.
func parseSections(endpoints string) map[string]bool {
	want := map[string]bool{}
	if strings.TrimSpace(endpoints) == "" {
		for _, s := range defaultSections {
			want[s] = true
		}
		return want
	}
	for name := range strings.FieldsFuncSeq(endpoints, func(r rune) bool { return r == ';' || r == ',' }) {
		switch name = strings.TrimSpace(name); name {
		case sectionCombo:
			for _, s := range defaultSections {
				want[s] = true
			}
		case sectionClosures:
			// Doors, trunks, windows and locks live in vehicle_state in the JSON API.
			want[sectionVehicleState] = true
		default:
			want[name] = true
		}
	}
	return want
}

// vehicleDataSections renders the requested sections of st, as the Fleet API's JSON names them.
// now stamps each section's timestamp (milliseconds).
func vehicleDataSections(st CarState, want map[string]bool, now time.Time) map[string]any {
	ms := now.UnixMilli()
	out := map[string]any{}
	if want[sectionCharge] {
		out[sectionCharge] = chargeState(st, ms)
	}
	if want[sectionClimate] {
		out[sectionClimate] = climateState(st, ms)
	}
	if want[sectionDrive] || want[sectionLocation] {
		d := map[string]any{"timestamp": ms}
		if want[sectionDrive] {
			d = driveState(st, ms)
		}
		if want[sectionLocation] {
			for k, v := range locationFields(st, now) {
				d[k] = v
			}
		}
		out[sectionDrive] = d
	}
	if want[sectionGUI] {
		out[sectionGUI] = guiSettings(ms)
	}
	if want[sectionVehicleConfig] {
		out[sectionVehicleConfig] = vehicleConfig(st, ms)
	}
	if want[sectionVehicleState] {
		out[sectionVehicleState] = vehicleState(st, ms)
	}
	if want[sectionChargeSchedules] {
		out[sectionChargeSchedules] = chargeScheduleData(st, ms)
	}
	if want[sectionPrecondition] {
		out[sectionPrecondition] = preconditionScheduleData(st, ms)
	}
	return out
}

// round rounds to the given number of decimals, so numbers read like the Fleet API's.
func round(x float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(x*p) / p
}

// nullIf returns nil (JSON null) when zero, else v.
func nullIf[T comparable](v T) any {
	var zero T
	if v == zero {
		return nil
	}
	return v
}

func chargeState(st CarState, ms int64) map[string]any {
	spec := specOf(st.Model)
	level := int(math.Round(st.BatteryLevel))
	rangeMi := round(st.BatteryLevel/100*spec.ratedRange, 2)
	power := st.chargerPowerKW()
	var actual, phases, volts any = 0, nil, 2
	var rate, minutesToFull float64
	var hoursToFull float64
	if power > 0 {
		actual, phases, volts = st.chargeAmps(), 1, chargerVolts
		pctPerHour := power / spec.capacity * 100
		rate = round(pctPerHour/100*spec.ratedRange, 1)
		hoursToFull = max(float64(st.ChargeLimit)-st.BatteryLevel, 0) / pctPerHour
		minutesToFull = math.Round(hoursToFull * 60)
	}
	cable, latch := "<invalid>", "Disengaged"
	if st.PluggedIn {
		cable, latch = "IEC", "Engaged"
	}
	mode, start := "Off", any(nil)
	if st.ScheduledCharging {
		mode, start = "StartAt", st.ScheduledChargingMinutes
	} else if st.ScheduledDeparture {
		mode = "DepartBy"
	}
	return map[string]any{
		"battery_heater_on":                 false,
		"battery_level":                     level,
		"battery_range":                     rangeMi,
		"charge_amps":                       st.ChargingAmps,
		"charge_current_request":            st.ChargingAmps,
		"charge_current_request_max":        48,
		"charge_enable_request":             st.Charging,
		"charge_energy_added":               round(st.ChargeEnergyAdded, 2),
		"charge_limit_soc":                  st.ChargeLimit,
		"charge_limit_soc_max":              100,
		"charge_limit_soc_min":              50,
		"charge_limit_soc_std":              90,
		"charge_miles_added_ideal":          round(st.ChargeEnergyAdded/spec.capacity*spec.ratedRange, 1),
		"charge_miles_added_rated":          round(st.ChargeEnergyAdded/spec.capacity*spec.ratedRange, 1),
		"charge_port_cold_weather_mode":     false,
		"charge_port_color":                 "<invalid>",
		"charge_port_door_open":             st.ChargePortOpen,
		"charge_port_latch":                 latch,
		"charge_rate":                       rate,
		"charger_actual_current":            actual,
		"charger_phases":                    phases,
		"charger_pilot_current":             48,
		"charger_power":                     int(math.Round(power)),
		"charger_voltage":                   volts,
		"charging_state":                    st.chargingState(),
		"conn_charge_cable":                 cable,
		"est_battery_range":                 round(rangeMi*0.93, 2),
		"fast_charger_brand":                "<invalid>",
		"fast_charger_present":              false,
		"fast_charger_type":                 "<invalid>",
		"ideal_battery_range":               rangeMi,
		"managed_charging_active":           st.ManagedChargeAmps > 0,
		"managed_charging_start_time":       nil,
		"managed_charging_user_canceled":    false,
		"max_range_charge_counter":          0,
		"minutes_to_full_charge":            minutesToFull,
		"not_enough_power_to_heat":          nil,
		"off_peak_charging_enabled":         st.OffPeakChargingEnabled,
		"off_peak_charging_times":           "all_week",
		"off_peak_hours_end_time":           360,
		"preconditioning_enabled":           st.PreconditioningEnabled,
		"preconditioning_times":             "all_week",
		"scheduled_charging_mode":           mode,
		"scheduled_charging_pending":        st.ScheduledCharging && !st.Charging && st.PluggedIn,
		"scheduled_charging_start_time":     start,
		"scheduled_departure_time_minutes":  st.ScheduledDepartureMinutes,
		"supercharger_session_trip_planner": false,
		"time_to_full_charge":               round(hoursToFull, 2),
		"timestamp":                         ms,
		"trip_charging":                     false,
		"usable_battery_level":              max(level-1, 0),
		"user_charge_enable_request":        nil,
	}
}

// Climate keeper and overheat protection values as vehicle_data shows them.
var (
	keeperModeJSON = map[string]string{
		"ClimateKeeperAction_Off": "off", "ClimateKeeperAction_On": "keep",
		"ClimateKeeperAction_Dog": "dog", "ClimateKeeperAction_Camp": "camp",
	}
	overheatJSON = map[string]string{"off": "Off", "on": "On", "fan_only": "FanOnly"}
)

func climateState(st CarState, ms int64) map[string]any {
	defrost := 0
	if st.PreconditioningMax {
		defrost = 2
	}
	fan := 0
	if st.ClimateOn {
		fan = 3
	}
	c := map[string]any{
		"allow_cabin_overheat_protection":             true,
		"auto_seat_climate_left":                      st.AutoSeatClimate[0],
		"auto_seat_climate_right":                     st.AutoSeatClimate[1],
		"auto_steering_wheel_heat":                    false,
		"battery_heater":                              false,
		"battery_heater_no_power":                     nil,
		"bioweapon_mode":                              st.BioweaponMode,
		"cabin_overheat_protection":                   overheatJSON[st.CabinOverheatProtection],
		"cabin_overheat_protection_actively_cooling":  false,
		"climate_keeper_mode":                         keeperModeJSON[st.ClimateKeeperMode],
		"cop_activation_temperature":                  st.CopActivationTemp,
		"defrost_mode":                                defrost,
		"driver_temp_setting":                         st.DriverTempC,
		"fan_status":                                  fan,
		"hvac_auto_request":                           "On",
		"inside_temp":                                 round(st.InsideTempC, 1),
		"is_auto_conditioning_on":                     st.ClimateOn,
		"is_climate_on":                               st.ClimateOn,
		"is_front_defroster_on":                       st.PreconditioningMax,
		"is_preconditioning":                          st.ClimateOn && st.ShiftState == "",
		"is_rear_defroster_on":                        st.PreconditioningMax,
		"left_temp_direction":                         0,
		"max_avail_temp":                              28,
		"min_avail_temp":                              15,
		"outside_temp":                                round(st.OutsideTempC, 1),
		"passenger_temp_setting":                      st.PassengerTempC,
		"remote_heater_control_enabled":               st.ClimateOn,
		"right_temp_direction":                        0,
		"seat_fan_front_left":                         st.SeatCoolers[0],
		"seat_fan_front_right":                        st.SeatCoolers[1],
		"side_mirror_heaters":                         false,
		"steering_wheel_heat_level":                   boolInt(st.SteeringWheelHeater) * 3,
		"steering_wheel_heater":                       st.SteeringWheelHeater,
		"supports_fan_only_cabin_overheat_protection": true,
		"timestamp":                                   ms,
		"wiper_blade_heater":                          false,
	}
	seats := []string{"left", "right", "rear_left", "rear_left_back", "rear_center", "rear_right", "rear_right_back", "third_row_left", "third_row_right"}
	for i, name := range seats {
		if i >= 7 && st.Model != "modelx" && st.Model != "modely" {
			continue // only cars with a third row have its heaters
		}
		c["seat_heater_"+name] = st.SeatHeaters[i]
	}
	return c
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func driveState(st CarState, ms int64) map[string]any {
	power := 0
	if st.driving() {
		power = int(math.Round(st.Speed * whPerMileDriving / 1000))
	} else if kw := st.chargerPowerKW(); kw > 0 {
		power = -int(math.Round(kw))
	}
	return map[string]any{
		"active_route_destination":           nullIf(st.Destination),
		"active_route_energy_at_arrival":     nil,
		"active_route_miles_to_arrival":      nil,
		"active_route_minutes_to_arrival":    nil,
		"active_route_traffic_minutes_delay": nil,
		"power":                              power,
		"shift_state":                        nullIf(st.ShiftState),
		"speed":                              nullIf(int(math.Round(st.Speed))),
		"timestamp":                          ms,
	}
}

// locationFields are the drive_state fields that need location_data.
func locationFields(st CarState, now time.Time) map[string]any {
	lat, lon := round(st.Latitude, 6), round(st.Longitude, 6)
	f := map[string]any{
		"gps_as_of":                 now.Unix(),
		"heading":                   st.Heading,
		"latitude":                  lat,
		"longitude":                 lon,
		"native_latitude":           lat,
		"native_location_supported": 1,
		"native_longitude":          lon,
		"native_type":               "wgs",
	}
	if st.Destination != "" {
		f["active_route_latitude"] = lat
		f["active_route_longitude"] = lon
	}
	return f
}

func guiSettings(ms int64) map[string]any {
	return map[string]any{
		"gui_24_hour_time":       false,
		"gui_charge_rate_units":  "mi/hr",
		"gui_distance_units":     "mi/hr",
		"gui_range_display":      "Rated",
		"gui_temperature_units":  "F",
		"gui_tirepressure_units": "Psi",
		"show_range_units":       false,
		"timestamp":              ms,
	}
}

func vehicleConfig(st CarState, ms int64) map[string]any {
	third := "None"
	if st.Model == "modelx" || st.Model == "modely" {
		third = "FuturisFoldFlat"
	}
	return map[string]any{
		"aux_park_lamps":                 "NaPremium",
		"badge_version":                  0,
		"can_accept_navigation_requests": true,
		"can_actuate_trunks":             true,
		"car_special_type":               "base",
		"car_type":                       st.Model,
		"charge_port_type":               "US",
		"cop_user_set_temp_supported":    true,
		"dashcam_clip_save_supported":    true,
		"default_charge_to_max":          false,
		"driver_assist":                  "TeslaAP3",
		"ece_restrictions":               false,
		"efficiency_package":             "Default",
		"eu_vehicle":                     false,
		"exterior_color":                 "MidnightSilver",
		"exterior_trim":                  "Black",
		"has_air_suspension":             st.Model == "models" || st.Model == "modelx",
		"has_ludicrous_mode":             false,
		"has_seat_cooling":               true,
		"headlamp_type":                  "Premium",
		"interior_trim_type":             "Black2",
		"key_version":                    2,
		"motorized_charge_port":          true,
		"performance_package":            "Base",
		"plg":                            true,
		"pws":                            true,
		"rear_drive_unit":                "PM216MOSFET",
		"rear_seat_heaters":              1,
		"rear_seat_type":                 0,
		"rhd":                            false,
		"roof_color":                     "RoofColorGlass",
		"seat_type":                      nil,
		"spoiler_type":                   "None",
		"sun_roof_installed":             nil,
		"supports_qr_pairing":            false,
		"third_row_seats":                third,
		"timestamp":                      ms,
		"trim_badging":                   "74d",
		"use_range_badging":              true,
		"utc_offset":                     -25200,
		"webcam_selfie_supported":        true,
		"webcam_supported":               true,
		"wheel_type":                     "Pinwheel18CapKit",
	}
}

// firmwareHash is the build hash car_version shows after the version.
func firmwareHash(version string) string {
	h := uint32(2166136261)
	for i := 0; i < len(version); i++ {
		h = (h ^ uint32(version[i])) * 16777619
	}
	return strconv.FormatUint(uint64(h), 16)
}

// vehicleState is vehicle_data's vehicle_state for st at ms (Unix milliseconds): closures,
// locks, security modes, media, software update and tire pressures.
func vehicleState(st CarState, ms int64) map[string]any {
	open := func(b bool) int { return boolInt(b) }
	window := open(st.WindowsVented)
	tonneau, tonneauPct := any(nil), any(nil)
	if st.Model == "cybertruck" {
		tonneau, tonneauPct = "closed", 0
		if st.TonneauOpen {
			tonneau, tonneauPct = "open", 100
		}
	}
	s := map[string]any{
		"api_version":                 81,
		"autopark_state_v3":           "standby",
		"calendar_supported":          true,
		"car_version":                 st.Firmware + " " + firmwareHash(st.Firmware),
		"center_display_state":        boolInt(!st.Asleep && (st.ClimateOn || st.driving())) * 2,
		"dashcam_clip_save_available": true,
		"dashcam_state":               "Recording",
		"df":                          0,
		"dr":                          0,
		"fd_window":                   window,
		"feature_bitmask":             "fbdffbff,187f",
		"fp_window":                   window,
		"ft":                          open(st.FrontTrunkOpen),
		"guest_mode_enabled":          st.GuestMode,
		"homelink_nearby":             false,
		"is_user_present":             st.driving(),
		"keep_accessory_power_mode":   st.KeepAccessoryPower,
		"last_autopark_error":         "no_error",
		"locked":                      st.Locked,
		"low_power_mode":              st.LowPowerMode,
		"media_info":                  mediaInfo(st),
		"media_state":                 map[string]any{"remote_control_enabled": true},
		"notifications_supported":     true,
		"odometer":                    round(st.Odometer, 6),
		"parsed_calendar_supported":   true,
		"pf":                          0,
		"pin_to_drive_enabled":        st.PINToDrive,
		"pr":                          0,
		"rd_window":                   window,
		"remote_start":                st.RemoteStart,
		"remote_start_enabled":        true,
		"remote_start_supported":      true,
		"rp_window":                   window,
		"rt":                          open(st.RearTrunkOpen),
		"santa_mode":                  0,
		"sentry_mode":                 st.SentryMode,
		"sentry_mode_available":       true,
		"service_mode":                false,
		"service_mode_plus":           false,
		"software_update":             softwareUpdate(st),
		"speed_limit_mode": map[string]any{
			"active":            st.SpeedLimitActive,
			"current_limit_mph": st.SpeedLimitMPH,
			"max_limit_mph":     120,
			"min_limit_mph":     50,
			"pin_code_set":      st.SpeedLimitPINSet,
		},
		"timestamp":                   ms,
		"tonneau_percent_open":        tonneauPct,
		"tonneau_state":               tonneau,
		"valet_mode":                  st.ValetMode,
		"valet_pin_needed":            st.ValetPINSet,
		"vehicle_name":                st.Name,
		"vehicle_self_test_progress":  0,
		"vehicle_self_test_requested": false,
		"webcam_available":            true,
	}
	addTPMS(s, ms)
	return s
}

// softwareUpdate is vehicle_state's software_update: none, or the pending version, with its
// start time once scheduled.
func softwareUpdate(st CarState) map[string]any {
	if st.SoftwareUpdateVersion == "" {
		return map[string]any{"download_perc": 0, "expected_duration_sec": 2700, "install_perc": 1, "status": "", "version": " "}
	}
	update := map[string]any{"download_perc": 100, "expected_duration_sec": 2700, "install_perc": 1, "status": "available", "version": st.SoftwareUpdateVersion}
	if st.SoftwareUpdateScheduled {
		update["status"] = "scheduled"
		update["scheduled_time_ms"] = st.SoftwareUpdateAt.UnixMilli()
	}
	return update
}

// mediaInfo is vehicle_state's media_info: the radio, its volume, and the station and track the
// media commands step through.
func mediaInfo(st CarState) map[string]any {
	playback := "Stopped"
	if st.MediaPlaying {
		playback = "Playing"
	}
	return map[string]any{
		"a2dp_source_name":       "",
		"audio_volume":           round(float64(st.Volume), 4),
		"audio_volume_increment": 0.333333,
		"audio_volume_max":       10.333333,
		"media_playback_status":  playback,
		"now_playing_album":      "",
		"now_playing_artist":     "",
		"now_playing_duration":   0,
		"now_playing_elapsed":    0,
		"now_playing_source":     "Radio",
		"now_playing_station":    mediaFavorites[st.MediaFavorite%len(mediaFavorites)],
		"now_playing_title":      mediaTracks[st.MediaTrack%len(mediaTracks)],
	}
}

// addTPMS adds the tire pressure fields to vehicle_state s: every tire and the recommended cold
// pressures at 2.9 bar, no warnings, last seen at ms (Unix milliseconds).
func addTPMS(s map[string]any, ms int64) {
	for _, w := range []string{"fl", "fr", "rl", "rr"} {
		s["tpms_hard_warning_"+w] = false
		s["tpms_soft_warning_"+w] = false
		s["tpms_pressure_"+w] = 2.9
		s["tpms_last_seen_pressure_time_"+w] = ms / 1000
	}
	s["tpms_rcp_front_value"] = 2.9
	s["tpms_rcp_rear_value"] = 2.9
}

func scheduleJSON(list []Schedule, precondition bool) []map[string]any {
	out := make([]map[string]any, 0, len(list))
	for _, s := range list {
		m := map[string]any{
			"id": s.ID, "name": s.Name, "days_of_week": s.DaysOfWeek, "enabled": s.Enabled,
			"one_time": s.OneTime, "latitude": s.Latitude, "longitude": s.Longitude,
		}
		if precondition {
			m["precondition_time"] = s.Time
		} else {
			m["start_enabled"], m["start_time"], m["end_enabled"], m["end_time"] = s.StartEnabled, s.StartTime, s.EndEnabled, s.EndTime
		}
		out = append(out, m)
	}
	return out
}

func chargeScheduleData(st CarState, ms int64) map[string]any {
	return map[string]any{"charge_schedules": scheduleJSON(st.ChargeSchedules, false), "max_num_charge_schedules": 10, "timestamp": ms}
}

func preconditionScheduleData(st CarState, ms int64) map[string]any {
	return map[string]any{"precondition_schedules": scheduleJSON(st.PreconditionSchedules, true), "max_num_precondition_schedules": 10, "timestamp": ms}
}
