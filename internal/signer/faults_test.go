package signer_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// mayHaveRun is what every answer about a command that may have been carried out must say.
const mayHaveRun = "may have been carried out"

// calls returns the number of upstream calls f caused.
func calls(env *testenv.Env, f func()) int {
	before := env.Sim.Stats().Upstream
	f()
	return env.Sim.Stats().Upstream - before
}

// actions lists the Domain:Action of a vehicle's executions, in order.
func actions(env *testenv.Env, vin string) []string {
	var out []string
	for _, e := range env.Sim.Executions(vin) {
		out = append(out, e.Domain+":"+e.Action)
	}
	return out
}

// TestHandshakeOnlyTheCommandsDomain checks, for a vehicle whose first command is a VCSEC one,
// that the proxy handshakes with VCSEC only (2 calls), sends later VCSEC commands in 1 call, and
// opens infotainment only when an infotainment command comes.
func TestHandshakeOnlyTheCommandsDomain(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1})
	vin := env.VINs[0]
	steps := []struct {
		command   string
		params    any
		wantCalls int
		want      fleetsim.DomainCounts // handshakes so far
	}{
		{"door_unlock", nil, 2, fleetsim.DomainCounts{VCSEC: 1}},
		{"actuate_trunk", map[string]any{"which_trunk": "rear"}, 1, fleetsim.DomainCounts{VCSEC: 1}},
		{"door_lock", nil, 1, fleetsim.DomainCounts{VCSEC: 1}},
		{"honk_horn", nil, 2, fleetsim.DomainCounts{VCSEC: 1, Infotainment: 1}},
		{"remote_start_drive", nil, 1, fleetsim.DomainCounts{VCSEC: 1, Infotainment: 1}},
		{"flash_lights", nil, 1, fleetsim.DomainCounts{VCSEC: 1, Infotainment: 1}},
	}
	for _, st := range steps {
		n := calls(env, func() {
			resp, body := env.Command(t, vin, st.command, st.params)
			mustSucceed(t, resp, body)
		})
		if n != st.wantCalls {
			t.Errorf("%s: %d upstream calls, want %d", st.command, n, st.wantCalls)
		}
		if got := env.Sim.Stats().Vehicles[vin].Handshakes; got != st.want {
			t.Errorf("after %s: handshakes %+v, want %+v", st.command, got, st.want)
		}
	}
	if got := env.App.Signer.Stats(); got.Handshakes != 2 || got.Commands != int64(len(steps)) {
		t.Errorf("signer stats %+v, want 2 handshakes and %d commands", got, len(steps))
	}
	if n := len(env.Sim.Executions(vin)); n != len(steps) {
		t.Errorf("%d executions, want %d", n, len(steps))
	}
}

// TestRebootedVehicle reboots a vehicle between commands: its new epoch makes it refuse the next
// command with fresh session info, and the proxy re-sends once with the new session. That is
// two upstream calls, no handshake, and the command runs exactly once.
func TestRebootedVehicle(t *testing.T) {
	for _, c := range []struct {
		domain, warm, command, action string
	}{
		{fleetsim.DomainInfotainment, "flash_lights", "honk_horn", "vehicleControlHonkHornAction"},
		{fleetsim.DomainVCSEC, "door_unlock", "door_lock", "RKE_ACTION_LOCK"},
	} {
		t.Run(c.domain, func(t *testing.T) {
			env := testenv.Start(t, testenv.Options{Vehicles: 1})
			vin := env.VINs[0]
			resp, body := env.Command(t, vin, c.warm, nil)
			mustSucceed(t, resp, body)
			env.Sim.Reboot(vin)
			before := env.Sim.Stats().Vehicles[vin]
			executed := len(env.Sim.Executions(vin))
			n := calls(env, func() {
				resp, body := env.Command(t, vin, c.command, nil)
				mustSucceed(t, resp, body)
			})
			if n != 2 {
				t.Errorf("%d upstream calls after the reboot, want 2 (refused with session info, then re-sent)", n)
			}
			after := env.Sim.Stats().Vehicles[vin]
			if after.Handshakes != before.Handshakes {
				t.Errorf("handshakes went from %+v to %+v; the refusal carries the session info, none is needed", before.Handshakes, after.Handshakes)
			}
			const epoch = "MESSAGEFAULT_ERROR_INCORRECT_EPOCH"
			if after.Rejections[epoch]-before.Rejections[epoch] != 1 {
				t.Errorf("rejections %v, want one %s", after.Rejections, epoch)
			}
			ex := env.Sim.Executions(vin)[executed:]
			if len(ex) != 1 || ex[0].Domain != c.domain || ex[0].Action != c.action {
				t.Errorf("executions after the reboot: %+v, want one %s %s", ex, c.domain, c.action)
			}
			// And the session is good again: one call.
			if n := calls(env, func() {
				resp, body := env.Command(t, vin, c.warm, nil)
				mustSucceed(t, resp, body)
			}); n != 1 {
				t.Errorf("%d upstream calls for the next command, want 1", n)
			}
		})
	}
}

