package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teslaproxy/proxy/internal/certgen"
	"github.com/teslaproxy/proxy/internal/fleetsim"
)

// simRun is one "proxy simulate" running in the background.
type simRun struct {
	url    string
	vins   string
	cancel context.CancelFunc
	done   chan int
	stderr *bytes.Buffer
}

// startSimulate runs runSimulate with args and waits for its two stdout lines.
func startSimulate(t *testing.T, args ...string) *simRun {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	r := &simRun{cancel: cancel, done: make(chan int, 1), stderr: &bytes.Buffer{}}
	go func() {
		code := runSimulate(ctx, args, pw, r.stderr)
		_ = pw.Close()
		r.done <- code
	}()
	lines := bufio.NewScanner(pr)
	for _, want := range []string{"simulator listening on ", "vins: "} {
		if !lines.Scan() {
			cancel()
			t.Fatalf("simulate exited early (code %d): %s", <-r.done, r.stderr)
		}
		v, ok := strings.CutPrefix(lines.Text(), want)
		if !ok {
			t.Fatalf("stdout line %q, want prefix %q", lines.Text(), want)
		}
		if want == "vins: " {
			r.vins = v
		} else {
			r.url = v
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return r
}

// stop cancels the context and returns the exit code.
func (r *simRun) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	select {
	case code := <-r.done:
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("simulate did not stop")
		return -1
	}
}

func writeClientKey(t *testing.T) string {
	t.Helper()
	pub := &newECKey(t, elliptic.P256()).PublicKey
	return writeFile(t, filepath.Join(t.TempDir(), "app.pem"), pemBlock("PUBLIC KEY", mustPKIX(t, pub)), 0o600)
}

func getJSON(t *testing.T, client *http.Client, url string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// leakCheck ignores goroutines that existed before the test (other tests of this package).
func leakCheck(t *testing.T) func() {
	opt := goleak.IgnoreCurrent()
	return func() { goleak.VerifyNone(t, opt) }
}

func TestSimulateDefaults(t *testing.T) {
	defer leakCheck(t)()
	r := startSimulate(t)
	if !strings.HasPrefix(r.url, "http://127.0.0.1:") {
		t.Errorf("url = %q", r.url)
	}
	want := strings.Join([]string{fleetsim.NewTestVIN(1), fleetsim.NewTestVIN(2), fleetsim.NewTestVIN(3)}, ",")
	if r.vins != want {
		t.Errorf("vins = %q, want %q", r.vins, want)
	}
	client := &http.Client{}
	var list struct {
		Count int `json:"count"`
	}
	getJSON(t, client, r.url+"/api/1/vehicles", &list)
	if list.Count != 3 {
		t.Errorf("count = %d", list.Count)
	}
	client.CloseIdleConnections()
	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d, stderr %s", code, r.stderr)
	}
}

func TestSimulateFlags(t *testing.T) {
	defer leakCheck(t)()
	keyFile := writeClientKey(t)
	vin1, vin2 := fleetsim.NewTestVIN(7), fleetsim.NewTestVIN(8)
	certFile, tlsKeyFile := writeSelfSigned(t)
	r := startSimulate(t, "-enroll", keyFile, "-vins", vin1+","+vin2, "-legacy", vin2, "-asleep", vin1,
		"-cert", certFile, "-key", tlsKeyFile, "-latency", "commands=1ms±1ms,data=1ms")
	if !strings.HasPrefix(r.url, "https://127.0.0.1:") || r.vins != vin1+","+vin2 {
		t.Errorf("url %q vins %q", r.url, r.vins)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed test cert
	var vehicles []struct {
		VIN      string            `json:"vin"`
		State    fleetsim.CarState `json:"state"`
		Enrolled int               `json:"enrolled_keys"`
	}
	getJSON(t, client, r.url+"/sim/vehicles", &vehicles)
	if len(vehicles) != 2 || !vehicles[0].State.Asleep || vehicles[1].State.Asleep || vehicles[0].Enrolled != 1 {
		t.Errorf("vehicles = %+v", vehicles)
	}
	var faults struct {
		Vehicles map[string]fleetsim.Fault `json:"vehicles"`
	}
	getJSON(t, client, r.url+"/sim/faults", &faults)
	if !faults.Vehicles[vin2].Legacy || faults.Vehicles[vin1].Legacy {
		t.Errorf("faults = %+v", faults)
	}
	client.CloseIdleConnections()
	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d, stderr %s", code, r.stderr)
	}
}

func TestSimulateUsageErrors(t *testing.T) {
	keyFile := writeClientKey(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"non-loopback listen", []string{"-listen", "0.0.0.0:0"}, "not a loopback address"},
		{"cert without key", []string{"-cert", "x.pem"}, "-cert and -key go together"},
		{"bad VIN", []string{"-vins", "SHORT"}, "not 17 upper-case"},
		{"legacy VIN not simulated", []string{"-vins", fleetsim.NewTestVIN(1), "-legacy", fleetsim.NewTestVIN(2)}, "not one of the simulated VINs"},
		{"missing key file", []string{"-enroll", filepath.Join(t.TempDir(), "none.pem")}, "-enroll"},
		{"bad key file", []string{"-enroll", keyFile + "x"}, "-enroll"},
		{"stray argument", []string{"extra"}, "unexpected argument"},
		{"bad latency", []string{"-latency", "commands=soon"}, "-latency"},
		{"unknown latency class", []string{"-latency", "cmds=300ms"}, "latency class"},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined"},
		{"scenario and vins", []string{"-scenario", writeScenario(t, "vehicles: [{model: modely}]"), "-vins", fleetsim.NewTestVIN(1)}, "use one"},
		{"scenario file missing", []string{"-scenario", filepath.Join(t.TempDir(), "none.yaml")}, "-scenario"},
		{"scenario unknown field", []string{"-scenario", writeScenario(t, "vehicles: [{paint: red}]")}, "field paint not found"},
		{"scenario bad model", []string{"-scenario", writeScenario(t, "vehicles: [{model: roadster}]")}, "model \"roadster\""},
		{"scenario without vehicles", []string{"-scenario", writeScenario(t, "sleep_after: 5m")}, "lists no vehicles"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runSimulate(t.Context(), tc.args, &stdout, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
				t.Errorf("code %d stdout %q stderr %q, want 2 and %q", code, stdout.String(), stderr.String(), tc.want)
			}
		})
	}
}

