package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// chromium finds Debian's chromium (scripts/test.sh and .ci/run install it). Without it the test
// skips, except in CI, where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; scripts/test.sh installs it (apt-get install chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// browser starts headless Chromium for the test, with the flags a closed network needs.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1100),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// TestDashboardInABrowser opens the simulator's dashboard in headless Chromium: it names the
// cars, shows a command sent through the proxy as it happens, and its sleep, wake and fault
// controls change the car as the Fleet API then reports it.
func TestDashboardInABrowser(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Vehicles: 2})
	car, other := env.VINs[0], env.VINs[1]
	env.Sim.Vehicle(car).Update(func(st *fleetsim.CarState) { st.Name = "Alpha" })
	env.Sim.Vehicle(other).Update(func(st *fleetsim.CarState) { st.Name = "Bravo" })
	// The browser reaches the same simulator over plain HTTP on loopback, as dev mode serves it.
	dash := httptest.NewServer(env.Sim)
	t.Cleanup(dash.Close)
	// Started last, so it closes first: its event stream would hold the server open.
	ctx := browser(t)

	card := func(vin string) string { return fmt.Sprintf(`article.car[data-vin=%q]`, vin) }
	field := func(vin, name string) string { return card(vin) + fmt.Sprintf(` [data-field=%q]`, name) }
	text := func(sel string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	// waitText waits until the element's text is want, as the page updates live.
	waitText := func(sel, want string) {
		t.Helper()
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.trim() === %q; })()`, sel, want)
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
			t.Fatalf("%s never showed %q (it shows %q): %v", sel, want, text(sel), err)
		}
	}
	// apiState is what the Fleet API, through the proxy, says of a car's state.
	apiState := func(vin string) (int, string) {
		resp, body := env.Do(t, http.MethodGet, "/api/1/vehicles/"+vin, nil)
		var out struct {
			Response struct {
				State string `json:"state"`
			} `json:"response"`
		}
		_ = json.Unmarshal(body, &out)
		return resp.StatusCode, out.Response.State
	}
	waitAPI := func(vin string, wantCode int, wantState string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, state := apiState(vin)
			if code == wantCode && state == wantState {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("API says %s is %d %q, want %d %q", vin, code, state, wantCode, wantState)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The page loads and names the cars.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(dash.URL+"/sim/"),
		chromedp.WaitVisible(card(other)),
	); err != nil {
		t.Fatalf("the dashboard did not load: %v", err)
	}
	waitText(field(car, "name"), "Alpha")
	waitText(field(other, "name"), "Bravo")
	waitText(field(car, "locked"), "Locked")
	waitText("#live-text", "Live")

	// A command through the proxy shows on the page without a reload.
	resp, body := env.Do(t, http.MethodPost, "/api/1/vehicles/"+car+"/command/door_unlock", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("door_unlock through the proxy: %d %s", resp.StatusCode, body)
	}
	waitText(field(car, "locked"), "Unlocked")
	waitText(card(car)+` [data-field="recent"] td.action`, "RKE_ACTION_UNLOCKVCSEC")
	resp, body = env.Do(t, http.MethodPost, "/api/1/vehicles/"+car+"/command/set_charge_limit", []byte(`{"percent":75}`))
	if resp.StatusCode != 200 {
		t.Fatalf("set_charge_limit through the proxy: %d %s", resp.StatusCode, body)
	}
	waitText(field(car, "limit"), "75 %")

	// The sleep control: the Fleet API then reports the car asleep, and data gets 408.
	if err := chromedp.Do(ctx, chromedp.Click(card(other)+` button[data-action="sleep"]`)); err != nil {
		t.Fatal(err)
	}
	waitAPI(other, 200, "asleep")
	waitText(field(other, "status"), "asleep")
	if resp, _ := env.Do(t, http.MethodGet, "/api/1/vehicles/"+other+"/vehicle_data", nil); resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("vehicle_data of the car put to sleep: %d, want 408", resp.StatusCode)
	}
	// The wake control brings it back.
	if err := chromedp.Do(ctx, chromedp.Click(card(other)+` button[data-action="wake"]`)); err != nil {
		t.Fatal(err)
	}
	waitAPI(other, 200, "online")
	waitText(field(other, "status"), "online")

	// A fault from the picker: the Fleet API rate-limits that car.
	pick := fmt.Sprintf(`(() => { const s = document.querySelector(%q); s.value = "rate"; s.dispatchEvent(new Event("change")); return true; })()`, card(car)+` select[data-action="fault"]`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](pick)); err != nil {
		t.Fatal(err)
	}
	waitAPI(car, http.StatusTooManyRequests, "")
	waitText(field(car, "fault-banner"), "Rate limited: every request answers 429, Retry-After 30 s")

	// The billed calls so far, as the page shows them.
	if got := text("#billing-calls"); got == "0" || got == "" {
		t.Errorf("billed calls shown: %q", got)
	}

	if out := os.Getenv("DASHBOARD_SCREENSHOT"); out != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil { //nolint:gosec // G703: the path is the one the developer asked for
			t.Fatal(err)
		}
	}
}