// TestAsleepVehicle checks that an asleep vehicle gets the Fleet API's 408 and its body, for a
// first command (the handshake is refused) and for a vehicle with a session, and that nothing ran.
func TestAsleepVehicle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 2})
	fresh, warm := env.VINs[0], env.VINs[1]
	resp, body := env.Command(t, warm, "flash_lights", nil)
	mustSucceed(t, resp, body)
	executed := len(env.Sim.Executions(""))

	env.Sim.SetFault(fresh, fleetsim.Fault{Asleep: true})
	env.Sim.Vehicle(warm).SetAsleep(true)
	for _, vin := range []string{fresh, warm} {
		for _, name := range []string{"honk_horn", "door_lock"} {
			n := calls(env, func() {
				resp, body := env.Command(t, vin, name, nil)
				if resp.StatusCode != http.StatusRequestTimeout {
					t.Errorf("%s to an asleep vehicle: %d %s, want 408", name, resp.StatusCode, body)
				}
				a := errorBody(t, body)
				if !strings.Contains(a.Error, "offline or asleep") {
					t.Errorf("%s to an asleep vehicle: body %s, want the Fleet API's", name, body)
				}
			})
			if n != 1 {
				t.Errorf("%s to an asleep vehicle: %d upstream calls, want 1", name, n)
			}
		}
	}
	if n := len(env.Sim.Executions("")); n != executed {
		t.Errorf("%d commands ran while the vehicles slept", n-executed)
	}

	// Awake again, both vehicles take commands; the refused ones cost nothing in the session.
	env.Sim.SetFault(fresh, fleetsim.Fault{})
	env.Sim.Vehicle(warm).SetAsleep(false)
	for _, vin := range []string{fresh, warm} {
		for _, name := range []string{"honk_horn", "door_lock"} {
			resp, body := env.Command(t, vin, name, nil)
			mustSucceed(t, resp, body)
		}
	}
}

// TestUnpairedKey sends commands to a vehicle that does not have the proxy's key: 403
// key_not_paired with the pairing link, one upstream call (the refused handshake), nothing run,
// and no goroutine left behind once the proxy is closed.
func TestUnpairedKey(t *testing.T) {
	withoutLeaks(t, "unpaired", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 1})
		vin := fleetsim.NewTestVIN(4242)
		env.Sim.AddVehicle(vin) // no key enrolled
		for _, name := range []string{"honk_horn", "door_lock", "honk_horn"} {
			n := calls(env, func() {
				resp, body := env.Command(t, vin, name, nil)
				proxyError(t, resp.StatusCode, body, http.StatusForbidden, "https://tesla.com/_ak/")
				if a := decode(t, body); a.Error != "key_not_paired" {
					t.Errorf("error %q, want key_not_paired", a.Error)
				}
			})
			if n != 1 {
				t.Errorf("%s: %d upstream calls, want 1 (the handshake)", name, n)
			}
		}
		if ex := env.Sim.Executions(vin); len(ex) != 0 {
			t.Errorf("executions on the unpaired vehicle: %+v", ex)
		}
		if r := env.Sim.Stats().Vehicles[vin].Rejections["SESSION_INFO_STATUS_KEY_NOT_ON_WHITELIST"]; r != 3 {
			t.Errorf("%d refused handshakes, want 3", r)
		}
		// Pairing fixes it without a restart.
		env.Sim.Vehicle(vin).Enroll(testenv.PublicKey(t, env.Key))
		resp, body := env.Command(t, vin, "honk_horn", nil)
		mustSucceed(t, resp, body)
	})
}

