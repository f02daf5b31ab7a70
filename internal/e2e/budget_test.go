package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/budget"
	"github.com/teslaproxy/proxy/internal/metrics"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// TestMonthlyBudget drives commands through the proxy until a tiny budget is spent, then checks
// that billed calls are refused with 429 before they reach the Fleet API, that the free vehicle
// list still answers, and that /budget and /metrics show the figures.
func TestMonthlyBudget(t *testing.T) {
	withoutLeaks(t, "enforce", func(t *testing.T) {
		m := metrics.New()
		b := budget.New(budget.Options{Limit: 0.005, OnChange: m.Budget, OnRefused: m.BudgetRefused})
		env := testenv.Start(t, testenv.Options{Vehicles: 1, Logger: zap.NewNop(), Metrics: m, App: func(o *app.Options) {
			o.Budget = b
			up := o.OnUpstream
			o.OnUpstream = func(method, path string, status int) {
				up(method, path, status)
				b.Record(method, path, status)
			}
		}})
		vin := env.VINs[0]
		ok := 0
		for i := 0; i < 10; i++ {
			resp, body := env.Command(t, vin, "flash_lights", nil)
			if resp.StatusCode == http.StatusTooManyRequests {
				checkError(t, resp.StatusCode, resp.Header, body, http.StatusTooManyRequests, "monthly_budget_exceeded")
				if resp.Header.Get("Retry-After") == "" {
					t.Error("the 429 has no Retry-After")
				}
				break
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("command %d: %d %s", i, resp.StatusCode, body)
			}
			ok++
		}
		// A handshake and the command, then one call each: $0.005 after 4 commands.
		if ok != 4 {
			t.Errorf("%d commands went through a $0.005 budget, want 4", ok)
		}
		before := env.Sim.Stats().Upstream
		resp, _ := env.Do(t, http.MethodGet, "/api/1/vehicles/"+vin+"/vehicle_data", nil)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("vehicle_data over the budget: %d, want 429", resp.StatusCode)
		}
		if n := env.Sim.Stats().Upstream - before; n != 0 {
			t.Errorf("%d calls reached the Fleet API after the budget was spent", n)
		}
		if resp, _ := env.Do(t, http.MethodGet, "/api/1/vehicles", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("the free vehicle list: %d, want 200", resp.StatusCode)
		}
		var f budget.Figures
		if err := json.Unmarshal([]byte(scrape(t, env, "/budget")), &f); err != nil || !f.Refusing || f.SpentDollars != 0.005 {
			t.Errorf("/budget: %+v %v", f, err)
		}
		text := scrape(t, env, "/metrics")
		for _, want := range []string{"tesla_proxy_budget_exceeded 1", "tesla_proxy_budget_warning 1", "tesla_proxy_budget_refused_total 2", "tesla_proxy_budget_spent_dollars 0.005"} {
			if !strings.Contains(text, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})
}
