package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// devRun is a dev-mode proxy process and what it printed.
type devRun struct {
	p        *proc
	token    string
	curls    []string
	statsURL string
	caFile   string
	// dashboard is the simulator dashboard's URL.
	dashboard string
}

func startDev(t *testing.T, dir string) *devRun {
	t.Helper()
	p := startProc(t, []string{"-dev", "-dev-dir", dir, "-port", "0"})
	p.waitListening(t)
	deadline := time.Now().Add(10 * time.Second)
	var out string
	for time.Now().Before(deadline) {
		if out = p.stdout.String(); strings.Contains(out, "A pass-through call:") && strings.Count(out, "\n  curl ") >= 4 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := &devRun{p: p}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "export TOKEN="):
			d.token = strings.TrimPrefix(line, "export TOKEN=")
		case strings.HasPrefix(line, "  curl "):
			d.curls = append(d.curls, strings.TrimSpace(line))
		case strings.HasPrefix(line, "Trust this CA in your app: "):
			d.caFile = strings.TrimPrefix(line, "Trust this CA in your app: ")
		case strings.HasPrefix(line, "Dashboard "):
			d.dashboard = line[strings.LastIndex(line, " ")+1:]
		}
	}
	if m := regexp.MustCompile(`https://127\.0\.0\.1:\d+/sim/stats`).FindString(out); m != "" {
		d.statsURL = m
	}
	if d.token == "" || len(d.curls) != 4 || d.statsURL == "" || d.caFile == "" || !strings.HasPrefix(d.dashboard, "http://127.0.0.1:") {
		t.Fatalf("dev mode printed no token, curl lines, CA, stats or dashboard URL:\n%s", out)
	}
	return d
}

