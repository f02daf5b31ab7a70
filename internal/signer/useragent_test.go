package signer_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// agents records the User-Agent of every signed_command call on its way to the simulator.
type agents struct {
	sim http.Handler
	mu  sync.Mutex
	got []string
}

func (a *agents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/signed_command") {
		a.mu.Lock()
		a.got = append(a.got, r.Header.Get("User-Agent"))
		a.mu.Unlock()
	}
	a.sim.ServeHTTP(w, r)
}

// TestSignedCommandsCarryTheAppsUserAgent: the handshake and the command the signer builds for a
// REST command leave with the app's User-Agent followed by the proxy's product token, through
// the library's goroutines and the per-command vehicle.
func TestSignedCommandsCarryTheAppsUserAgent(t *testing.T) {
	key := testenv.NewKey(t)
	sim := fleetsim.New(fleetsim.Options{})
	vin := fleetsim.NewTestVIN(0)
	sim.AddVehicle(vin, testenv.PublicKey(t, key))
	a := &agents{sim: sim}
	env := startBehind(t, key, sim, a)

	req, err := http.NewRequest(http.MethodPost, env.URL+"/api/1/vehicles/"+vin+"/command/flash_lights", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.Token)
	req.Header.Set("User-Agent", "fleet-app/2.3")
	resp, err := env.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.got) != 2 {
		t.Fatalf("%d signed_command calls, want 2 (handshake and command)", len(a.got))
	}
	for i, ua := range a.got {
		if !strings.HasPrefix(ua, "fleet-app/2.3 tesla-proxy/") {
			t.Errorf("call %d left with User-Agent %q, want the app's then tesla-proxy/VERSION", i, ua)
		}
	}
}
