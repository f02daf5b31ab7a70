package fleetsim

import (
	"crypto/ecdh"
	"errors"
	"fmt"
	"io"
	"time"

	"gopkg.in/yaml.v3"
)

// Scenario is a simulated fleet described in YAML, for "proxy simulate -scenario FILE" and the
// dev mode's TESLA_HTTP_PROXY_DEV_SCENARIO:
//
//	sleep_after: 15m       # an idle car falls asleep (0 or absent: never)
//	wake_time: 10s         # wake_up takes this long
//	latency: data=200ms±50ms,commands=400ms±100ms
//	vehicles:
//	  - name: Daily driver
//	    model: modely          # model3, modely, models, modelx, cybertruck
//	    firmware: 2024.44.25.3
//	    battery: 41            # percent
//	    charge_limit: 80
//	    charging: true         # plugged in and charging at charging_amps
//	    charging_amps: 32
//	    location: {lat: 37.4925, lon: -121.9447, heading: 90}
//	  - vin: 5YJSA1E40PF000001
//	    model: models
//	    asleep: true
//	    legacy: true           # no Vehicle Command Protocol: REST commands only
//	    paired: false          # the app's key is not on this car
//	    faults: {rate_limit_retry_after: 30, delay: 2s}
//
// Every field is optional; a car without a VIN gets a generated one of its model.
type Scenario struct {
	// SleepAfter and WakeTime become Options.SleepAfter and Options.WakeTime.
	SleepAfter time.Duration `yaml:"sleep_after"`
	WakeTime   time.Duration `yaml:"wake_time"`
	// Latency is a ParseLatency setting; "" means none.
	Latency string `yaml:"latency"`
	// Vehicles are the cars, in order.
	Vehicles []ScenarioVehicle `yaml:"vehicles"`
}

// ScenarioVehicle is one car of a Scenario. A nil pointer keeps the default.
type ScenarioVehicle struct {
	VIN          string   `yaml:"vin"`
	Name         string   `yaml:"name"`
	Model        string   `yaml:"model"`
	Firmware     string   `yaml:"firmware"`
	Asleep       bool     `yaml:"asleep"`
	Legacy       bool     `yaml:"legacy"`
	Paired       *bool    `yaml:"paired"`
	Battery      *float64 `yaml:"battery"`
	ChargeLimit  *int32   `yaml:"charge_limit"`
	ChargingAmps *int32   `yaml:"charging_amps"`
	Charging     bool     `yaml:"charging"`
	PluggedIn    *bool    `yaml:"plugged_in"`
	Locked       *bool    `yaml:"locked"`
	Sentry       bool     `yaml:"sentry"`
	Climate      bool     `yaml:"climate"`
	InsideTemp   *float64 `yaml:"inside_temp"`
	OutsideTemp  *float64 `yaml:"outside_temp"`
	Odometer     *float64 `yaml:"odometer"`
	// Update is the version of a downloaded software update; "none" for none.
	Update string `yaml:"software_update"`
	// Location is where the car is; Driving makes it drive.
	Location *ScenarioLocation `yaml:"location"`
	Driving  *ScenarioDriving  `yaml:"driving"`
	// Faults are injected for this car from the start.
	Faults ScenarioFaults `yaml:"faults"`
}

// ScenarioLocation is where a car is.
type ScenarioLocation struct {
	Lat     float64 `yaml:"lat"`
	Lon     float64 `yaml:"lon"`
	Heading int32   `yaml:"heading"`
}

// ScenarioDriving makes a car drive: in gear D at a speed, along its heading.
type ScenarioDriving struct {
	Speed float64 `yaml:"speed"`
}

// ScenarioFaults are a car's injected faults (see Fault).
type ScenarioFaults struct {
	// Unreachable is Fault.Asleep: 408 whatever wakes it.
	Unreachable         bool          `yaml:"unreachable"`
	RateLimitRetryAfter int           `yaml:"rate_limit_retry_after"`
	MisdirectedHost     string        `yaml:"misdirected_host"`
	Delay               time.Duration `yaml:"delay"`
	FailAfterExecution  int           `yaml:"fail_after_execution"`
	Refuse              string        `yaml:"refuse"`
}

