package signer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"google.golang.org/protobuf/proto"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// TestNoDriftOverThousandsOfRebuilds: every command builds its signer from the stored record and
// writes it back. The vehicles booted five hours ago, so their clocks are large, and over 2,000
// rebuilds in both domains (VCSEC strictly in counter order) the vehicle must reject nothing: the
// record's time zero is the one the handshake set, to the nanosecond, after the last command as
// after the first. A record that re-derived time zero from the library's whole-second export
// would move it later on every rebuild until the vehicle refused commands as expired.
func TestNoDriftOverThousandsOfRebuilds(t *testing.T) {
	key := testenv.NewKey(t)
	boot := time.Now().Add(-5 * time.Hour)
	sim := fleetsim.New(fleetsim.Options{Seed: []byte("drift"), BootTime: boot})
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Key: key, Sim: sim})
	vin := env.VINs[0]
	const rounds = 1000
	var first [2]int64
	for i := range rounds {
		for _, cmd := range []string{"door_lock", "flash_lights"} {
			resp, body := env.Command(t, vin, cmd, nil)
			mustSucceed(t, resp, body)
		}
		if i == 0 {
			rec, _ := env.App.Signer.Store().Peek(vin)
			for d := range first {
				first[d] = rec.Sessions[d].TimeZero
				// The handshake's clock is whole seconds: time zero lies within a second (and
				// the round trip) after the vehicle's boot.
				if off := time.Duration(first[d] - boot.UnixNano()); off < 0 || off > 2*time.Second {
					t.Errorf("%s: time zero %v after the vehicle's boot, want within [0, 2s]", sessions.Domain(d), off)
				}
			}
		}
	}
	rec, _ := env.App.Signer.Store().Peek(vin)
	for d := range first {
		if got := rec.Sessions[d].TimeZero; got != first[d] {
			t.Errorf("%s: time zero moved by %v over %d rebuilds", sessions.Domain(d), time.Duration(got-first[d]), rounds)
		}
	}
	if c := rec.Sessions[sessions.VCSEC].Counter; c != rounds {
		t.Errorf("VCSEC counter %d after %d commands, want %d", c, rounds, rounds)
	}
	st := sim.Stats()
	if len(st.Rejections) != 0 {
		t.Errorf("the vehicle rejected commands: %v", st.Rejections)
	}
	if st.Upstream != 2*rounds+2 {
		t.Errorf("%d upstream calls for %d commands, want %d (two handshakes)", st.Upstream, 2*rounds, 2*rounds+2)
	}
	if n := len(sim.Executions(vin)); n != 2*rounds {
		t.Errorf("%d executions, want %d", n, 2*rounds)
	}
}

// TestEvictedCarCommandedAgain (issue 19, defect 4): with room for one car, commanding a second
// one drops the first one's session. Commanding the first again must start a new session, not
// fall back to an older one: no counter rejection, no wasted calls.
func TestEvictedCarCommandedAgain(t *testing.T) {
	env, _ := startTapped(t, 2, 1)
	a, b := env.VINs[0], env.VINs[1]
	for range 4 {
		resp, body := env.Command(t, a, "door_lock", nil)
		mustSucceed(t, resp, body)
	}
	resp, body := env.Command(t, b, "door_lock", nil)
	mustSucceed(t, resp, body)
	if _, ok := env.App.Signer.Store().Peek(a); ok {
		t.Fatalf("%s is still kept with room for one car", a)
	}
	before := env.Sim.Stats().Upstream
	resp, body = env.Command(t, a, "door_unlock", nil)
	mustSucceed(t, resp, body)
	if n := env.Sim.Stats().Upstream - before; n != 2 {
		t.Errorf("%d calls for the evicted car's command, want 2 (a handshake and the command)", n)
	}
	if r := env.Sim.Stats().Rejections; len(r) != 0 {
		t.Errorf("the vehicle rejected commands: %v", r)
	}
}