func writeScenario(t *testing.T, text string) string {
	t.Helper()
	return writeFile(t, filepath.Join(t.TempDir(), "fleet.yaml"), []byte(text), 0o600)
}

// TestSimulateScenario runs a YAML fleet: models, charge, sleep, legacy, pairing, timings.
func TestSimulateScenario(t *testing.T) {
	defer leakCheck(t)()
	keyFile := writeClientKey(t)
	vin := fleetsim.NewTestVIN(40)
	file := writeScenario(t, `
sleep_after: 5m
wake_time: 2s
vehicles:
  - vin: `+vin+`
    name: Daily driver
    model: modely
    battery: 41
    charge_limit: 80
    charging: true
    location: {lat: 52.52, lon: 13.405, heading: 180}
  - model: models
    asleep: true
    legacy: true
    paired: false
    faults: {delay: 1ms}
`)
	r := startSimulate(t, "-scenario", file, "-enroll", keyFile, "-wake-time", "3s")
	vins := strings.Split(r.vins, ",")
	if len(vins) != 2 || vins[0] != vin || vins[1][3] != 'S' {
		t.Fatalf("vins %q: want %s and a generated Model S VIN", r.vins, vin)
	}
	client := &http.Client{}
	defer client.CloseIdleConnections()
	var data struct {
		Response struct {
			DisplayName string `json:"display_name"`
			Charge      struct {
				Level int    `json:"battery_level"`
				State string `json:"charging_state"`
			} `json:"charge_state"`
			Config struct {
				CarType string `json:"car_type"`
			} `json:"vehicle_config"`
			Drive struct {
				Lat float64 `json:"latitude"`
			} `json:"drive_state"`
		} `json:"response"`
	}
	getJSON(t, client, r.url+"/api/1/vehicles/"+vin+"/vehicle_data?endpoints=charge_state%3Bvehicle_config%3Blocation_data", &data)
	d := data.Response
	if d.DisplayName != "Daily driver" || d.Charge.Level != 41 || d.Charge.State != "Charging" || d.Config.CarType != "modely" || d.Drive.Lat != 52.52 {
		t.Errorf("vehicle_data: %+v", d)
	}
	var other struct {
		Response struct {
			State string `json:"state"`
		} `json:"response"`
	}
	getJSON(t, client, r.url+"/api/1/vehicles/"+vins[1], &other)
	if other.Response.State != "asleep" {
		t.Errorf("second car: %s, want asleep", other.Response.State)
	}
	var faults struct {
		Vehicles map[string]struct {
			Legacy  bool  `json:"legacy"`
			DelayMS int64 `json:"delay_ms"`
		} `json:"vehicles"`
	}
	getJSON(t, client, r.url+"/sim/faults", &faults)
	if f := faults.Vehicles[vins[1]]; !f.Legacy || f.DelayMS != 1 {
		t.Errorf("faults: %+v", faults)
	}
	var state fleetsim.DashboardState
	getJSON(t, client, r.url+"/sim/state", &state)
	if state.SleepAfterSec != 300 || state.WakeTimeSec != 3 {
		t.Errorf("sleep after %v s, wake %v s: want the scenario's 300 and the flag's 3", state.SleepAfterSec, state.WakeTimeSec)
	}
	var vehicles []struct {
		Enrolled int `json:"enrolled_keys"`
	}
	getJSON(t, client, r.url+"/sim/vehicles", &vehicles)
	if len(vehicles) != 2 || vehicles[0].Enrolled != 1 || vehicles[1].Enrolled != 0 {
		t.Errorf("enrolled keys: %+v, want the app key on the paired car only", vehicles)
	}
	client.CloseIdleConnections()
	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d, stderr %s", code, r.stderr)
	}
}

// writeSelfSigned writes a throwaway certificate for 127.0.0.1.
func writeSelfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	cert, _, err := certgen.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile = writeFile(t, filepath.Join(dir, "cert.pem"), pemBlock("CERTIFICATE", cert.Certificate[0]), 0o600)
	keyFile = writeFile(t, filepath.Join(dir, "key.pem"), certgen.KeyPEM(cert.PrivateKey.(*ecdsa.PrivateKey)), 0o600)
	return certFile, keyFile
}
