package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/metrics"
	"github.com/teslaproxy/proxy/internal/signer"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// autoWake returns testenv options for a proxy with -auto-wake and the given -wake-timeout.
func autoWake(m *metrics.Metrics, timeout time.Duration) testenv.Options {
	return testenv.Options{Vehicles: 1, Logger: zap.NewNop(), Metrics: m, App: func(o *app.Options) {
		o.AutoWake, o.WakeTimeout = true, timeout
	}}
}

// TestAutoWake checks the issue-15 target against the simulator's own counters: a command to a
// sleeping car that takes a while to wake succeeds with one wake_up, no vehicle_data and at most
// three signed_command calls, and says in its answer that it waited for a wake.
func TestAutoWake(t *testing.T) {
	withoutLeaks(t, "one command", func(t *testing.T) {
		m := metrics.New()
		env := testenv.Start(t, autoWake(m, 10*time.Second))
		vin := env.VINs[0]
		env.Sim.Vehicle(vin).SetAsleep(true)
		env.Sim.SetWakeDelay(vin, 1500*time.Millisecond)
		env.Sim.ResetStats()

		resp, body := env.Command(t, vin, "flash_lights", nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"result":true`) {
			t.Fatalf("command to a sleeping car: %d %s", resp.StatusCode, body)
		}
		st := env.Sim.Stats()
		if st.Routes["wake_up"] != 1 {
			t.Errorf("wake_up calls = %d, want exactly 1", st.Routes["wake_up"])
		}
		if st.Routes["echo"] != 0 {
			t.Errorf("%d calls to other routes (vehicle_data would be one), want 0", st.Routes["echo"])
		}
		if n := st.Routes["signed_command"]; n < 2 || n > 3 {
			t.Errorf("signed_command calls = %d, want 2 or 3", n)
		}
		if st.Routes["vehicles"] < 1 {
			t.Errorf("vehicle-list polls = %d, want at least 1 (the car took 1.5 s to wake)", st.Routes["vehicles"])
		}
		if got := resp.Header.Get(signer.HeaderWake); got != "sent" {
			t.Errorf("%s = %q, want sent", signer.HeaderWake, got)
		}
		ms, err := strconv.Atoi(resp.Header.Get(signer.HeaderWakeMillis))
		if err != nil || ms < 1000 {
			t.Errorf("%s = %q, want the wait in milliseconds (the car took 1.5 s)", signer.HeaderWakeMillis, resp.Header.Get(signer.HeaderWakeMillis))
		}
		if len(env.Sim.Executions(vin)) != 1 {
			t.Errorf("the car ran %d commands, want 1", len(env.Sim.Executions(vin)))
		}
		t.Logf("a command to a car that wakes in 1.5 s: upstream %v, answered after a %s ms wait", st.Routes, resp.Header.Get(signer.HeaderWakeMillis))
		text := scrape(t, env, "/metrics")
		for _, want := range []string{`tesla_proxy_wakes_total{result="sent"} 1`, "tesla_proxy_wake_polls_total "} {
			if !strings.Contains(text, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})

	withoutLeaks(t, "concurrent commands share one wake", func(t *testing.T) {
		m := metrics.New()
		env := testenv.Start(t, autoWake(m, 10*time.Second))
		vin := env.VINs[0]
		// A first command while the car is awake: the Fleet API has accepted the token for the
		// car (an unproven token's concurrent commands would wait for that verdict one by one,
		// admit.go) and the session is open.
		if resp, body := env.Command(t, vin, "flash_lights", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("first command: %d %s", resp.StatusCode, body)
		}
		env.Sim.Vehicle(vin).SetAsleep(true)
		env.Sim.SetWakeDelay(vin, time.Second)
		env.Sim.ResetStats()

		const n = 5
		var wg sync.WaitGroup
		codes := make([]int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, _ := env.Command(t, vin, "flash_lights", nil)
				codes[i] = resp.StatusCode
			}()
		}
		wg.Wait()
		for i, c := range codes {
			if c != http.StatusOK {
				t.Errorf("command %d: status %d", i, c)
			}
		}
		st := env.Sim.Stats()
		if st.Routes["wake_up"] != 1 {
			t.Errorf("wake_up calls = %d for %d concurrent commands, want 1", st.Routes["wake_up"], n)
		}
		if st.Routes["echo"] != 0 {
			t.Errorf("%d calls to other routes, want 0", st.Routes["echo"])
		}
		// The first command's 408, then one command each: the others wait for the wake the first
		// began while it still held the car's turn.
		if got := st.Routes["signed_command"]; got > n+1 {
			t.Errorf("signed_command calls = %d for %d commands, want at most %d", got, n, n+1)
		}
		// Every other command found the wake under way.
		text := scrape(t, env, "/metrics")
		if !strings.Contains(text, `tesla_proxy_wakes_total{result="sent"} 1`) || !strings.Contains(text, `tesla_proxy_wakes_total{result="avoided"} `+itoa(n-1)) {
			t.Errorf("/metrics does not count the wake sent and those avoided:\n%s", grepLines(text, "tesla_proxy_wake"))
		}
		if got := len(env.Sim.Executions(vin)); got != n+1 {
			t.Errorf("the car ran %d commands, want %d", got, n+1)
		}
		t.Logf("%d concurrent commands to a sleeping car: %v", n, st.Routes)
	})

	withoutLeaks(t, "a car that stays asleep", func(t *testing.T) {
		env := testenv.Start(t, autoWake(nil, 2*time.Second))
		vin := env.VINs[0]
		env.Sim.SetFault(vin, fleetsim.Fault{Asleep: true})
		env.Sim.ResetStats()
		resp, body := env.Command(t, vin, "flash_lights", nil)
		e := checkError(t, resp.StatusCode, resp.Header, body, http.StatusRequestTimeout, "vehicle_unavailable")
		if !strings.Contains(e.ErrorDescription, "2s") {
			t.Errorf("the 408 does not say how long the proxy waited: %q", e.ErrorDescription)
		}
		if resp.Header.Get(signer.HeaderWake) != "sent" {
			t.Errorf("%s = %q, want sent", signer.HeaderWake, resp.Header.Get(signer.HeaderWake))
		}
		st := env.Sim.Stats()
		if st.Routes["wake_up"] != 1 || st.Routes["echo"] != 0 {
			t.Errorf("routes %v: want 1 wake_up and no other reads", st.Routes)
		}
		if len(env.Sim.Executions(vin)) != 0 {
			t.Errorf("the car ran a command while asleep")
		}
	})

	withoutLeaks(t, "a car missing from the vehicle list", func(t *testing.T) {
		o := autoWake(nil, 5*time.Second)
		o.Upstream = func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && r.URL.Path == "/api/1/vehicles" {
					w.Header().Set("Content-Type", "application/json")
					_, _ = w.Write([]byte(`{"response":[],"pagination":{"next":null},"count":0}`))
					return
				}
				next.ServeHTTP(w, r)
			})
		}
		env := testenv.Start(t, o)
		vin := env.VINs[0]
		env.Sim.Vehicle(vin).SetAsleep(true)
		env.Sim.SetWakeDelay(vin, 500*time.Millisecond)
		resp, body := env.Command(t, vin, "flash_lights", nil)
		checkError(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "vehicle_not_listed")
		if len(env.Sim.Executions(vin)) != 0 {
			t.Errorf("the command ran")
		}
	})

	withoutLeaks(t, "off by default", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 1, Logger: zap.NewNop()})
		vin := env.VINs[0]
		env.Sim.Vehicle(vin).SetAsleep(true)
		env.Sim.ResetStats()
		resp, body := env.Command(t, vin, "flash_lights", nil)
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status %d %s, want the Fleet API's 408", resp.StatusCode, body)
		}
		if st := env.Sim.Stats(); st.Routes["wake_up"] != 0 || st.Routes["vehicles"] != 0 {
			t.Errorf("without -auto-wake the proxy called %v", st.Routes)
		}
		if resp.Header.Get(signer.HeaderWake) != "" {
			t.Errorf("%s set without -auto-wake", signer.HeaderWake)
		}
	})
}

// scrape GETs a proxy path with the Env's token and returns the body.
func scrape(t *testing.T, env *testenv.Env, path string) string {
	t.Helper()
	resp, body := env.Do(t, http.MethodGet, path, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	return string(body)
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