// TestLegacyVehicle checks the 422 path: the first command is refused by signed_command with
// 422, then sent to the REST command endpoint with the app's original body, and the REST answer
// comes back; later commands to that vehicle go straight to REST.
func TestLegacyVehicle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 2})
	legacy, modern := env.VINs[0], env.VINs[1]
	env.Sim.SetFault(legacy, fleetsim.Fault{Legacy: true})

	// Keys in an order and spacing json.Marshal would never produce: the body must arrive as is.
	first := []byte(`{ "percent" : 65,"note":"é" }`)
	second := []byte(`{"on":true}`)
	var got []byte
	n := calls(env, func() {
		var resp *http.Response
		resp, got = env.Do(t, http.MethodPost, "/api/1/vehicles/"+legacy+"/command/set_charge_limit", first)
		mustSucceed(t, resp, got)
	})
	if n != 2 {
		t.Errorf("first command to a legacy vehicle: %d upstream calls, want 2 (422, then REST)", n)
	}
	// The simulator's REST answer, relayed byte for byte (its keys are sorted, which tells it
	// apart from the proxy's own success answer).
	if want := `{"response":{"reason":"","result":true}}`; string(bytes.TrimSpace(got)) != want {
		t.Errorf("answer %s, want the REST answer %s", got, want)
	}
	n = calls(env, func() {
		resp, body := env.Do(t, http.MethodPost, "/api/1/vehicles/"+legacy+"/command/set_sentry_mode", second)
		mustSucceed(t, resp, body)
	})
	if n != 1 {
		t.Errorf("second command to a legacy vehicle: %d upstream calls, want 1 (straight to REST)", n)
	}
	want := []fleetsim.Execution{
		{VIN: legacy, Domain: fleetsim.DomainREST, Action: "set_charge_limit", Body: first, Result: "ok"},
		{VIN: legacy, Domain: fleetsim.DomainREST, Action: "set_sentry_mode", Body: second, Result: "ok"},
	}
	if diff := cmp.Diff(want, env.Sim.Executions(legacy), cmpopts.IgnoreFields(fleetsim.Execution{}, "At")); diff != "" {
		t.Errorf("executions (-want +got):\n%s", diff)
	}
	if st := env.Sim.Stats(); st.Injected["legacy"] != 1 || st.Vehicles[legacy].REST != 2 {
		t.Errorf("stats: injected %v, REST %d; want one 422 and two REST commands", st.Injected, st.Vehicles[legacy].REST)
	}
	// The other vehicle still signs.
	resp, body := env.Command(t, modern, "set_charge_limit", map[string]any{"percent": 70})
	mustSucceed(t, resp, body)
	if ex := env.Sim.Executions(modern); len(ex) != 1 || ex[0].Domain != fleetsim.DomainInfotainment {
		t.Errorf("modern vehicle executions: %+v", ex)
	}
}

