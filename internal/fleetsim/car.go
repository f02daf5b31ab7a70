package fleetsim

import (
	"math"
	"slices"
	"strings"
	"time"
)

// CarState is the simulated state of a car: what commands change, what time moves (battery,
// cabin temperature, odometer and position), and what vehicle_data shows. Units are the Fleet
// API's: miles, mph, °C, percent.
type CarState struct {
	// Name is the vehicle name (SetVehicleNameAction), shown as display_name.
	Name string `json:"name"`
	// Model is the car_type: "model3", "modely", "models", "modelx" or "cybertruck".
	Model string `json:"model"`
	// Firmware is the software version, such as "2024.44.25.3".
	Firmware string `json:"firmware"`
	// Asleep reports whether the vehicle is asleep (wake_up clears it, after the wake time).
	Asleep bool `json:"asleep"`
	// Locked reports whether the doors are locked.
	Locked bool `json:"locked"`
	// RemoteStart reports whether keyless driving was enabled (RKE_ACTION_REMOTE_DRIVE).
	RemoteStart bool `json:"remote_start"`
	// FrontTrunkOpen reports whether the frunk is open.
	FrontTrunkOpen bool `json:"front_trunk_open"`
	// RearTrunkOpen reports whether the trunk is open.
	RearTrunkOpen bool `json:"rear_trunk_open"`
	// TonneauOpen reports whether the tonneau cover is open.
	TonneauOpen bool `json:"tonneau_open"`
	// WindowsVented reports whether the windows are vented.
	WindowsVented bool `json:"windows_vented"`
	// ChargePortOpen reports whether the charge port door is open.
	ChargePortOpen bool `json:"charge_port_open"`
	// PluggedIn reports whether a charge cable is connected; charging needs it.
	PluggedIn bool `json:"plugged_in"`
	// BatteryLevel is the state of charge in percent, with its fraction (vehicle_data rounds it).
	BatteryLevel float64 `json:"battery_level"`
	// ChargeLimit is the charge limit in percent.
	ChargeLimit int32 `json:"charge_limit"`
	// Charging reports whether the car is charging. It stops by itself at the charge limit.
	Charging bool `json:"charging"`
	// ChargingAmps is the requested charging current (charge_current_request).
	ChargingAmps int32 `json:"charging_amps"`
	// ChargeEnergyAdded is the energy added by the current or last charging session, in kWh.
	ChargeEnergyAdded float64 `json:"charge_energy_added"`
	// ScheduledCharging reports whether scheduled charging is on.
	ScheduledCharging bool `json:"scheduled_charging"`
	// ScheduledChargingMinutes is the scheduled start, minutes after midnight.
	ScheduledChargingMinutes int32 `json:"scheduled_charging_minutes"`
	// ScheduledDeparture reports whether scheduled departure is on.
	ScheduledDeparture bool `json:"scheduled_departure"`
	// ScheduledDepartureMinutes is the departure time, minutes after midnight.
	ScheduledDepartureMinutes int32 `json:"scheduled_departure_minutes"`
	// PreconditioningEnabled reports whether scheduled departure preconditions the cabin.
	PreconditioningEnabled bool `json:"preconditioning_enabled"`
	// OffPeakChargingEnabled reports whether scheduled departure charges off peak.
	OffPeakChargingEnabled bool `json:"off_peak_charging_enabled"`
	// ChargeSchedules are the charge schedules, in the order added.
	ChargeSchedules []Schedule `json:"charge_schedules"`
	// PreconditionSchedules are the precondition schedules, in the order added.
	PreconditionSchedules []Schedule `json:"precondition_schedules"`
	// ManagedChargeAmps is the current a fleet manager set (set_managed_charge_current_request);
	// 0 means none.
	ManagedChargeAmps int32 `json:"managed_charge_amps"`
	// ClimateOn reports whether climate control is on.
	ClimateOn bool `json:"climate_on"`
	// DriverTempC is the driver's temperature setting in °C.
	DriverTempC float32 `json:"driver_temp_c"`
	// PassengerTempC is the passenger's temperature setting in °C.
	PassengerTempC float32 `json:"passenger_temp_c"`
	// InsideTempC is the cabin temperature. Climate moves it toward the driver's setting; without
	// climate it drifts toward the outside temperature.
	InsideTempC float64 `json:"inside_temp_c"`
	// OutsideTempC is the outside temperature.
	OutsideTempC float64 `json:"outside_temp_c"`
	// SeatHeaters are the seat heater levels (0–3) by the REST API's seat_position: front left,
	// front right, rear left, rear left back, rear center, rear right, rear right back, third row
	// left, third row right.
	SeatHeaters [9]int32 `json:"seat_heaters"`
	// SeatCoolers are the front seats' ventilation levels (0–3), left then right.
	SeatCoolers [2]int32 `json:"seat_coolers"`
	// AutoSeatClimate reports whether automatic seat climate is on, front left then front right.
	AutoSeatClimate [2]bool `json:"auto_seat_climate"`
	// SteeringWheelHeater reports whether the steering wheel heater is on.
	SteeringWheelHeater bool `json:"steering_wheel_heater"`
	// BioweaponMode reports whether bioweapon defense mode is on.
	BioweaponMode bool `json:"bioweapon_mode"`
	// PreconditioningMax reports whether max defrost is on.
	PreconditioningMax bool `json:"preconditioning_max"`
	// ClimateKeeperMode is the climate keeper mode's enum name ("ClimateKeeperAction_Off", …).
	ClimateKeeperMode string `json:"climate_keeper_mode"`
	// CabinOverheatProtection is "off", "on" or "fan_only".
	CabinOverheatProtection string `json:"cabin_overheat_protection"`
	// CopActivationTemp is the overheat protection's activation level: "Low", "Medium" or "High".
	CopActivationTemp string `json:"cop_activation_temp"`
	// SentryMode reports whether sentry mode is on.
	SentryMode bool `json:"sentry_mode"`
	// ValetMode reports whether valet mode is on.
	ValetMode bool `json:"valet_mode"`
	// ValetPINSet reports whether a valet PIN is set (reset_valet_pin clears it).
	ValetPINSet bool `json:"valet_pin_set"`
	// PINToDrive reports whether PIN to drive is on.
	PINToDrive bool `json:"pin_to_drive"`
	// SpeedLimitActive reports whether speed limit mode is active.
	SpeedLimitActive bool `json:"speed_limit_active"`
	// SpeedLimitPINSet reports whether a speed limit PIN is set.
	SpeedLimitPINSet bool `json:"speed_limit_pin_set"`
	// SpeedLimitMPH is the speed limit in mph.
	SpeedLimitMPH float64 `json:"speed_limit_mph"`
	// GuestMode reports whether guest mode is on.
	GuestMode bool `json:"guest_mode"`
	// LowPowerMode reports whether low power mode is on.
	LowPowerMode bool `json:"low_power_mode"`
	// KeepAccessoryPower reports whether accessory power is kept on.
	KeepAccessoryPower bool `json:"keep_accessory_power"`
	// Volume is the media volume (0–11).
	Volume float32 `json:"volume"`
	// MediaPlaying reports whether media is playing (toggled by MediaPlayAction).
	MediaPlaying bool `json:"media_playing"`
	// MediaTrack is the index of the playing track in the simulated playlist.
	MediaTrack int `json:"media_track"`
	// MediaFavorite is the index of the selected favorite station.
	MediaFavorite int `json:"media_favorite"`
	// SoftwareUpdateVersion is the version of an update the car has downloaded; "" means none.
	SoftwareUpdateVersion string `json:"software_update_version"`
	// SoftwareUpdateScheduled reports whether a software update is scheduled.
	SoftwareUpdateScheduled bool `json:"software_update_scheduled"`
	// SoftwareUpdateAt is when the scheduled update starts.
	SoftwareUpdateAt time.Time `json:"software_update_at,omitzero"`
	// Latitude and Longitude are the car's position (WGS 84).
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	// Heading is the direction the car points, in degrees from north.
	Heading int32 `json:"heading"`
	// ShiftState is "P", "D", "R", "N", or "" when the car is parked and off (shown as null).
	ShiftState string `json:"shift_state"`
	// Speed is the speed in mph while driving.
	Speed float64 `json:"speed"`
	// Odometer is the distance driven, in miles.
	Odometer float64 `json:"odometer"`
	// Destination is the active navigation destination (navigation_request); "" means none.
	Destination string `json:"destination"`
}

