package sessions_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/cache"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/testenv"
)

func TestLoadMissingCorruptAndUnreadable(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	os.WriteFile(corrupt, []byte(`{"vehicles": {"X": [ {"data": 12`), 0o600)
	wrongShape := filepath.Join(dir, "shape.json")
	os.WriteFile(wrongShape, []byte(`[1,2,3]`), 0o600)
	unreadable := filepath.Join(dir, "dir.json")
	os.Mkdir(unreadable, 0o700)
	for _, tc := range []struct {
		name, path string
		warn       bool
	}{
		{"missing", filepath.Join(dir, "none.json"), false},
		{"corrupt", corrupt, true},
		{"wrong shape", wrongShape, true},
		{"a directory", unreadable, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			if c := sessions.Load(tc.path, zap.New(core)); c != nil {
				t.Errorf("Load = %v, want nil (start empty)", c)
			}
			warned := logs.FilterLevelExact(zap.WarnLevel).Len() > 0
			if warned != tc.warn {
				t.Errorf("warned = %v, want %v (%v)", warned, tc.warn, logs.All())
			}
		})
	}
}

func TestWriterDebouncesAndWritesAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.json")
	c := cache.New(0)
	writes := 0
	w := sessions.NewWriter(path, 50*time.Millisecond, func() *cache.SessionCache { writes++; return c }, zap.NewNop())
	for i := 0; i < 100; i++ {
		w.Changed()
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the file was not written after a change")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if writes != 2 {
		t.Errorf("%d snapshots for 100 changes and a close, want 2 (one debounced write, one at close)", writes)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, err %v; want 0600", st.Mode().Perm(), err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".sessions.json.tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
	w.Changed() // after Close: ignored, must not panic or write
}

// TestRestartNeedsNoHandshake runs commands through one proxy, saves its sessions as the binary
// does at shutdown, starts a second proxy from the file against the same vehicles, and checks its
// commands cost no handshake.
func TestRestartNeedsNoHandshake(t *testing.T) {
	first := testenv.Start(t, testenv.Options{Vehicles: 2})
	for _, vin := range first.VINs {
		for _, cmd := range []string{"door_lock", "charge_start"} {
			if resp, body := first.Command(t, vin, cmd, nil); resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", cmd, resp.StatusCode, body)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "sessions.json")
	w := sessions.NewWriter(path, time.Hour, first.App.Signer.Sessions, zap.NewNop())
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "PRIVATE") {
		t.Fatal("the session file holds a private key")
	}

	seed := sessions.Load(path, zap.NewNop())
	if seed == nil || len(seed.Vehicles) != 2 {
		t.Fatalf("loaded %v, want sessions for 2 vehicles", seed)
	}
	second := testenv.Start(t, testenv.Options{Vehicles: 2, Key: first.Key, Sim: first.Sim, Sessions: seed})
	first.Sim.ResetStats()
	for _, vin := range second.VINs {
		for _, cmd := range []string{"door_unlock", "charge_stop"} {
			if resp, body := second.Command(t, vin, cmd, nil); resp.StatusCode != 200 {
				t.Fatalf("after restart, %s: %d %s", cmd, resp.StatusCode, body)
			}
		}
	}
	st := first.Sim.Stats()
	for vin, vs := range st.Vehicles {
		if vs.Handshakes.VCSEC+vs.Handshakes.Infotainment != 0 {
			t.Errorf("%s: %+v handshakes after restart, want none", vin, vs.Handshakes)
		}
	}
	if st.Upstream != 4 {
		t.Errorf("%d upstream calls for 4 commands after restart, want 4", st.Upstream)
	}
}

// TestSavedSessionsForChangedVehiclesRecover: sessions saved against vehicles that have since
// changed keys (a replaced module, or the dev simulator's files deleted) can never be repaired by
// re-syncing. The proxy must notice, start new sessions, and run the command, with a bounded
// number of calls, instead of retrying until the deadline.
func TestSavedSessionsForChangedVehiclesRecover(t *testing.T) {
	first := testenv.Start(t, testenv.Options{Vehicles: 1})
	vin := first.VINs[0]
	if resp, body := first.Command(t, vin, "charge_start", nil); resp.StatusCode != 200 {
		t.Fatalf("charge_start: %d %s", resp.StatusCode, body)
	}
	path := filepath.Join(t.TempDir(), "sessions.json")
	if err := sessions.NewWriter(path, time.Hour, first.App.Signer.Sessions, zap.NewNop()).Close(); err != nil {
		t.Fatal(err)
	}
	// A new simulator: same VIN and enrolled key, but the vehicle has a new key of its own.
	second := testenv.Start(t, testenv.Options{Vehicles: 1, Key: first.Key, Timeout: 15 * time.Second, Sessions: sessions.Load(path, zap.NewNop())})
	start := time.Now()
	resp, body := second.Command(t, vin, "charge_stop", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("after the vehicle changed: %d %s (%+v)", resp.StatusCode, body, second.Sim.Stats())
	}
	st := second.Sim.Stats()
	if st.Upstream > 6 {
		t.Errorf("%d upstream calls to recover, want at most 6 (4 rejected tries, a handshake, the command)", st.Upstream)
	}
	if n := len(second.Sim.Executions(vin)); n != 1 {
		t.Errorf("%d executions, want 1", n)
	}
	t.Logf("recovered in %v with %d upstream calls", time.Since(start), st.Upstream)
	// The next command uses the new session: one call.
	before := second.Sim.Stats().Upstream
	if resp, body := second.Command(t, vin, "charge_start", nil); resp.StatusCode != 200 {
		t.Fatalf("next command: %d %s", resp.StatusCode, body)
	}
	if d := second.Sim.Stats().Upstream - before; d != 1 {
		t.Errorf("next command cost %d calls, want 1", d)
	}
}
