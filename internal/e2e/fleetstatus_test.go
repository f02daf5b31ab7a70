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

// withFleetStatus answers POST /api/1/vehicles/fleet_status from the simulator's state, as the
// Fleet API does (vehicle_command_protocol_required is false for a legacy car), and passes
// everything else to the simulator.
func withFleetStatus(sim **fleetsim.Server) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.URL.Path != "/api/1/vehicles/fleet_status" {
				next.ServeHTTP(w, r)
				return
			}
			var req struct {
				VINs []string `json:"vins"`
			}
			_ = json.NewDecoder(r.Body).Decode(&req)
			info := map[string]any{}
			for _, vin := range req.VINs {
				info[vin] = map[string]any{"firmware_version": "2024.44.25", "vehicle_command_protocol_required": !(*sim).Fault(vin).Legacy}
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"response": map[string]any{"key_paired_vins": req.VINs, "unpaired_vins": []string{}, "vehicle_info": info}})
		})
	}
}

// TestLegacyFromFleetStatus checks that a car a fleet_status answer showed to lack the protocol
// gets its first command through the REST API without a signed_command the Fleet API would
// refuse with 422.
func TestLegacyFromFleetStatus(t *testing.T) {
	withoutLeaks(t, "fleet_status first", func(t *testing.T) {
		var sim *fleetsim.Server
		m := metrics.New()
		env := testenv.Start(t, testenv.Options{Vehicles: 2, Logger: zap.NewNop(), Metrics: m, Upstream: withFleetStatus(&sim)})
		sim = env.Sim
		legacy, modern := env.VINs[0], env.VINs[1]
		sim.SetFault(legacy, fleetsim.Fault{Legacy: true})

		resp, body := env.Do(t, http.MethodPost, "/api/1/vehicles/fleet_status", []byte(`{"vins":["`+legacy+`","`+modern+`"]}`))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "vehicle_command_protocol_required") {
			t.Fatalf("fleet_status: %d %s", resp.StatusCode, body)
		}
		sim.ResetStats()
		if resp, body := env.Command(t, legacy, "flash_lights", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("command to the legacy car: %d %s", resp.StatusCode, body)
		}
		st := sim.Stats()
		if st.Routes["signed_command"] != 0 || st.Routes["command"] != 1 {
			t.Errorf("first command to a car fleet_status called legacy: upstream %v, want one REST command and no signed_command", st.Routes)
		}
		if resp, body := env.Command(t, modern, "flash_lights", nil); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"result":true`) {
			t.Fatalf("command to the modern car: %d %s", resp.StatusCode, body)
		}
		if st := sim.Stats(); st.Routes["command"] != 1 || st.Routes["signed_command"] < 1 {
			t.Errorf("the modern car's command went %v", st.Routes)
		}
		if text := scrape(t, env, "/metrics"); !strings.Contains(text, `tesla_proxy_estimated_savings_dollars_total{feature="legacy_from_fleet_status"} 0.001`) {
			t.Errorf("/metrics does not count the call saved")
		}
	})

	withoutLeaks(t, "without fleet_status", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 1, Logger: zap.NewNop()})
		env.Sim.SetFault(env.VINs[0], fleetsim.Fault{Legacy: true})
		env.Sim.ResetStats()
		if resp, body := env.Command(t, env.VINs[0], "flash_lights", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("command: %d %s", resp.StatusCode, body)
		}
		// The comparison: the 422 round trip that fleet_status saves.
		if st := env.Sim.Stats(); st.Routes["signed_command"] < 1 || st.Routes["command"] != 1 {
			t.Errorf("upstream %v, want the refused signed_command then the REST command", st.Routes)
		}
	})
}