// curl runs one printed line exactly as printed, with TOKEN exported as the output says.
func (d *devRun) curl(t *testing.T, line string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", line+" --silent --show-error")
	cmd.Env = append(os.Environ(), "TOKEN="+d.token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return string(out)
}

// handshakes reads the simulator's handshake count, over all vehicles and domains.
func (d *devRun) handshakes(t *testing.T) int {
	t.Helper()
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(d.caFile)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("dev CA %s: %v", d.caFile, err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(d.statsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Vehicles map[string]struct {
			Handshakes struct{ VCSEC, Infotainment int }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range st.Vehicles {
		n += v.Handshakes.VCSEC + v.Handshakes.Infotainment
	}
	return n
}

// TestDevModeAsAUserRunsIt starts "proxy -dev" as a process, runs the three curl lines it prints
// exactly as printed, restarts it and checks the saved sessions spare the handshake, then starts it
// over a corrupt session file.
func TestDevModeAsAUserRunsIt(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	dir := filepath.Join(t.TempDir(), "dev state")

	first := startDev(t, dir)
	if out := first.curl(t, first.curls[0]); !strings.Contains(out, `{"response":{"result":true,"reason":""}}`) {
		t.Errorf("command line answered %s", out)
	}
	if out := first.curl(t, first.curls[1]); !strings.Contains(out, `"locked":true`) || !strings.Contains(out, `"battery_level":64`) || !strings.Contains(out, `"latitude":`) {
		t.Errorf("vehicle_data line answered %s", out)
	}
	if out := first.curl(t, first.curls[2]); !strings.Contains(out, `"updated_vehicles":1`) {
		t.Errorf("telemetry line answered %s", out)
	}
	if out := first.curl(t, first.curls[3]); !strings.Contains(out, `"count":3`) {
		t.Errorf("pass-through line answered %s", out)
	}
	if out := first.curl(t, "curl "+first.dashboard); !strings.Contains(out, "<title>Fleet API simulator</title>") {
		t.Errorf("the dashboard URL answered %s", out)
	}
	if n := first.handshakes(t); n != 1 {
		t.Errorf("%d handshakes for one command, want 1", n)
	}
	first.p.signal(t, os.Interrupt)
	if code := first.p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("dev mode exited %d on SIGINT:\n%s", code, first.p.stderr())
	}
	if st, err := os.Stat(filepath.Join(dir, "sessions.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("session file after shutdown: %v, %v", st, err)
	}

	second := startDev(t, dir)
	if out := second.curl(t, second.curls[0]); !strings.Contains(out, `"result":true`) {
		t.Errorf("after restart, command line answered %s", out)
	}
	if n := second.handshakes(t); n != 0 {
		t.Errorf("%d handshakes after a restart with saved sessions, want 0", n)
	}
	second.p.signal(t, os.Interrupt)
	second.p.wait(t, 20*time.Second)

	if err := os.WriteFile(filepath.Join(dir, "sessions.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	third := startDev(t, dir)
	if out := third.curl(t, third.curls[0]); !strings.Contains(out, `"result":true`) {
		t.Errorf("over a corrupt session file, command line answered %s", out)
	}
	if !strings.Contains(third.p.stderr(), "not valid JSON session data") {
		t.Errorf("no warning about the corrupt session file:\n%s", third.p.stderr())
	}
	third.p.signal(t, os.Interrupt)
	third.p.wait(t, 20*time.Second)
}

// clientCert issues a client certificate from ca.
func (ca *testCA) clientCert(t *testing.T) tls.Certificate {
	t.Helper()
	leaf, err := ca.Issue(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return leaf.TLS
}

func TestMutualTLS(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	clientCA := newTestCA(t)
	caFile := writeFile(t, filepath.Join(f.dir, "client-ca.pem"), clientCA.pem, 0o644)
	p := startProc(t, f.args("-client-ca", caFile))
	url := p.waitListening(t)

	without := f.client(t)
	if resp, err := without.Get(url + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without a certificate was served (%d)", resp.StatusCode)
	}
	stranger := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.pool, Certificates: []tls.Certificate{newTestCA(t).clientCert(t)}}}}
	defer stranger.CloseIdleConnections()
	if resp, err := stranger.Get(url + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("a client with a certificate from another CA was served (%d)", resp.StatusCode)
	}
	with := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.pool, Certificates: []tls.Certificate{clientCA.clientCert(t)}}}}
	defer with.CloseIdleConnections()
	resp, body := f.do(t, with, http.MethodPost, url+"/api/1/vehicles/"+f.vin+"/command/door_lock", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"result":true`) {
		t.Errorf("a client with a good certificate: %d %s", resp.StatusCode, body)
	}
}

func TestPlaintextOnlyOnLoopback(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	for _, host := range []string{"0.0.0.0", "192.0.2.10", "example.com", ""} {
		code, _, stderr := runProxy(t, []string{"-key-file", f.keyFile, "-plaintext", "-host", host, "-port", "0", "-upstream", f.simURL, "-upstream-ca", f.simCAFile})
		if code == 0 || !strings.Contains(stderr, "plain") {
			t.Errorf("-plaintext -host %q: exit %d, stderr %q; want a refusal that says why", host, code, stderr)
		}
	}
	p := startProc(t, []string{"-key-file", f.keyFile, "-plaintext", "-host", "127.0.0.1", "-port", "0", "-upstream", f.simURL, "-upstream-ca", f.simCAFile})
	url := p.waitListening(t)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("plaintext listen URL %q", url)
	}
	resp, body := f.do(t, http.DefaultClient, http.MethodPost, url+"/api/1/vehicles/"+f.vin+"/command/door_unlock", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"result":true`) {
		t.Errorf("plaintext command: %d %s", resp.StatusCode, body)
	}
}

func TestAllowList(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.client(t)
	denied := startProc(t, f.args("-allow", "10.0.0.0/8,192.168.0.0/16"))
	resp, body := f.do(t, c, http.MethodGet, denied.waitListening(t)+"/api/1/vehicles", nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "client_not_allowed") {
		t.Errorf("client outside -allow: %d %s", resp.StatusCode, body)
	}
	allowed := startProc(t, f.args("-allow", "10.0.0.0/8", "-allow", "127.0.0.0/8"))
	if resp, body := f.do(t, c, http.MethodGet, allowed.waitListening(t)+"/api/1/vehicles", nil); resp.StatusCode != 200 {
		t.Errorf("client inside -allow: %d %s", resp.StatusCode, body)
	}
}