// TestRateLimited checks that a 429 comes back with Retry-After and the Fleet API's body, that it
// is not retried, and that nothing ran.
func TestRateLimited(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 2})
	fresh, warm := env.VINs[0], env.VINs[1]
	resp, body := env.Command(t, warm, "flash_lights", nil)
	mustSucceed(t, resp, body)
	executed := len(env.Sim.Executions(""))
	for _, vin := range []string{fresh, warm} {
		env.Sim.SetFault(vin, fleetsim.Fault{RateLimitRetryAfter: 7})
		n := calls(env, func() {
			resp, body := env.Command(t, vin, "honk_horn", nil)
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Errorf("status %d %s, want 429", resp.StatusCode, body)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "7" {
				t.Errorf("Retry-After %q, want 7", ra)
			}
			a := errorBody(t, body)
			if a.Error != "rate limit exceeded" || !strings.Contains(a.ErrorDescription, "7 seconds") {
				t.Errorf("body %s, want the Fleet API's", body)
			}
		})
		if n != 1 {
			t.Errorf("%d upstream calls, want 1 (no retry)", n)
		}
		env.Sim.SetFault(vin, fleetsim.Fault{})
	}
	if n := len(env.Sim.Executions("")); n != executed {
		t.Errorf("%d commands ran while rate limited", n-executed)
	}
}

// TestFailAfterExecution checks that a command the vehicle ran but whose answer was lost (the
// Fleet API answered 500 or 504) is never re-sent, and that the app is told it may have run.
func TestFailAfterExecution(t *testing.T) {
	for _, c := range []struct {
		fault, want int
	}{
		{http.StatusInternalServerError, http.StatusBadGateway},
		{http.StatusGatewayTimeout, http.StatusGatewayTimeout},
	} {
		t.Run(http.StatusText(c.fault), func(t *testing.T) {
			env := testenv.Start(t, testenv.Options{Vehicles: 2})
			fresh, warm := env.VINs[0], env.VINs[1]
			resp, body := env.Command(t, warm, "flash_lights", nil)
			mustSucceed(t, resp, body)
			for _, vin := range []string{fresh, warm} {
				executed := len(env.Sim.Executions(vin))
				env.Sim.SetFault(vin, fleetsim.Fault{FailAfterExecution: c.fault})
				resp, body := env.Command(t, vin, "door_unlock", nil)
				proxyError(t, resp.StatusCode, body, c.want, mayHaveRun)
				ex := env.Sim.Executions(vin)[executed:]
				if len(ex) != 1 || ex[0].Action != "RKE_ACTION_UNLOCK" {
					t.Errorf("executions %+v, want door_unlock exactly once", ex)
				}
				if got := env.Sim.Stats().Vehicles[vin].Commands.VCSEC; got != 1 {
					t.Errorf("%d VCSEC commands sent, want 1 (never re-sent)", got)
				}
				env.Sim.SetFault(vin, fleetsim.Fault{})
				resp, body = env.Command(t, vin, "door_lock", nil)
				mustSucceed(t, resp, body)
			}
		})
	}
}

// TestSlowVehicle gives the proxy a short timeout and a vehicle slower than it. A command already
// sent gets 504 saying it may have run; a handshake that times out gets 504 saying the command
// was not sent. Either way the app hears back soon after the timeout.
func TestSlowVehicle(t *testing.T) {
	const timeout = 400 * time.Millisecond
	env := testenv.Start(t, testenv.Options{Vehicles: 2, Timeout: timeout})
	fresh, warm := env.VINs[0], env.VINs[1]
	resp, body := env.Command(t, warm, "flash_lights", nil)
	mustSucceed(t, resp, body)
	executed := len(env.Sim.Executions(""))
	env.Sim.SetFault("", fleetsim.Fault{Delay: 10 * time.Second})

	for _, c := range []struct {
		vin  string
		want string
	}{
		{warm, mayHaveRun},
		{fresh, "not sent"},
	} {
		start := time.Now()
		resp, body := env.Command(t, c.vin, "honk_horn", nil)
		took := time.Since(start)
		a := proxyError(t, resp.StatusCode, body, http.StatusGatewayTimeout, c.want)
		if c.vin == fresh && strings.Contains(a.ErrorDescription, mayHaveRun) {
			t.Errorf("handshake timeout says %q; the command was never sent", a.ErrorDescription)
		}
		// The simulator would answer after 10 s; the proxy must not wait for that. (The bound is
		// loose: under -race on two busy cores a 400 ms deadline has been seen to take 4 s.)
		if took > 8*time.Second {
			t.Errorf("the answer took %v with a %v timeout", took, timeout)
		}
	}
	env.Sim.SetFault("", fleetsim.Fault{})
	if n := len(env.Sim.Executions("")); n != executed {
		t.Errorf("%d commands ran; the simulator drops a delayed request whose client left", n-executed)
	}
	// Both vehicles work again once the vehicle is fast.
	for _, vin := range []string{warm, fresh} {
		resp, body := env.Command(t, vin, "honk_horn", nil)
		mustSucceed(t, resp, body)
	}
}

