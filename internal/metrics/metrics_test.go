package metrics_test

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/teslaproxy/proxy/internal/metrics"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// scrape reads /metrics through the proxy and returns each sample line's value by its name and
// labels as written ("tesla_proxy_requests_total{route=\"command\",status=\"200\"}").
func scrape(t *testing.T, env *testenv.Env) map[string]float64 {
	t.Helper()
	resp, body := env.Do(t, http.MethodGet, "/metrics", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsAfterAKnownSequence drives a known sequence of calls through the proxy and checks
// that the metrics count them as the simulator saw them.
func TestMetricsAfterAKnownSequence(t *testing.T) {
	m := metrics.New()
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Metrics: m})
	vin := env.VINs[0]

	// 1. A first command: a handshake and the command, both billed as commands.
	if resp, body := env.Command(t, vin, "door_lock", nil); resp.StatusCode != 200 {
		t.Fatalf("door_lock: %d %s", resp.StatusCode, body)
	}
	// 2. A later command: one call.
	if resp, body := env.Command(t, vin, "door_unlock", nil); resp.StatusCode != 200 {
		t.Fatalf("door_unlock: %d %s", resp.StatusCode, body)
	}
	// 3. Two data calls passed through, and the vehicle list, which is free.
	for i := 0; i < 2; i++ {
		if resp, _ := env.Do(t, http.MethodGet, "/api/1/vehicles/"+vin+"/vehicle_data", nil); resp.StatusCode != 200 {
			t.Fatalf("vehicle_data: %d", resp.StatusCode)
		}
	}
	if resp, _ := env.Do(t, http.MethodGet, "/api/1/vehicles", nil); resp.StatusCode != 200 {
		t.Fatalf("vehicles: %d", resp.StatusCode)
	}
	// 4. One wake.
	if resp, _ := env.Command(t, vin, "wake_up", nil); resp.StatusCode != 200 {
		t.Fatalf("wake_up: %d", resp.StatusCode)
	}
	// 5. An unknown command: refused by the proxy, nothing sent upstream.
	if resp, _ := env.Command(t, vin, "fly", nil); resp.StatusCode != 404 {
		t.Fatalf("unknown command: %d", resp.StatusCode)
	}

	got := scrape(t, env)
	st := env.Sim.Stats()
	want := map[string]float64{
		`tesla_proxy_requests_total{route="command",status="200"}`:            3,
		`tesla_proxy_requests_total{route="command",status="404"}`:            1,
		`tesla_proxy_requests_total{route="pass_through",status="200"}`:       3,
		`tesla_proxy_upstream_calls_total{billed="true",category="commands"}`: float64(st.Billing["commands"]),
		// The simulator bills the vehicle list as data; the proxy prices it free.
		`tesla_proxy_upstream_calls_total{billed="true",category="data"}`:  float64(st.Billing["data"] - st.Routes["vehicles"]),
		`tesla_proxy_upstream_calls_total{billed="true",category="free"}`:  float64(st.Routes["vehicles"]),
		`tesla_proxy_upstream_calls_total{billed="true",category="wakes"}`: float64(st.Billing["wakes"]),
		`tesla_proxy_request_duration_seconds_count{route="command"}`:      4,
		`tesla_proxy_in_flight_requests`:                                   1, // the scrape itself
	}
	if st.Billing["commands"] != 3 || st.Billing["data"] != 3 || st.Billing["wakes"] != 1 || st.Routes["vehicles"] != 1 {
		t.Fatalf("simulator billing %v, want 3 commands, 3 data (one the vehicle list), 1 wake", st.Billing)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	// 3 commands at $0.001, 2 data calls at $0.002, 1 wake at $0.02, the vehicle list free.
	if c := got["tesla_proxy_upstream_estimated_cost_dollars_total"]; c < 0.0269 || c > 0.0271 {
		t.Errorf("estimated cost = %v, want 0.027", c)
	}
}

func TestCategory(t *testing.T) {
	for path, want := range map[string]string{
		"/api/1/vehicles/X/signed_command":    metrics.CategoryCommands,
		"/api/1/vehicles/X/command/honk_horn": metrics.CategoryCommands,
		"/api/1/vehicles/X/wake_up":           metrics.CategoryWakes,
		"/api/1/vehicles/X/vehicle_data":      metrics.CategoryData,
		"/api/1/vehicles":                     metrics.CategoryFree,
	} {
		if got := metrics.Category(path); got != want {
			t.Errorf("Category(%q) = %q, want %q", path, got, want)
		}
	}
}
