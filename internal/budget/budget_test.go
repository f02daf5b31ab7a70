package budget_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/budget"
	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/testenv/redistest"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

const (
	commandPath = "/api/1/vehicles/5YJ3E1EA0KF000001/signed_command"
	dataPath    = "/api/1/vehicles/5YJ3E1EA0KF000001/vehicle_data"
	listPath    = "/api/1/vehicles"
)

// serve sends a request for path through b.Gate and reports the answer.
func serve(t *testing.T, b *budget.Budget, path string) *http.Response {
	t.Helper()
	ts := httptest.NewServer(b.Gate(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"response":"passed"}`))
	})))
	defer ts.Close()
	resp, err := http.Get(ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestEnforce(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 30, 12, 0, 0, 0, time.UTC)}
	var warning, exceeded bool
	b := budget.New(budget.Options{Limit: 0.01, Now: c.now, OnChange: func(_, _ float64, w, e bool) { warning, exceeded = w, e }})
	for i := 0; i < 7; i++ {
		b.Record("POST", commandPath, 200) // $0.001 each
	}
	if warning || exceeded {
		t.Fatalf("at $0.007 of $0.01: warning %v, exceeded %v", warning, exceeded)
	}
	b.Record("POST", commandPath, 500) // not billed
	b.Record("GET", listPath, 200)     // free
	b.Record("POST", commandPath, 200)
	if !warning || exceeded {
		t.Fatalf("at $0.008 of $0.01: warning %v, exceeded %v; want the warning only", warning, exceeded)
	}
	if resp := serve(t, b, dataPath); resp.StatusCode != http.StatusOK {
		t.Fatalf("below the budget: %d", resp.StatusCode)
	}
	b.Record("GET", dataPath, 200) // $0.002: $0.010
	if !exceeded {
		t.Fatal("at $0.010 of $0.01: not exceeded")
	}
	resp := serve(t, b, dataPath)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("over the budget: %d, want 429", resp.StatusCode)
	}
	var e struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if e.Error != "monthly_budget_exceeded" || !strings.Contains(e.ErrorDescription, "2027-01-01") || !strings.Contains(e.ErrorDescription, "$0.01") {
		t.Errorf("refusal %+v: want the word, the budget and when the month rolls over", e)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 36*3600 || ra > 36*3600+1 {
		t.Errorf("Retry-After %q, want the 36 h to the end of the month", resp.Header.Get("Retry-After"))
	}
	if resp := serve(t, b, listPath); resp.StatusCode != http.StatusOK {
		t.Errorf("the free vehicle list was refused: %d", resp.StatusCode)
	}
	f := b.Figures()
	if !f.Refusing || f.SpentDollars != 0.01 || f.Month != "2026-12" {
		t.Errorf("figures %+v", f)
	}

	c.set(time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC))
	if resp := serve(t, b, dataPath); resp.StatusCode != http.StatusOK {
		t.Errorf("in the next month: %d, want the call let through", resp.StatusCode)
	}
	if f := b.Figures(); f.SpentDollars != 0 || f.Month != "2027-01" || f.Warning {
		t.Errorf("next month's figures %+v", f)
	}
}

func TestWarnOnly(t *testing.T) {
	b := budget.New(budget.Options{Limit: 0.001, WarnOnly: true})
	b.Record("POST", commandPath, 200)
	b.Record("POST", commandPath, 200)
	if resp := serve(t, b, commandPath); resp.StatusCode != http.StatusOK {
		t.Errorf("-budget-mode warn refused a call: %d", resp.StatusCode)
	}
	if f := b.Figures(); !f.Exceeded || f.Refusing || f.Mode != "warn" {
		t.Errorf("figures %+v", f)
	}
}

func TestKeptAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	c := &clock{t: time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)}
	open := func() *sessions.Store {
		st, err := sessions.Open(sessions.Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	b := budget.New(budget.Options{Limit: 10, Store: st, Now: c.now})
	for i := 0; i < 3; i++ {
		b.Record("POST", "/api/1/vehicles/X/wake_up", 200) // $0.02 each
	}
	b.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = open()
	defer st.Close()
	b = budget.New(budget.Options{Limit: 10, Store: st, Now: c.now})
	if got := b.Figures().SpentDollars; got != 0.06 {
		t.Errorf("after a restart the month's spend is $%v, want $0.06", got)
	}
	c.set(time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC))
	if got := b.Figures().SpentDollars; got != 0 {
		t.Errorf("next month starts at $%v, want 0", got)
	}
}

func TestFiguresHandler(t *testing.T) {
	b := budget.New(budget.Options{Limit: 25})
	b.Record("POST", commandPath, 200)
	ts := httptest.NewServer(b.Handler())
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/budget")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var f budget.Figures
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || f.BudgetDollars != 25 || f.SpentDollars != 0.001 || f.Mode != "enforce" {
		t.Errorf("GET /budget: %d %+v", resp.StatusCode, f)
	}
}

// TestSharedByReplicas runs two budgets, as two replicas would, on one real Redis: each sees
// the other's spend once it syncs, and the spend survives both.
func TestSharedByReplicas(t *testing.T) {
	srv := redistest.Start(t)
	c := &clock{t: time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)}
	open := func() *budget.Budget {
		local, err := sessions.Open(sessions.Options{Size: 10})
		if err != nil {
			t.Fatal(err)
		}
		rs, err := sessions.OpenRedis(sessions.RedisOptions{URL: srv.URL(), Prefix: "budget-test:", Local: local})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rs.Close(); _ = local.Close() })
		return budget.New(budget.Options{Limit: 0.04, Store: rs, Now: c.now})
	}
	a, b := open(), open()
	a.Record("POST", "/api/1/vehicles/X/wake_up", 200) // $0.02 each, kept pending for up to 5 s
	b.Record("POST", "/api/1/vehicles/X/wake_up", 200)
	c.set(c.now().Add(6 * time.Second))
	a.Record("POST", commandPath, 200) // a adds its $0.021
	b.Record("POST", commandPath, 200) // b adds its $0.021 and reads $0.042
	if got := b.Figures().SpentDollars; got != 0.042 {
		t.Errorf("replica b sees $%v, want $0.042 (both replicas' calls)", got)
	}
	if resp := serve(t, a, commandPath); resp.StatusCode != http.StatusOK {
		t.Errorf("replica a refused a call before it synced again: %d", resp.StatusCode)
	}
	c.set(c.now().Add(6 * time.Second))
	if resp := serve(t, a, commandPath); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("replica a let a call through after the replicas together spent $0.042 of $0.04: %d", resp.StatusCode)
	}
	a.Close()
	b.Close()
	if got := open().Figures().SpentDollars; got != 0.042 {
		t.Errorf("a new replica reads $%v, want $0.042", got)
	}
}