// ParseScenario reads a Scenario and checks it: known fields only, known models, values in
// range, VINs of 17 letters and digits, each once.
func ParseScenario(r io.Reader) (Scenario, error) {
	var sc Scenario
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&sc); err != nil && !errors.Is(err, io.EOF) {
		return sc, fmt.Errorf("scenario: %w", err)
	}
	var errs []error
	bad := func(i int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("scenario: vehicles[%d]: %s", i, fmt.Sprintf(format, a...)))
	}
	if sc.SleepAfter < 0 || sc.WakeTime < 0 {
		errs = append(errs, errors.New("scenario: sleep_after and wake_time must not be negative"))
	}
	if _, err := ParseLatency(sc.Latency); err != nil {
		errs = append(errs, fmt.Errorf("scenario: latency: %w", err))
	}
	seen := map[string]bool{}
	for i, v := range sc.Vehicles {
		if v.VIN != "" {
			if !PlausibleVIN(v.VIN) {
				bad(i, "vin %q is not 17 upper-case letters and digits", v.VIN)
			}
			if seen[v.VIN] {
				bad(i, "vin %s is listed twice", v.VIN)
			}
			seen[v.VIN] = true
		}
		if v.Model != "" && !ValidModel(v.Model) {
			bad(i, "model %q: want model3, modely, models, modelx or cybertruck", v.Model)
		}
		if b := v.Battery; b != nil && (*b < 0 || *b > 100) {
			bad(i, "battery %v: want 0 to 100", *b)
		}
		if l := v.ChargeLimit; l != nil && (*l < 50 || *l > 100) {
			bad(i, "charge_limit %d: want 50 to 100", *l)
		}
		if a := v.ChargingAmps; a != nil && (*a < 0 || *a > 48) {
			bad(i, "charging_amps %d: want 0 to 48", *a)
		}
		if v.Charging && v.PluggedIn != nil && !*v.PluggedIn {
			bad(i, "charging needs plugged_in")
		}
		if l := v.Location; l != nil && (l.Lat < -90 || l.Lat > 90 || l.Lon < -180 || l.Lon > 180) {
			bad(i, "location %v,%v is not a latitude and longitude", l.Lat, l.Lon)
		}
	}
	return sc, errors.Join(errs...)
}

// Options returns the simulator options the scenario sets (SleepAfter, WakeTime, Latency) on top
// of base.
func (sc Scenario) Options(base Options) (Options, error) {
	base.SleepAfter, base.WakeTime = sc.SleepAfter, sc.WakeTime
	if sc.Latency != "" {
		l, err := ParseLatency(sc.Latency)
		if err != nil {
			return base, fmt.Errorf("scenario: latency: %w", err)
		}
		base.Latency = l
	}
	return base, nil
}

// Apply adds the scenario's vehicles to s, with keys enrolled on every car that is paired (the
// default), and returns their VINs in order.
func (sc Scenario) Apply(s *Server, keys ...*ecdh.PublicKey) []string {
	vins := make([]string, 0, len(sc.Vehicles))
	for i, sv := range sc.Vehicles {
		vin := sv.VIN
		if vin == "" {
			vin = testVINFor(i+1, sv.Model)
		}
		var v *Vehicle
		if sv.Paired == nil || *sv.Paired {
			v = s.AddVehicle(vin, keys...)
		} else {
			v = s.AddVehicle(vin)
		}
		v.Update(func(st *CarState) { sv.applyTo(st) })
		if sv.Asleep {
			v.SetAsleep(true)
		}
		f := Fault{
			Asleep:              sv.Faults.Unreachable,
			Legacy:              sv.Legacy,
			RateLimitRetryAfter: sv.Faults.RateLimitRetryAfter,
			MisdirectedHost:     sv.Faults.MisdirectedHost,
			Delay:               sv.Faults.Delay,
			FailAfterExecution:  sv.Faults.FailAfterExecution,
			Refuse:              sv.Faults.Refuse,
		}
		if !f.IsZero() {
			s.SetFault(vin, f)
		}
		vins = append(vins, vin)
	}
	return vins
}

// applyTo sets what the scenario says on a car's state.
func (sv ScenarioVehicle) applyTo(st *CarState) {
	if sv.Model != "" {
		st.Model = sv.Model
	}
	if sv.Name != "" {
		st.Name = sv.Name
	} else if sv.Model != "" {
		st.Name = specOf(sv.Model).name
	}
	if sv.Firmware != "" {
		st.Firmware = sv.Firmware
	}
	switch sv.Update {
	case "":
	case "none":
		st.SoftwareUpdateVersion = ""
	default:
		st.SoftwareUpdateVersion = sv.Update
	}
	setIf(&st.BatteryLevel, sv.Battery)
	setIf(&st.ChargeLimit, sv.ChargeLimit)
	setIf(&st.ChargingAmps, sv.ChargingAmps)
	setIf(&st.PluggedIn, sv.PluggedIn)
	setIf(&st.Locked, sv.Locked)
	setIf(&st.InsideTempC, sv.InsideTemp)
	setIf(&st.OutsideTempC, sv.OutsideTemp)
	setIf(&st.Odometer, sv.Odometer)
	st.ChargePortOpen = st.PluggedIn
	if sv.Charging {
		st.PluggedIn, st.ChargePortOpen = true, true
		st.Charging = st.BatteryLevel < float64(st.ChargeLimit)
	}
	st.SentryMode = sv.Sentry
	if sv.Climate {
		st.setClimate(true)
	}
	if l := sv.Location; l != nil {
		st.Latitude, st.Longitude, st.Heading = l.Lat, l.Lon, l.Heading
	}
	if d := sv.Driving; d != nil && d.Speed > 0 {
		st.ShiftState, st.Speed = "D", d.Speed
		st.PluggedIn, st.Charging, st.ChargePortOpen = false, false, false
	}
}

func setIf[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

// testVINFor is NewTestVIN(i) made a VIN of the model (its fourth character), with its check
// digit.
func testVINFor(i int, model string) string {
	vin := []byte(NewTestVIN(i))
	if model != "" {
		vin[3] = specOf(model).letter
		vin[8] = vinCheckDigit(vin)
	}
	return string(vin)
}
