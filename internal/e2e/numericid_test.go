package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/metrics"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// vehicleIDs returns the numeric id of each VIN in the simulator's vehicle list, read through
// the proxy with the Env's token.
func vehicleIDs(t *testing.T, env *testenv.Env) map[string]string {
	t.Helper()
	resp, body := env.Do(t, http.MethodGet, "/api/1/vehicles", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vehicle list: %d %s", resp.StatusCode, body)
	}
	var l struct {
		Response []struct {
			IDS string `json:"id_s"`
			VIN string `json:"vin"`
		} `json:"response"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, v := range l.Response {
		ids[v.VIN] = v.IDS
	}
	return ids
}

// TestNumericVehicleIDs checks the issue-15 target: commands sent to a numeric vehicle id reach
// the right car, and two of them cost at most one vehicle-list call.
func TestNumericVehicleIDs(t *testing.T) {
	withoutLeaks(t, "commands by id", func(t *testing.T) {
		m := metrics.New()
		env := testenv.Start(t, testenv.Options{Vehicles: 2, Logger: zap.NewNop(), Metrics: m})
		vin := env.VINs[1]
		id := vehicleIDs(t, env)[vin]
		if id == "" {
			t.Fatalf("no id for %s", vin)
		}
		env.Sim.ResetStats()

		for _, name := range []string{"flash_lights", "honk_horn"} {
			resp, body := env.Command(t, id, name, nil)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"result":true`) {
				t.Fatalf("%s by id: %d %s", name, resp.StatusCode, body)
			}
		}
		st := env.Sim.Stats()
		if n := st.Routes["vehicles"]; n > 1 {
			t.Errorf("two commands by id made %d vehicle-list calls, want at most 1", n)
		}
		if got := len(env.Sim.Executions(vin)); got != 2 {
			t.Errorf("%s ran %d commands, want 2", vin, got)
		}
		if got := len(env.Sim.Executions(env.VINs[0])); got != 0 {
			t.Errorf("the other car ran %d commands", got)
		}
		t.Logf("two commands by numeric id: upstream %v", st.Routes)
		if text := scrape(t, env, "/metrics"); !strings.Contains(text, `tesla_proxy_vehicle_id_lookups_total{source="cache"} 1`) {
			t.Errorf("/metrics does not count the cached lookup")
		}
	})

	withoutLeaks(t, "an id not in the list", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 1, Logger: zap.NewNop()})
		env.Sim.ResetStats()
		for i := 0; i < 3; i++ {
			resp, body := env.Command(t, "1234567890123456", "flash_lights", nil)
			e := checkError(t, resp.StatusCode, resp.Header, body, http.StatusNotFound, "vehicle_not_found")
			if !strings.Contains(e.ErrorDescription, "1234567890123456") {
				t.Errorf("the 404 does not name the id: %q", e.ErrorDescription)
			}
		}
		if n := env.Sim.Stats().Routes["vehicles"]; n != 1 {
			t.Errorf("three commands to an unknown id made %d vehicle-list calls, want 1", n)
		}
		if len(env.Sim.Executions("")) != 0 {
			t.Errorf("a command ran")
		}
	})

	withoutLeaks(t, "tokens do not share ids", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 1, Logger: zap.NewNop()})
		vin := env.VINs[0]
		id := vehicleIDs(t, env)[vin]
		if resp, body := env.Command(t, id, "flash_lights", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("first token: %d %s", resp.StatusCode, body)
		}
		// A second token the Fleet API refuses: the first token's lookup must not let its
		// command through.
		other := testenv.Token(t, map[string]any{"sub": "test-user", "aud": []any{"https://fleet-api.prd.na.vn.cloud.tesla.com"}, "ou_code": "NA", "n": 2})
		env.Sim.RefuseToken(other, http.StatusUnauthorized, 0)
		req, _ := http.NewRequest(http.MethodPost, env.URL+"/api/1/vehicles/"+id+"/command/flash_lights", nil)
		req.Header.Set("Authorization", "Bearer "+other)
		resp, err := env.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a refused token with the same sub got %d, want the Fleet API's 401", resp.StatusCode)
		}
		if got := len(env.Sim.Executions(vin)); got != 1 {
			t.Errorf("the car ran %d commands, want 1", got)
		}
	})

	withoutLeaks(t, "telemetry config by id", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 2, Logger: zap.NewNop()})
		vin := env.VINs[1]
		id := vehicleIDs(t, env)[vin]
		resp, body := env.Do(t, http.MethodPost, "/api/1/vehicles/fleet_telemetry_config", telemetryBody(`["`+id+`"]`, goodConfigJSON()))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"updated_vehicles":1`) {
			t.Fatalf("telemetry config by id: %d %s", resp.StatusCode, body)
		}
		resp, body = env.Do(t, http.MethodGet, "/api/1/vehicles/"+vin+"/fleet_telemetry_config", nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "telemetry.example.com") {
			t.Errorf("the config did not reach %s: %d %s", vin, resp.StatusCode, body)
		}
		resp, body = env.Do(t, http.MethodPost, "/api/1/vehicles/fleet_telemetry_config", telemetryBody(`["999"]`, goodConfigJSON()))
		checkError(t, resp.StatusCode, resp.Header, body, http.StatusNotFound, "vehicle_not_found")
	})

	withoutLeaks(t, "pass-through keeps the id", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 1, Logger: zap.NewNop(), Echo: true})
		id := vehicleIDs(t, env)[env.VINs[0]]
		resp, body := env.Do(t, http.MethodGet, "/api/1/vehicles/"+id+"/vehicle_data", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("vehicle_data: %d", resp.StatusCode)
		}
		var echo struct {
			Response fleetsim.Echo `json:"response"`
		}
		if err := json.Unmarshal(body, &echo); err != nil {
			t.Fatal(err)
		}
		if want := "/api/1/vehicles/" + id + "/vehicle_data"; echo.Response.Path != want {
			t.Errorf("upstream path %q, want %q", echo.Response.Path, want)
		}
	})
}
