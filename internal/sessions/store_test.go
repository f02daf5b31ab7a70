package sessions_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/proto"

	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// open opens a store at path, closed when the test ends.
func open(t *testing.T, path string, size int) *sessions.Store {
	t.Helper()
	st, err := sessions.Open(sessions.Options{Path: path, Size: size, FlushDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func sample(counter uint32) sessions.Record {
	var r sessions.Record
	s := &r.Sessions[sessions.Infotainment]
	s.Valid, s.Counter, s.Clock = true, counter, 1000
	s.CarKey[0] = 4
	s.CarKey[64] = byte(counter) //nolint:gosec // G115: any byte will do; it only makes keys differ
	s.Epoch[3] = 7
	s.TimeZero = time.Now().Add(-2000 * time.Second).UnixNano()
	return r
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []sessions.Record{sample(5), {Legacy: true}, func() sessions.Record {
		r := sample(9)
		r.Sessions[sessions.VCSEC] = r.Sessions[sessions.Infotainment]
		r.Sessions[sessions.VCSEC].Counter = 2
		return r
	}()} {
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got sessions.Record
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got != r {
			t.Errorf("round trip: got %+v, want %+v", got, r)
		}
		for cut := 0; cut < len(b); cut++ {
			if (&got).UnmarshalBinary(b[:cut]) == nil {
				t.Errorf("a record cut to %d of %d bytes decoded", cut, len(b))
			}
		}
	}
}

// TestStoreWritesOnlyWhatChangedAndSurvivesRestart: records put in one run are there after a
// reopen; a removed one is not.
func TestStoreWritesOnlyWhatChangedAndSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	st, err := sessions.Open(sessions.Options{Path: path, FlushDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		st.Put(string(rune('A'+i%26))+strings.Repeat("0", 16-len(string(rune(i))))+string(rune('0'+i%10)), sample(uint32(i)))
	}
	st.Put("GONE0000000000000", sample(1))
	st.Put("GONE0000000000000", sessions.Record{})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v %v, want mode 0600", fi, err)
	}
	again := open(t, path, 0)
	if again.Len() == 0 {
		t.Fatal("nothing loaded after reopening")
	}
	if _, ok := again.Get("GONE0000000000000"); ok {
		t.Error("a removed record came back")
	}
}

// TestStoreBoundIsLRU: past its size the store drops the least recently used car, and the file
// follows.
func TestStoreBoundIsLRU(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	st, err := sessions.Open(sessions.Options{Path: path, Size: 2, FlushDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	st.Put("A0000000000000000", sample(1))
	st.Put("B0000000000000000", sample(2))
	st.Get("A0000000000000000") // A is now more recent than B
	st.Put("C0000000000000000", sample(3))
	if _, ok := st.Peek("B0000000000000000"); ok {
		t.Error("B, the least recently used, is still there")
	}
	for _, vin := range []string{"A0000000000000000", "C0000000000000000"} {
		if _, ok := st.Peek(vin); !ok {
			t.Errorf("%s was dropped", vin)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	again := open(t, path, 10)
	if again.Len() != 2 {
		t.Errorf("file holds %d records after the drop, want 2", again.Len())
	}
}

// TestStoreRefusesAFileInUse: two proxies must not share one session file.
func TestStoreRefusesAFileInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	open(t, path, 0)
	_, err := sessions.Open(sessions.Options{Path: path})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("second Open: %v, want an error saying the file is in use", err)
	}
}

func TestStoreOverUnreadableFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
	}{
		{"corrupt JSON", `{"vehicles": {"X": [ {"data": 12`},
		{"garbage", strings.Repeat("\x00\x01garbage", 1000)},
		{"JSON of another shape", `[1,2,3]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zap.InfoLevel)
			st, err := sessions.Open(sessions.Options{Path: path, Logger: zap.New(core)})
			if err != nil {
				t.Fatalf("Open over a bad file: %v, want a warning and an empty store", err)
			}
			defer st.Close()
			if st.Len() != 0 {
				t.Errorf("%d records from a bad file", st.Len())
			}
			if logs.FilterLevelExact(zap.WarnLevel).Len() == 0 {
				t.Errorf("no warning: %v", logs.All())
			}
			st.Put("A0000000000000000", sample(1))
			if err := st.Flush(); err != nil {
				t.Errorf("the new file cannot be written: %v", err)
			}
		})
	}
	if _, err := sessions.Open(sessions.Options{Path: dir}); err == nil {
		t.Error("Open on a directory: no error")
	}
}

// oldEntry is one entry of the JSON session file of earlier versions (vehicle-command's
// pkg/cache format).
type oldEntry struct {
	CreatedAt time.Time `json:"created_at"`
	Domain    int       `json:"domain"`
	Data      []byte    `json:"data"`
}

// exportOld writes records as the earlier version did: the session info with the clock in whole
// seconds since time zero, stamped with the time of writing.
func exportOld(t *testing.T, path string, recs map[string]sessions.Record, createdAt func(s sessions.Session) (time.Time, uint32)) {
	t.Helper()
	out := map[string][]oldEntry{}
	for vin, r := range recs {
		for d, s := range r.Sessions {
			if !s.Valid {
				continue
			}
			at, clock := createdAt(s)
			info, err := proto.Marshal(&signatures.SessionInfo{Counter: s.Counter, PublicKey: s.CarKey[:], Epoch: s.Epoch[:], ClockTime: clock})
			if err != nil {
				t.Fatal(err)
			}
			out[vin] = append(out[vin], oldEntry{CreatedAt: at, Domain: sessions.Domain(d).ProtocolDomain(), Data: info})
		}
	}
	b, err := json.Marshal(map[string]any{"MaxEntries": 0, "vehicles": out})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// honest is how the earlier version stamped an entry: now, with the clock since time zero.
func honest(s sessions.Session) (time.Time, uint32) {
	now := time.Now()
	return now, uint32(now.Sub(time.Unix(0, s.TimeZero)) / time.Second) //nolint:gosec // G115: seconds since time zero, which fit 32 bits for 136 years
}

// commandAll runs door_lock and charge_start on every vehicle of env.
func commandAll(t *testing.T, env *testenv.Env, cmds ...string) {
	t.Helper()
	for _, vin := range env.VINs {
		for _, cmd := range cmds {
			if resp, body := env.Command(t, vin, cmd, nil); resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"result":true`)) {
				t.Fatalf("%s %s: %d %s", vin, cmd, resp.StatusCode, body)
			}
		}
	}
}

