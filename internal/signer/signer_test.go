package signer_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/teslaproxy/proxy/internal/testenv"
)

type restAnswer struct {
	Response *struct {
		Result bool   `json:"result"`
		Reason string `json:"reason"`
	} `json:"response"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func decode(t *testing.T, b []byte) restAnswer {
	t.Helper()
	var a restAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("answer is not JSON: %q", b)
	}
	return a
}

func mustSucceed(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	a := decode(t, body)
	if resp.StatusCode != 200 || a.Response == nil || !a.Response.Result {
		t.Fatalf("got %d %s, want 200 result true", resp.StatusCode, body)
	}
}

// TestFirstAndLaterCommandCalls counts what commands cost upstream: the first command to a VIN
// handshakes with its own domain only (2 calls), every later one is 1 call.
func TestFirstAndLaterCommandCalls(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 1})
	vin := env.VINs[0]
	steps := []struct {
		name      string
		command   string
		params    any
		wantCalls int
	}{
		{"first infotainment command", "set_charge_limit", map[string]any{"percent": 77}, 2},
		{"later infotainment command", "charge_start", nil, 1},
		{"first VCSEC command", "door_lock", nil, 2},
		{"later VCSEC command", "door_unlock", nil, 1},
		{"infotainment again", "set_sentry_mode", map[string]any{"on": true}, 1},
	}
	for _, st := range steps {
		got := calls(env, func() {
			resp, body := env.Command(t, vin, st.command, st.params)
			mustSucceed(t, resp, body)
		})
		if got != st.wantCalls {
			t.Errorf("%s: %d upstream calls, want %d", st.name, got, st.wantCalls)
		}
	}
	state := env.Sim.Vehicle(vin).State()
	if state.ChargeLimit != 77 || !state.Charging || state.Locked || !state.SentryMode {
		t.Errorf("vehicle state after the commands: %+v", state)
	}
	ex := env.Sim.Executions(vin)
	if len(ex) != len(steps) {
		t.Errorf("%d executions, want %d (each command exactly once): %+v", len(ex), len(steps), ex)
	}
}
