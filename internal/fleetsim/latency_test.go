package fleetsim

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseLatency(t *testing.T) {
	ms := time.Millisecond
	all := func(d Delay) Latency { return Latency{Data: d, Commands: d, Wakes: d, Other: d} }
	tests := []struct {
		name string
		in   string
		want Latency
		err  string
	}{
		{"empty", "", Latency{}, ""},
		{"zero", "0", Latency{}, ""},
		{"one for all", "300ms", all(Delay{Base: 300 * ms}), ""},
		{"with jitter", "300ms±50ms", all(Delay{Base: 300 * ms, Jitter: 50 * ms}), ""},
		{"ascii jitter", "1s+-250ms", all(Delay{Base: time.Second, Jitter: 250 * ms}), ""},
		{"per class", "commands=300ms, data=200ms±50ms", Latency{Commands: Delay{Base: 300 * ms}, Data: Delay{Base: 200 * ms, Jitter: 50 * ms}}, ""},
		{"all then one", "all=100ms,wakes=2s", Latency{Data: Delay{Base: 100 * ms}, Commands: Delay{Base: 100 * ms}, Wakes: Delay{Base: 2 * time.Second}, Other: Delay{Base: 100 * ms}}, ""},
		{"bare number", "300", Latency{}, "not a delay"},
		{"negative", "-1s", Latency{}, "not a delay"},
		{"bad jitter", "300ms±x", Latency{}, "not a jitter"},
		{"unknown class", "cmds=300ms", Latency{}, "latency class"},
		{"item without =", "commands=300ms,200ms", Latency{}, "want class=delay"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLatency(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseLatency(%q) error = %v, want one containing %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLatency(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseLatency(%q) (-want +got):\n%s", tc.in, diff)
			}
			back, err := ParseLatency(got.String())
			if err != nil || back != got {
				t.Errorf("ParseLatency(%q.String() = %q) = %v, %v; want the same latency", tc.in, got.String(), back, err)
			}
		})
	}
}

func TestLatencyClasses(t *testing.T) {
	l := Latency{Data: Delay{Base: 1}, Commands: Delay{Base: 2}, Wakes: Delay{Base: 3}, Other: Delay{Base: 4}}
	tests := []struct {
		route, method string
		want          time.Duration
	}{
		{"vehicles", http.MethodGet, 1},
		{"echo", http.MethodGet, 1},
		{"fleet_telemetry_config", http.MethodGet, 1},
		{"signed_command", http.MethodPost, 2},
		{"command", http.MethodPost, 2},
		{"wake_up", http.MethodPost, 3},
		{"fleet_telemetry_config_jws", http.MethodPost, 4},
		{"fleet_telemetry_config", http.MethodDelete, 4},
		{"echo", http.MethodPost, 4},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(tc.method, "/", nil)
		if got := l.of(tc.route, r).Base; got != tc.want {
			t.Errorf("%s %s: delay %v, want the class with %v", tc.method, tc.route, got, tc.want)
		}
	}
}

func TestDelayDrawStaysInRange(t *testing.T) {
	d := Delay{Base: 100, Jitter: 30}
	seen := map[time.Duration]bool{}
	for range 10_000 {
		v := d.draw()
		if v < 70 || v > 130 {
			t.Fatalf("draw() = %v, outside 100±30", v)
		}
		seen[v] = true
	}
	if len(seen) < 30 {
		t.Errorf("only %d distinct values drawn from 61", len(seen))
	}
	if v := (Delay{Base: 10, Jitter: 50}).draw(); v < 0 {
		t.Errorf("draw() = %v, below zero", v)
	}
}

// TestLatencyHoldsTheAnswer sets an hour of latency on commands only: a data request still
// answers, and a signed_command gets no answer before its client gives up.
func TestLatencyHoldsTheAnswer(t *testing.T) {
	s := New(Options{Latency: Latency{Commands: Delay{Base: time.Hour}}})
	vin := NewTestVIN(0)
	s.AddVehicle(vin)
	// HTTP/2, so the client giving up resets the stream and ends the simulator's wait (an
	// HTTP/1.1 server notices a gone client only once it has read the request body).
	ts := httptest.NewUnstartedServer(s)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)

	resp, err := ts.Client().Get(ts.URL + "/api/1/vehicles")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vehicle list: status %d, want 200", resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/api/1/vehicles/"+vin+"/signed_command", strings.NewReader(`{}`))
	resp, err = ts.Client().Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("signed_command answered %d despite an hour of latency", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("signed_command: %v, want the client's deadline", err)
	}
	s.SetLatency(Latency{})
	if got := s.Latency(); !got.IsZero() {
		t.Errorf("Latency() = %v after SetLatency(zero)", got)
	}
}