// snapshot returns the records of env's vehicles.
func snapshot(env *testenv.Env) map[string]sessions.Record {
	out := map[string]sessions.Record{}
	for _, vin := range env.VINs {
		if r, ok := env.App.Signer.Store().Peek(vin); ok {
			out[vin] = r
		}
	}
	return out
}

// TestRestartNeedsNoHandshake: sessions saved by one run serve the next with no handshake, from
// the new file format and from the JSON file of earlier versions; the file holds no secret.
func TestRestartNeedsNoHandshake(t *testing.T) {
	first := testenv.Start(t, testenv.Options{Vehicles: 2})
	commandAll(t, first, "door_lock", "charge_start")
	saved := snapshot(first)

	for _, format := range []string{"bbolt", "json"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sessions")
			if format == "json" {
				exportOld(t, path, saved, honest)
			} else {
				st, err := sessions.Open(sessions.Options{Path: path})
				if err != nil {
					t.Fatal(err)
				}
				for vin, r := range saved {
					st.Put(vin, r)
				}
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, first.Key.PublicBytes()[:16]) || bytes.Contains(data, []byte("PRIVATE")) {
				t.Error("the session file holds the app's key")
			}
			second := testenv.Start(t, testenv.Options{Vehicles: 2, Key: first.Key, Sim: first.Sim, Sessions: open(t, path, 0)})
			first.Sim.ResetStats()
			commandAll(t, second, "door_unlock", "flash_lights")
			st := first.Sim.Stats()
			for vin, vs := range st.Vehicles {
				if vs.Handshakes.VCSEC+vs.Handshakes.Infotainment != 0 {
					t.Errorf("%s: %+v handshakes after restart, want none", vin, vs.Handshakes)
				}
			}
			if st.Upstream != 4 {
				t.Errorf("%d upstream calls for 4 commands after restart, want 4", st.Upstream)
			}
			if format == "json" {
				if _, err := os.Stat(path + ".v1.json"); err != nil {
					t.Errorf("the old JSON file was not kept aside: %v", err)
				}
			}
			saved = snapshot(second)
		})
	}
}