// TestClientsThatHangUpLeaveNothingRunning (issue 19, defect 3): 400 clients that give up within
// a millisecond, some while waiting for the car's lock and some while their command is being
// built or sent, leave no goroutine behind.
func TestClientsThatHangUpLeaveNothingRunning(t *testing.T) {
	withoutLeaks(t, "hang-ups", func(t *testing.T) {
		env, _ := startTapped(t, 4, 0)
		for _, vin := range env.VINs {
			resp, body := env.Command(t, vin, "flash_lights", nil)
			mustSucceed(t, resp, body)
		}
		var wg sync.WaitGroup
		for i := range 400 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%4)*300*time.Microsecond+100*time.Microsecond)
				defer cancel()
				_, _ = send(ctx, env, env.VINs[i%len(env.VINs)], "honk_horn", nil)
			}()
		}
		wg.Wait()
		// The proxy's handlers notice the hang-ups on their own time; once they have, a
		// command to every car still works.
		for _, vin := range env.VINs {
			resp, body := env.Command(t, vin, "flash_lights", nil)
			mustSucceed(t, resp, body)
		}
		deadline := time.Now().Add(5 * time.Second)
		for env.App.Signer.Stats().Busy != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := env.App.Signer.Stats().Busy; n != 0 {
			t.Errorf("%d VINs still have a command running or waiting", n)
		}
		env.Client.CloseIdleConnections()
		runtime.GC()
	})
}

// rewriter is a Fleet API in front of the simulator that rewrites the vehicle's answers to
// commands (not handshakes) with edit, after the simulator has carried the command out.
type rewriter struct {
	sim  http.Handler
	edit func(reply *universal.RoutableMessage) []byte
}