// Schedule is a charge or precondition schedule (add_charge_schedule,
// add_precondition_schedule). Days of the week are a bit mask, Sunday = bit 0.
type Schedule struct {
	ID           uint64  `json:"id"`
	Name         string  `json:"name,omitempty"`
	DaysOfWeek   int32   `json:"days_of_week"`
	Enabled      bool    `json:"enabled"`
	OneTime      bool    `json:"one_time"`
	StartEnabled bool    `json:"start_enabled,omitempty"`
	StartTime    int32   `json:"start_time,omitempty"`
	EndEnabled   bool    `json:"end_enabled,omitempty"`
	EndTime      int32   `json:"end_time,omitempty"`
	Time         int32   `json:"precondition_time,omitempty"`
	Latitude     float32 `json:"latitude"`
	Longitude    float32 `json:"longitude"`
}

// Defaults of a new simulated car.
const (
	defaultFirmware = "2024.44.25.3"
	defaultUpdate   = "2025.2.6"
)

// defaultCarState is a parked, locked car, plugged in (charge port open) at 64 % with a 90 % limit, at Tesla's
// Fremont factory on a mild day.
func defaultCarState() CarState {
	return CarState{
		Name:                    "Simulated",
		Model:                   "model3",
		Firmware:                defaultFirmware,
		Locked:                  true,
		PluggedIn:               true,
		ChargePortOpen:          true,
		BatteryLevel:            64,
		ChargeLimit:             90,
		ChargingAmps:            32,
		DriverTempC:             21,
		PassengerTempC:          21,
		InsideTempC:             20,
		OutsideTempC:            18,
		ClimateKeeperMode:       "ClimateKeeperAction_Off",
		CabinOverheatProtection: "off",
		CopActivationTemp:       "High",
		SpeedLimitMPH:           85,
		Volume:                  5,
		SoftwareUpdateVersion:   defaultUpdate,
		Latitude:                37.4925,
		Longitude:               -121.9447,
		Heading:                 90,
		Odometer:                12_480.6,
	}
}

