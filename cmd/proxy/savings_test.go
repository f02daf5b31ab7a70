package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/budget"
)

// getBudget reads GET /budget on a metrics listener.
func getBudget(t *testing.T, addr string) budget.Figures {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/budget")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var f budget.Figures
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &f) != nil {
		t.Fatalf("GET /budget: %d %s", resp.StatusCode, body)
	}
	return f
}

// TestBudgetKeptAcrossRestarts runs the proxy with -monthly-budget and a session file until the
// budget is spent, restarts it, and checks that the spend was kept: the budget still refuses.
func TestBudgetKeptAcrossRestarts(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	cache := filepath.Join(f.dir, "sessions.db")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := f.args("-monthly-budget", "0.003", "-session-cache", cache, "-metrics-addr", addr)
	cmd := func(u string) int {
		resp, _ := f.do(t, f.client(t), http.MethodPost, u+"/api/1/vehicles/"+f.vin+"/command/flash_lights", nil)
		return resp.StatusCode
	}

	p := startProc(t, args)
	u := p.waitListening(t)
	// A handshake and a command ($0.002), then a command ($0.001): the budget is spent.
	for i, want := range []int{200, 200, 429} {
		if got := cmd(u); got != want {
			t.Fatalf("command %d: %d, want %d", i, got, want)
		}
	}
	if fig := getBudget(t, addr); !fig.Refusing || fig.SpentDollars != 0.003 || fig.BudgetDollars != 0.003 {
		t.Errorf("/budget %+v", fig)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, p.stderr())
	}

	p = startProc(t, args)
	u = p.waitListening(t)
	if fig := getBudget(t, addr); fig.SpentDollars != 0.003 || !fig.Refusing {
		t.Errorf("after a restart /budget shows %+v, want the $0.003 spent before", fig)
	}
	if got := cmd(u); got != http.StatusTooManyRequests {
		t.Errorf("after a restart a command got %d, want 429", got)
	}
	p.stop(t)
}

// TestAutoWakeFlag runs the proxy with -auto-wake against a sleeping car.
func TestAutoWakeFlag(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.sim.Vehicle(f.vin).SetAsleep(true)
	p := startProc(t, f.args("-auto-wake", "-wake-timeout", "10s", "-coalesce-reads"))
	u := p.waitListening(t)
	resp, body := f.do(t, f.client(t), http.MethodPost, u+"/api/1/vehicles/"+f.vin+"/command/flash_lights", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Proxy-Wake") != "sent" {
		t.Errorf("command to a sleeping car with -auto-wake: %d %s (X-Proxy-Wake %q)", resp.StatusCode, body, resp.Header.Get("X-Proxy-Wake"))
	}
	if st := f.sim.Stats(); st.Routes["wake_up"] != 1 {
		t.Errorf("wake_up calls %d, want 1", st.Routes["wake_up"])
	}
	p.stop(t)
}
