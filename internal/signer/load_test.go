package signer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// TestManyVehiclesAtOnce runs 50 vehicles × 20 commands: each vehicle's commands are sent one
// after the other from its own goroutine, all vehicles at once. Every command must succeed, run
// exactly once and in the order sent, cost one upstream call after a single handshake, and leave
// no goroutine behind.
func TestManyVehiclesAtOnce(t *testing.T) {
	const vehicles, perVehicle = 50, 20
	// command i to a vehicle: mostly charge limits, every fourth a charging current, so the
	// order of executions is visible in the simulator's record.
	command := func(i int) (string, map[string]any, string) {
		if i%4 == 3 {
			return "set_charging_amps", map[string]any{"charging_amps": 5 + i}, "INFOTAINMENT:setChargingAmpsAction"
		}
		return "set_charge_limit", map[string]any{"percent": 50 + i}, "INFOTAINMENT:chargingSetLimitAction"
	}
	var wantActions []string
	for i := range perVehicle {
		_, _, a := command(i)
		wantActions = append(wantActions, a)
	}

	withoutLeaks(t, "load", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: vehicles, Logger: zap.NewNop(), Timeout: 20 * time.Second})
		var wg sync.WaitGroup
		errs := make(chan error, vehicles*perVehicle)
		start := time.Now()
		for _, vin := range env.VINs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perVehicle {
					name, params, _ := command(i)
					a, err := send(context.Background(), env, vin, name, params)
					switch {
					case err != nil:
						errs <- fmt.Errorf("%s command %d: %w", vin, i, err)
					case !a.ok():
						errs <- fmt.Errorf("%s command %d: %d %s", vin, i, a.status, a.body)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		took := time.Since(start)
		for err := range errs {
			t.Error(err)
		}
		t.Logf("%d commands in %v (%.0f/s under -race if enabled)", vehicles*perVehicle, took, float64(vehicles*perVehicle)/took.Seconds())

		st := env.Sim.Stats()
		if want := vehicles * (perVehicle + 1); st.Upstream != want {
			t.Errorf("%d upstream calls, want %d (one handshake per vehicle, one call per command)", st.Upstream, want)
		}
		for _, vin := range env.VINs {
			vs := st.Vehicles[vin]
			if vs.Handshakes != (fleetsim.DomainCounts{Infotainment: 1}) {
				t.Errorf("%s: handshakes %+v, want one with infotainment", vin, vs.Handshakes)
			}
			if len(vs.Rejections) != 0 {
				t.Errorf("%s: rejections %v", vin, vs.Rejections)
			}
			if diff := cmp.Diff(wantActions, actions(env, vin)); diff != "" {
				t.Errorf("%s: executions (-want +got):\n%s", vin, diff)
			}
			ex := env.Sim.Executions(vin)
			for i := 1; i < len(ex); i++ {
				if ex[i].At.Before(ex[i-1].At) {
					t.Errorf("%s: execution %d ran before execution %d", vin, i, i-1)
				}
			}
			state := env.Sim.Vehicle(vin).State()
			if state.ChargeLimit != 50+18 || state.ChargingAmps != 5+19 {
				t.Errorf("%s: final charge limit %d, amps %d; want 68 and 24 (the last ones sent)", vin, state.ChargeLimit, state.ChargingAmps)
			}
		}
	})
}

// TestEvictedVehicles bounds the signer to 2 vehicles and drives 6: three workers each take
// two vehicles in turn, so nearly every command finds its vehicle dropped and rebuilds it (a new
// handshake), while the others' lookups race with the evictions. Every command must still run
// exactly once, in order, through one vehicle object at a time.
func TestEvictedVehicles(t *testing.T) {
	const vehicles, workers, rounds = 6, 3, 8
	env, _ := startTapped(t, vehicles, 2)
	var wg sync.WaitGroup
	errs := make(chan error, vehicles*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				for _, vin := range env.VINs[w*vehicles/workers : (w+1)*vehicles/workers] {
					a, err := send(context.Background(), env, vin, "set_charge_limit", map[string]any{"percent": 50 + i})
					switch {
					case err != nil:
						errs <- fmt.Errorf("%s command %d: %w", vin, i, err)
					case !a.ok():
						errs <- fmt.Errorf("%s command %d: %d %s", vin, i, a.status, a.body)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := env.Sim.Stats()
	for _, vin := range env.VINs {
		if n := len(env.Sim.Executions(vin)); n != rounds {
			t.Errorf("%s: %d executions, want %d", vin, n, rounds)
		}
		if got := env.Sim.Vehicle(vin).State().ChargeLimit; got != 50+rounds-1 {
			t.Errorf("%s: charge limit %d, want %d", vin, got, 50+rounds-1)
		}
		if r := st.Vehicles[vin].Rejections; len(r) != 0 {
			t.Errorf("%s: rejections %v (two vehicle objects for one VIN?)", vin, r)
		}
	}
	hs := env.App.Signer.Stats().Handshakes
	if hs <= vehicles {
		t.Errorf("%d handshakes: no vehicle was evicted, the test did not test eviction", hs)
	}
	t.Logf("%d handshakes for %d commands", hs, vehicles*rounds)
}
