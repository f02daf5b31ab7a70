package signer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// TestMain fails the package if any goroutine (a vehicle's dispatcher, a handshake, a connection)
// outlives the tests. Every Env is closed by its test's cleanup, so nothing may be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// withoutLeaks is testenv.WithoutLeaks.
var withoutLeaks = testenv.WithoutLeaks

// answer is a proxy answer read in full, for use from any goroutine.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// send posts a command through the proxy without touching t, so goroutines other than the test's
// can use it. params is sent as JSON unless it is a []byte or nil.
func send(ctx context.Context, env *testenv.Env, vin, name string, params any) (answer, error) {
	var body io.Reader
	switch p := params.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(p)
	default:
		b, err := json.Marshal(p)
		if err != nil {
			return answer{}, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, env.URL+"/api/1/vehicles/"+vin+"/command/"+name, body)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+env.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := env.Client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// ok reports whether a is 200 {"response":{"result":true,…}}.
func (a answer) ok() bool {
	var r restAnswer
	return a.status == http.StatusOK && json.Unmarshal(a.body, &r) == nil && r.Response != nil && r.Response.Result
}

// errorBody checks that body is the Fleet API's error shape,
// {"response":null,"error":"…","error_description":"…"}, with a non-empty error, and returns it.
func errorBody(t *testing.T, body []byte) restAnswer {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("error answer is not a JSON object: %q", body)
	}
	if r, ok := raw["response"]; !ok || string(r) != "null" {
		t.Errorf("error answer %s: want \"response\":null", body)
	}
	if _, ok := raw["error_description"]; !ok {
		t.Errorf("error answer %s has no error_description", body)
	}
	a := decode(t, body)
	if a.Error == "" {
		t.Errorf("error answer %s has an empty error", body)
	}
	return a
}

// proxyError checks an answer the proxy wrote itself: the status, the error shape, a
// description that says something and contains every one of want.
func proxyError(t *testing.T, status int, body []byte, wantStatus int, want ...string) restAnswer {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status %d %s, want %d", status, body, wantStatus)
	}
	a := errorBody(t, body)
	if a.ErrorDescription == "" {
		t.Errorf("answer %s has an empty error_description", body)
	}
	for _, w := range want {
		if !strings.Contains(a.ErrorDescription, w) {
			t.Errorf("error_description %q does not contain %q", a.ErrorDescription, w)
		}
	}
	return a
}

// holdVehicle starts a flash_lights command and holds it at the Fleet API (in tap) until the
// returned function is called: the command then holds its vehicle's lock for as long as the test
// needs, with no timing involved. The returned function lets the command through, waits for it
// and checks it succeeded. The vehicle must have a session already.
func holdVehicle(t *testing.T, env *testenv.Env, tap *wiretap, vin string) (release func()) {
	t.Helper()
	arrived, open := tap.holdNext()
	done := make(chan answer, 1)
	errc := make(chan error, 1)
	go func() {
		a, err := send(context.Background(), env, vin, "flash_lights", nil)
		errc <- err
		done <- a
	}()
	select {
	case <-arrived:
	case err := <-errc:
		t.Fatalf("the held command ended early: %v %s", err, (<-done).body)
	case <-time.After(10 * time.Second):
		t.Fatal("the held command never reached the Fleet API")
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			open()
			if err := <-errc; err != nil {
				t.Errorf("held command: %v", err)
				return
			}
			if a := <-done; !a.ok() {
				t.Errorf("held command: %d %s, want success", a.status, a.body)
			}
		})
	}
}