func (c CarState) clone() CarState {
	c.ChargeSchedules = slices.Clone(c.ChargeSchedules)
	c.PreconditionSchedules = slices.Clone(c.PreconditionSchedules)
	return c
}

// modelSpec is what a model's battery holds and how far it goes.
type modelSpec struct {
	name       string  // the marketing name, for display
	capacity   float64 // usable kWh
	ratedRange float64 // miles at 100 %
	letter     byte    // VIN position 4
}

var modelSpecs = map[string]modelSpec{
	"model3":     {"Model 3", 75, 310, '3'},
	"modely":     {"Model Y", 75, 300, 'Y'},
	"models":     {"Model S", 100, 400, 'S'},
	"modelx":     {"Model X", 100, 335, 'X'},
	"cybertruck": {"Cybertruck", 123, 320, 'C'},
}

// specOf returns the spec of a model, Model 3's for an unknown one.
func specOf(model string) modelSpec {
	if s, ok := modelSpecs[model]; ok {
		return s
	}
	return modelSpecs["model3"]
}

// modelOfVIN reads the model from a Tesla VIN's fourth character.
func modelOfVIN(vin string) string {
	if len(vin) < 4 {
		return "model3"
	}
	for name, s := range modelSpecs {
		if s.letter == vin[3] {
			return name
		}
	}
	return "model3"
}

// ValidModel reports whether model is a car_type the simulator knows.
func ValidModel(model string) bool { _, ok := modelSpecs[model]; return ok }

// Physics of the simulation: how fast time moves things.
const (
	chargerVolts     = 240  // a home charger
	climateRate      = 1.0  // °C per minute toward the setting with climate on
	driftRate        = 0.1  // °C per minute toward outside without climate
	milesPerDegLat   = 69.0 // miles per degree of latitude
	whPerMileDriving = 250  // energy a driving car uses
)

// chargingState is charge_state.charging_state.
func (c *CarState) chargingState() string {
	switch {
	case !c.PluggedIn:
		return "Disconnected"
	case c.Charging:
		return "Charging"
	case c.BatteryLevel >= float64(c.ChargeLimit):
		return "Complete"
	default:
		return "Stopped"
	}
}

// chargeAmps is the current the car draws while charging: the request, capped by a fleet
// manager's limit.
func (c *CarState) chargeAmps() int32 {
	if c.ManagedChargeAmps > 0 && c.ManagedChargeAmps < c.ChargingAmps {
		return c.ManagedChargeAmps
	}
	return c.ChargingAmps
}

// chargerPowerKW is the charger's power while charging, 0 otherwise.
func (c *CarState) chargerPowerKW() float64 {
	if !c.Charging || !c.PluggedIn {
		return 0
	}
	return float64(c.chargeAmps()) * chargerVolts / 1000
}