// TestFutureSessionIsDropped (issue 19, defect 1): a saved session whose created_at lies an hour
// ahead (a hostile file, or a host clock that stepped back) must not wedge the car: it is treated
// as absent, and the next command succeeds with a handshake and the command.
func TestFutureSessionIsDropped(t *testing.T) {
	first := testenv.Start(t, testenv.Options{Vehicles: 1})
	commandAll(t, first, "charge_start")
	path := filepath.Join(t.TempDir(), "sessions.json")
	exportOld(t, path, snapshot(first), func(s sessions.Session) (time.Time, uint32) {
		at, clock := honest(s)
		return at.Add(time.Hour), clock
	})
	core, logs := observer.New(zap.InfoLevel)
	st, err := sessions.Open(sessions.Options{Path: path, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if logs.FilterLevelExact(zap.WarnLevel).Len() == 0 {
		t.Error("no warning about the unusable saved session")
	}
	second := testenv.Start(t, testenv.Options{Vehicles: 1, Key: first.Key, Sim: first.Sim, Sessions: st})
	first.Sim.ResetStats()
	start := time.Now()
	commandAll(t, second, "charge_stop")
	if took := time.Since(start); took > 3*time.Second {
		t.Logf("took %v (the issue's bound is 3 s; not asserted, timing is the benchmark's job)", took)
	}
	if n := first.Sim.Stats().Upstream; n > 2 {
		t.Errorf("%d upstream calls, want at most 2 (a handshake and the command)", n)
	}
}

// TestSavedSessionsForChangedVehiclesRecover: sessions saved against vehicles that have since
// changed keys (a replaced module, or the dev simulator's files deleted) can never be repaired by
// re-syncing. The proxy must notice, start new sessions, and run the command, with a bounded
// number of calls, instead of retrying until the deadline.
func TestSavedSessionsForChangedVehiclesRecover(t *testing.T) {
	first := testenv.Start(t, testenv.Options{Vehicles: 1})
	vin := first.VINs[0]
	commandAll(t, first, "charge_start")
	st, err := sessions.Open(sessions.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for v, r := range snapshot(first) {
		st.Put(v, r)
	}
	// A new simulator: same VIN and enrolled key, but the vehicle has a new key of its own.
	second := testenv.Start(t, testenv.Options{Vehicles: 1, Key: first.Key, Timeout: 15 * time.Second, Sessions: st})
	resp, body := second.Command(t, vin, "charge_stop", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("after the vehicle changed: %d %s (%+v)", resp.StatusCode, body, second.Sim.Stats())
	}
	stats := second.Sim.Stats()
	if stats.Upstream > 6 {
		t.Errorf("%d upstream calls to recover, want at most 6 (4 rejected tries, a handshake, the command)", stats.Upstream)
	}
	if n := len(second.Sim.Executions(vin)); n != 1 {
		t.Errorf("%d executions, want 1", n)
	}
	before := second.Sim.Stats().Upstream
	if resp, body := second.Command(t, vin, "charge_start", nil); resp.StatusCode != 200 {
		t.Fatalf("next command: %d %s", resp.StatusCode, body)
	}
	if d := second.Sim.Stats().Upstream - before; d != 1 {
		t.Errorf("next command cost %d calls, want 1", d)
	}
}