// TestClientLeavesWhileWaiting checks that a client that gives up while another command holds
// the vehicle's lock leaves the queue: its command never runs, and the next command runs as soon
// as the vehicle is free.
func TestClientLeavesWhileWaiting(t *testing.T) {
	env, tap := startTapped(t, 1, 0)
	vin := env.VINs[0]
	resp, body := env.Command(t, vin, "set_charge_limit", map[string]any{"percent": 60})
	mustSucceed(t, resp, body)

	release := holdVehicle(t, env, tap, vin)
	defer release()

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	_, err := send(ctx, env, vin, "honk_horn", nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the impatient client got %v, want its own deadline", err)
	}

	third := make(chan answer, 1)
	go func() {
		a, err := send(t.Context(), env, vin, "set_charge_limit", map[string]any{"percent": 75})
		if err != nil {
			t.Error(err)
		}
		third <- a
	}()
	time.Sleep(100 * time.Millisecond) // let it queue behind the held command
	start := time.Now()
	release()
	if a := <-third; !a.ok() {
		t.Fatalf("third command: %d %s", a.status, a.body)
	}
	// Had the departed client kept its place, the third would wait for its lock deadline (5 s).
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("third command took %v after the vehicle was free", d)
	}
	want := []string{
		"INFOTAINMENT:chargingSetLimitAction",
		"INFOTAINMENT:vehicleControlFlashLightsAction",
		"INFOTAINMENT:chargingSetLimitAction",
	}
	if diff := cmp.Diff(want, actions(env, vin)); diff != "" {
		t.Errorf("executions (-want +got):\n%s", diff)
	}
	if got := env.Sim.Vehicle(vin).State().ChargeLimit; got != 75 {
		t.Errorf("charge limit %d, want 75", got)
	}
}

// TestVehicleRefuses checks that a well-signed command the vehicle declines is the REST API's
// 200 result:false with a stable snake_case reason, in both domains, sent once.
func TestVehicleRefuses(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1})
	vin := env.VINs[0]
	env.Sim.SetFault(vin, fleetsim.Fault{Refuse: "closures_open"})
	for _, c := range []struct{ name, reason string }{
		{"door_lock", "closures_open"},    // VCSEC: GENERICERROR_CLOSURES_OPEN
		{"honk_horn", "closures_open"},    // infotainment: the car's text
		{"door_unlock", "closures_open"},  // VCSEC again, with a session
		{"flash_lights", "closures_open"}, // infotainment again
	} {
		before := len(env.Sim.Executions(vin))
		resp, body := env.Command(t, vin, c.name, nil)
		a := decode(t, body)
		if resp.StatusCode != http.StatusOK || a.Response == nil || a.Response.Result || a.Response.Reason != c.reason {
			t.Errorf("%s: %d %s, want 200 result false reason %q", c.name, resp.StatusCode, body, c.reason)
		}
		if n := len(env.Sim.Executions(vin)) - before; n != 1 {
			t.Errorf("%s reached the vehicle %d times, want 1", c.name, n)
		}
	}
	env.Sim.SetFault(vin, fleetsim.Fault{Refuse: "no_such_error"})
	resp, body := env.Command(t, vin, "door_lock", nil)
	if a := decode(t, body); resp.StatusCode != http.StatusOK || a.Response == nil || a.Response.Reason != "unknown" {
		t.Errorf("door_lock refused for an unknown reason: %d %s, want reason \"unknown\"", resp.StatusCode, body)
	}
}