func (rw *rewriter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/signed_command") {
		rw.sim.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	rw.sim.ServeHTTP(rec, r)
	var out struct {
		Response string `json:"response"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil {
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	reply := decodeMessage(out.Response)
	if reply == nil || reply.GetSessionInfo() != nil {
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	b, _ := json.Marshal(map[string]string{"response": base64.StdEncoding.EncodeToString(rw.edit(reply))})
	_, _ = w.Write(b)
}

// startRewritten starts a proxy whose Fleet API rewrites command answers with edit.
func startRewritten(t *testing.T, edit func(*universal.RoutableMessage) []byte) *testenv.Env {
	t.Helper()
	key := testenv.NewKey(t)
	sim := fleetsim.New(fleetsim.Options{})
	sim.AddVehicle(fleetsim.NewTestVIN(0), testenv.PublicKey(t, key))
	return startBehind(t, key, sim, &rewriter{sim: sim, edit: edit})
}

// TestUnreadableAnswerAfterExecution (issue 19, defect 2): the vehicle carried the command out,
// but its answer says the reply did not fit (MESSAGEFAULT_ERROR_RESPONSE_MTU_EXCEEDED), which the
// library reports as "may have succeeded". The app must hear that, not a plain failure it might
// resend.
func TestUnreadableAnswerAfterExecution(t *testing.T) {
	env := startRewritten(t, func(reply *universal.RoutableMessage) []byte {
		reply.Payload = nil
		reply.SubSigData = nil
		reply.SignedMessageStatus = &universal.MessageStatus{
			OperationStatus:    universal.OperationStatus_E_OPERATIONSTATUS_ERROR,
			SignedMessageFault: universal.MessageFault_E_MESSAGEFAULT_ERROR_RESPONSE_MTU_EXCEEDED,
		}
		b, _ := proto.Marshal(reply)
		return b
	})
	vin := fleetsim.NewTestVIN(0)
	resp, body := env.Command(t, vin, "flash_lights", nil)
	a := proxyError(t, resp.StatusCode, body, http.StatusBadGateway, "may have been carried out")
	if a.Error != "upstream_error_after_send" {
		t.Errorf("error word %q, want upstream_error_after_send (as for a Fleet API failure after sending)", a.Error)
	}
	if n := len(env.Sim.Executions(vin)); n != 1 {
		t.Errorf("%d executions, want 1", n)
	}
}

// TestEmptySignedCommandAnswer (issue 19, defect 8): {"response":""} is no vehicle answer. The
// proxy must say so at once, without handshaking again and again.
func TestEmptySignedCommandAnswer(t *testing.T) {
	env := startRewritten(t, func(*universal.RoutableMessage) []byte { return nil })
	vin := fleetsim.NewTestVIN(0)
	resp, body := env.Command(t, vin, "flash_lights", nil)
	a := proxyError(t, resp.StatusCode, body, http.StatusBadGateway, "could not be read")
	if a.Error != "invalid_upstream_answer" {
		t.Errorf("error word %q, want invalid_upstream_answer", a.Error)
	}
	if st := env.Sim.Stats(); st.Upstream != 2 {
		t.Errorf("%d upstream calls, want 2 (the handshake and the command)", st.Upstream)
	}
	if !bytes.Contains(body, []byte("may have been carried out")) {
		t.Errorf("answer %s does not say the command may have run", body)
	}
}

// startWithFile is startTapped with the sessions kept in a file store at path.
func startWithFile(t *testing.T, vehicles int, path string) (*testenv.Env, *wiretap, *sessions.Store) {
	t.Helper()
	store, err := sessions.Open(sessions.Options{Path: path, FlushDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	key := testenv.NewKey(t)
	sim := fleetsim.New(fleetsim.Options{})
	for i := range vehicles {
		sim.AddVehicle(fleetsim.NewTestVIN(i), testenv.PublicKey(t, key))
	}
	tap := &wiretap{h: sim}
	return startBehind(t, key, sim, tap, func(o *app.Options) { o.Sessions = store }), tap, store
}

// saved reopens the session file at path and returns its records.
func saved(t *testing.T, path string, vins []string) map[string]sessions.Record {
	t.Helper()
	st, err := sessions.Open(sessions.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out := map[string]sessions.Record{}
	for _, vin := range vins {
		if r, ok := st.Peek(vin); ok {
			out[vin] = r
		}
	}
	return out
}

// TestShutdownSavesEverySession (issue 19, defects 5 and 6): closing the store right after a
// burst of commands, with a write pending, saves every car's latest state; and a car whose
// command is still in flight keeps its last saved state rather than being dropped.
func TestShutdownSavesEverySession(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	env, tap, store := startWithFile(t, 6, path)
	for _, vin := range env.VINs {
		for range 3 {
			resp, body := env.Command(t, vin, "flash_lights", nil)
			mustSucceed(t, resp, body)
		}
	}
	busy := env.VINs[0]
	release := holdVehicle(t, env, tap, busy)
	want := map[string]sessions.Record{}
	for _, vin := range env.VINs {
		want[vin], _ = store.Peek(vin)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	release()
	got := saved(t, path, env.VINs)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("saved sessions differ from the live ones at shutdown (-live +saved):\n%s", diff)
	}
	if got[busy].Sessions[sessions.Infotainment].Counter != 3 {
		t.Errorf("busy car saved with counter %d, want 3 (its state before the held command)", got[busy].Sessions[sessions.Infotainment].Counter)
	}
}

// TestCloseWithABusyCar (issue 19, defect 7): closing the proxy while a command holds its car
// leaves nothing running once that command ends.
func TestCloseWithABusyCar(t *testing.T) {
	withoutLeaks(t, "close while busy", func(t *testing.T) {
		env, tap := startTapped(t, 1, 0)
		vin := env.VINs[0]
		resp, body := env.Command(t, vin, "flash_lights", nil)
		mustSucceed(t, resp, body)
		release := holdVehicle(t, env, tap, vin)
		env.App.Close()
		release()
		env.Client.CloseIdleConnections()
	})
}