// driving reports whether the car is in a drive gear.
func (c *CarState) driving() bool { return c.ShiftState != "" && c.ShiftState != "P" }

// busy reports whether the car stays awake by itself: it charges, runs climate, guards the car
// in sentry mode, or drives.
func (c *CarState) busy() bool {
	return c.Charging || c.ClimateOn || c.SentryMode || c.driving()
}

// run moves the car's physical state forward by d: it charges toward the limit, the cabin
// temperature moves, a driving car goes forward. It returns how long the car kept charging
// within d, so the caller knows when it went idle.
func (c *CarState) run(d time.Duration) (charged time.Duration) {
	if d <= 0 {
		return 0
	}
	spec := specOf(c.Model)
	if kw := c.chargerPowerKW(); kw > 0 {
		pctPerHour := kw / spec.capacity * 100
		need := float64(c.ChargeLimit) - c.BatteryLevel
		full := time.Duration(need / pctPerHour * float64(time.Hour))
		charged = min(d, max(full, 0))
		gain := pctPerHour * charged.Hours()
		c.BatteryLevel += gain
		c.ChargeEnergyAdded += gain / 100 * spec.capacity
		if charged < d || need <= 0 {
			c.BatteryLevel = max(c.BatteryLevel, float64(c.ChargeLimit))
			c.Charging = false
		}
	}
	target, rate := c.OutsideTempC, driftRate
	if c.ClimateOn {
		target, rate = float64(c.DriverTempC), climateRate
	}
	step := rate * d.Minutes()
	if diff := target - c.InsideTempC; math.Abs(diff) <= step {
		c.InsideTempC = target
	} else {
		c.InsideTempC += math.Copysign(step, diff)
	}
	if c.driving() && c.Speed > 0 {
		miles := c.Speed * d.Hours()
		if c.ShiftState == "R" {
			miles = -miles
		}
		c.Odometer += math.Abs(miles)
		c.BatteryLevel = max(c.BatteryLevel-math.Abs(miles)*whPerMileDriving/1000/spec.capacity*100, 0)
		rad := float64(c.Heading) * math.Pi / 180
		c.Latitude += miles * math.Cos(rad) / milesPerDegLat
		c.Longitude += miles * math.Sin(rad) / (milesPerDegLat * math.Cos(c.Latitude*math.Pi/180))
	}
	return charged
}

// --- the changes commands make, shared by signed and REST commands ---

// startCharging starts a charging session, or gives the car's reason not to.
func (c *CarState) startCharging() string {
	switch {
	case c.Charging:
		return "is_charging"
	case !c.PluggedIn:
		return "disconnected"
	case c.BatteryLevel >= float64(c.ChargeLimit):
		return "complete"
	}
	c.Charging = true
	c.ChargeEnergyAdded = 0
	return ""
}

// stopCharging stops charging, or gives the car's reason not to.
func (c *CarState) stopCharging() string {
	if !c.Charging {
		return "not_charging"
	}
	c.Charging = false
	return ""
}

// setChargeLimit sets the charge limit (50–100 %). A car charging past its new limit stops.
func (c *CarState) setChargeLimit(p int32) string {
	if p < 50 || p > 100 {
		return "invalid_value"
	}
	c.ChargeLimit = p
	if c.Charging && c.BatteryLevel >= float64(p) {
		c.Charging = false
	}
	return ""
}

// setChargingAmps sets the requested current (0–48 A).
func (c *CarState) setChargingAmps(a int32) string {
	if a < 0 || a > 48 {
		return "invalid_value"
	}
	c.ChargingAmps = a
	return ""
}

// setClimate turns climate on or off. Turning it off ends climate keeper and max defrost too.
func (c *CarState) setClimate(on bool) {
	c.ClimateOn = on
	if !on {
		c.ClimateKeeperMode = "ClimateKeeperAction_Off"
		c.PreconditioningMax = false
	}
}

// setVolume sets the media volume, within 0–11.
func (c *CarState) setVolume(v float32) { c.Volume = min(max(v, 0), 11) }

// setValet turns valet mode on (setting its PIN when one is given) or off.
func (c *CarState) setValet(on bool, pin string) string {
	if !on && !c.ValetMode {
		return "already off"
	}
	c.ValetMode = on
	if on && pin != "" {
		c.ValetPINSet = true
	}
	return ""
}

// setSpeedLimit activates or deactivates speed limit mode. Activating sets the PIN.
func (c *CarState) setSpeedLimit(on bool, pin string) string {
	if on && pin != "" {
		c.SpeedLimitPINSet = true
	}
	c.SpeedLimitActive = on
	return ""
}

