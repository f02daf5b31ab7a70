package fleetsim

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestExampleScenario loads config/scenario.example.yaml as proxy simulate does and checks that
// each car is what the file says.
func TestExampleScenario(t *testing.T) {
	f, err := os.Open("../../config/scenario.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc, err := ParseScenario(f)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := sc.Options(Options{})
	if err != nil || opts.SleepAfter != 15*time.Minute || opts.WakeTime != 10*time.Second || opts.Latency.IsZero() {
		t.Fatalf("options %+v, %v", opts, err)
	}
	opts.Latency = Latency{}
	key := newClientKey(t)
	sim := New(opts)
	vins := sc.Apply(sim, key.pub)
	if len(vins) != 5 {
		t.Fatalf("%d vehicles", len(vins))
	}
	daily, trip, garage, old, borrowed := sim.Vehicle(vins[0]), sim.Vehicle(vins[1]), sim.Vehicle(vins[2]), sim.Vehicle(vins[3]), sim.Vehicle(vins[4])
	if st := daily.State(); st.Model != "modely" || !st.Charging || st.chargingState() != "Charging" || vins[0][3] != 'Y' {
		t.Errorf("Daily Driver: %+v (%s)", st, vins[0])
	}
	if st := trip.State(); st.ShiftState != "D" || st.Speed != 65 || st.Locked || st.PluggedIn {
		t.Errorf("Road Trip: %+v", st)
	}
	if st := garage.State(); !st.Asleep || st.SoftwareUpdateVersion != "2025.2.6" {
		t.Errorf("Garage Queen: %+v", st)
	}
	if !sim.Fault(vins[3]).Legacy || old.State().Firmware != "2021.44.30" || !old.State().SentryMode {
		t.Errorf("Old Faithful: %+v %+v", sim.Fault(vins[3]), old.State())
	}
	if f := sim.Fault(vins[4]); f.RateLimitRetryAfter != 30 || f.Delay != 500*time.Millisecond || borrowed.IsEnrolled(key.pub) || !daily.IsEnrolled(key.pub) {
		t.Errorf("Borrowed: fault %+v, enrolled %v", f, borrowed.IsEnrolled(key.pub))
	}
}

// TestScenarioErrors lists every problem of a bad scenario at once.
func TestScenarioErrors(t *testing.T) {
	_, err := ParseScenario(strings.NewReader(`
latency: soon
vehicles:
  - {vin: SHORT, model: roadster, battery: 120, charge_limit: 20, charging_amps: 80}
  - {vin: SHORT}
  - {charging: true, plugged_in: false, location: {lat: 91, lon: 0}}
`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"latency", `vin "SHORT"`, "listed twice", `model "roadster"`, "battery 120", "charge_limit 20", "charging_amps 80", "charging needs plugged_in", "location 91"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