// setSpeedLimitMPH sets the speed limit (50–120 mph).
func (c *CarState) setSpeedLimitMPH(mph float64) string {
	if mph < 50 || mph > 120 {
		return "invalid_value"
	}
	c.SpeedLimitMPH = mph
	return ""
}

// scheduleUpdate schedules the downloaded update to start in offset, if there is one.
func (c *CarState) scheduleUpdate(now time.Time, offset time.Duration) string {
	if c.SoftwareUpdateVersion == "" {
		return "no_update_available"
	}
	c.SoftwareUpdateScheduled = true
	c.SoftwareUpdateAt = now.Add(offset).UTC()
	return ""
}

// cancelUpdate cancels a scheduled update.
func (c *CarState) cancelUpdate() {
	c.SoftwareUpdateScheduled = false
	c.SoftwareUpdateAt = time.Time{}
}

// climateKeeperModes are the REST API's climate_keeper_mode values, in order.
var climateKeeperModes = []string{"ClimateKeeperAction_Off", "ClimateKeeperAction_On", "ClimateKeeperAction_Dog", "ClimateKeeperAction_Camp"}

// setClimateKeeper sets the climate keeper mode by its enum name. Any mode but off runs climate.
func (c *CarState) setClimateKeeper(mode string) {
	c.ClimateKeeperMode = mode
	if mode != climateKeeperModes[0] {
		c.ClimateOn = true
	}
}

// setCabinOverheat sets cabin overheat protection.
func (c *CarState) setCabinOverheat(on, fanOnly bool) {
	switch {
	case !on:
		c.CabinOverheatProtection = "off"
	case fanOnly:
		c.CabinOverheatProtection = "fan_only"
	default:
		c.CabinOverheatProtection = "on"
	}
}

// setPreconditioningMax turns max defrost on (which runs climate) or off.
func (c *CarState) setPreconditioningMax(on bool) {
	c.PreconditioningMax = on
	if on {
		c.ClimateOn = true
	}
}

// media is the simulated playlist and favorite stations.
var (
	mediaTracks    = []string{"Electric Feel", "Drive", "Roadrunner", "Fast Car", "Life Is a Highway"}
	mediaFavorites = []string{"KQED 88.5 FM", "KFOG 104.5 FM", "KCSM 91.1 FM"}
)

// stepTrack moves to the next (+1) or previous (-1) track.
func (c *CarState) stepTrack(d int) {
	c.MediaTrack = (c.MediaTrack + d + len(mediaTracks)) % len(mediaTracks)
}

// stepFavorite moves to the next (+1) or previous (-1) favorite.
func (c *CarState) stepFavorite(d int) {
	c.MediaFavorite = (c.MediaFavorite + d + len(mediaFavorites)) % len(mediaFavorites)
}

// upsertSchedule adds a schedule, replacing one with the same id.
func upsertSchedule(list []Schedule, s Schedule) []Schedule {
	if i := slices.IndexFunc(list, func(x Schedule) bool { return x.ID == s.ID }); i >= 0 {
		list[i] = s
		return list
	}
	return append(list, s)
}

// removeSchedule removes the schedule with that id.
func removeSchedule(list []Schedule, id uint64) []Schedule {
	return slices.DeleteFunc(list, func(x Schedule) bool { return x.ID == id })
}

// daysOfWeek reads the REST API's days_of_week ("Mon,Tues", "Weekdays", "All") as a bit mask with
// Sunday as bit 0; vehicle-command sends the same mask.
func daysOfWeek(s string) int32 {
	var mask int32
	for d := range strings.SplitSeq(strings.ToLower(s), ",") {
		switch d = strings.TrimSpace(d); {
		case d == "all":
			mask |= 0x7f
		case d == "weekdays":
			mask |= 0x3e
		case strings.HasPrefix(d, "sun"):
			mask |= 1 << 0
		case strings.HasPrefix(d, "mon"):
			mask |= 1 << 1
		case strings.HasPrefix(d, "tue"):
			mask |= 1 << 2
		case strings.HasPrefix(d, "wed"):
			mask |= 1 << 3
		case strings.HasPrefix(d, "thu"):
			mask |= 1 << 4
		case strings.HasPrefix(d, "fri"):
			mask |= 1 << 5
		case strings.HasPrefix(d, "sat"):
			mask |= 1 << 6
		}
	}
	return mask
}
