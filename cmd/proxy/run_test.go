package main

// These tests run the proxy as a user does: the test binary re-executes itself as the real
// `proxy` command (see TestMain), with flags, environment, files and signals, and talks to it
// over TLS on loopback. The Fleet API behind it is the simulator on a loopback httptest server.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/certgen"
	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// runMainEnv, when set to "1" in the environment, makes the test binary run the proxy's main
// instead of the tests. The test binary is built with the same flags as the tests (-race
// included), so every process the tests start is checked too.
const runMainEnv = "TESLAPROXY_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return // main exits; not reached
	}
	os.Exit(m.Run())
}

// proxyExe is the test binary itself, which runs main when runMainEnv is set.
func proxyExe(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// childEnv is the environment of a proxy process: the test's own, without anything that could
// change the proxy's settings or send its upstream calls elsewhere, plus extra ("K=V").
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TESLA_") || strings.HasSuffix(strings.ToUpper(k), "_PROXY") || k == "GODEBUG" || k == "GORACE" {
			continue
		}
		env = append(env, kv)
	}
	// Under -race, a process that exits 0 sleeps a second first (atexit_sleep_ms) unless told
	// not to; races are still reported and still make the exit code 66.
	gorace := "atexit_sleep_ms=0"
	if v := os.Getenv("GORACE"); v != "" {
		gorace = v + " " + gorace
	}
	return append(append(env, runMainEnv+"=1", "GORACE="+gorace), extra...)
}

// proc is a proxy process started by a test.
type proc struct {
	cmd    *exec.Cmd
	stdout *testenv.SyncBuffer
	listen chan string   // the URL of the "listening on" log line, once
	exited chan struct{} // closed when the process has exited and its stderr is read

	mu    sync.Mutex
	lines []string // stderr, line by line
	code  int      // exit code once exited (-1 when killed by a signal)
}

// startProc starts the proxy with args and env ("K=V"); it is killed when the test ends if it
// is still running.
func startProc(t *testing.T, args []string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(proxyExe(t), args...)
	cmd.Env = childEnv(env...)
	p := &proc{cmd: cmd, stdout: &testenv.SyncBuffer{}, listen: make(chan string, 1), exited: make(chan struct{})}
	cmd.Stdout = p.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			if u, ok := listenURLOf(line); ok && !sent {
				p.listen <- u
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		err := cmd.Wait()
		p.mu.Lock()
		p.code = cmd.ProcessState.ExitCode()
		if err != nil && p.code == 0 {
			p.code = -1
		}
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// logLine is the part of a zap JSON line the tests look at.
type logLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
}

func parseLogLine(line string) (logLine, bool) {
	var l logLine
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &l) != nil {
		return logLine{}, false
	}
	return l, true
}

// listenURLOf returns the URL of a "listening on …" log line.
func listenURLOf(line string) (string, bool) {
	l, ok := parseLogLine(line)
	if !ok {
		return "", false
	}
	return strings.CutPrefix(l.Msg, "listening on ")
}

// waitListening returns the URL the proxy logged, failing the test if it exits first.
func (p *proc) waitListening(t *testing.T) string {
	t.Helper()
	select {
	case u := <-p.listen:
		return u
	case <-p.exited:
		t.Fatalf("proxy exited with code %d before listening; stderr:\n%s", p.exitCode(), p.stderr())
	case <-time.After(30 * time.Second):
		t.Fatalf("proxy did not log its listen URL in 30s; stderr:\n%s", p.stderr())
	}
	return ""
}

// wait returns the exit code, failing the test if the process runs on past d.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.exitCode()
	case <-time.After(d):
		t.Fatalf("proxy still running after %v; stderr:\n%s", d, p.stderr())
		return 0
	}
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	return p.wait(t, 20*time.Second)
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

func (p *proc) exitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// logs returns the JSON log lines written so far.
func (p *proc) logs() []logLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []logLine
	for _, line := range p.lines {
		if l, ok := parseLogLine(line); ok {
			out = append(out, l)
		}
	}
	return out
}

// logged reports whether a JSON log line so far has level and a message containing msg.
func (p *proc) logged(level, msg string) bool {
	for _, l := range p.logs() {
		if l.Level == level && strings.Contains(l.Msg, msg) {
			return true
		}
	}
	return false
}

// runProxy runs the proxy to completion (at most 30 s) and returns its exit code and output.
func runProxy(t *testing.T, args []string, env ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, proxyExe(t), args...)
	cmd.Env = childEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running proxy %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("proxy %v did not finish in 30s; stderr:\n%s", args, errb.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// problemLines returns the lines of stderr that are not JSON log lines: what a fatal error
// prints for a person.
func problemLines(stderr string) []string {
	var out []string
	for line := range strings.SplitSeq(stderr, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if _, ok := parseLogLine(line); ok {
			continue
		}
		out = append(out, line)
	}
	return out
}

// --- TLS material and keys ---

// testCA is a certificate authority made for one test.
type testCA struct {
	*certgen.CA
	pem  []byte
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca, err := certgen.NewCA("proxy test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{CA: ca, pem: ca.CertPEM(), pool: ca.Pool()}
}

// leaf returns a server certificate (PEM) for localhost, 127.0.0.1 and ::1 with the given
// serial, for key's public half.
func (ca *testCA) leaf(t testing.TB, serial int64, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der)
}

func newECKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pkcs8PEM is key as a "PRIVATE KEY" PEM block.
func pkcs8PEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PRIVATE KEY", der)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile leaves the mode of an existing file alone, and the umask may have cut it.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// --- the whole setup ---

// fixture is what a proxy process needs: a signing key enrolled on a simulated vehicle, a CA
// and a server certificate, and the simulator on loopback TLS with its CA in a file.
type fixture struct {
	dir        string
	ca         *testCA
	signingKey *ecdsa.PrivateKey
	keyFile    string // command-signing key, SEC1, 0600
	certFile   string // server certificate (serial 100)
	tlsKeyFile string // its key, 0600
	sim        *fleetsim.Server
	simURL     string
	simCAFile  string
	vin        string
	token      string
}

type fixtureOptions struct {
	// arrived, when not nil, is sent the path of every request that reaches the simulator,
	// before the simulator looks at it.
	arrived chan<- string
}

func newFixture(t *testing.T, o fixtureOptions) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), ca: newTestCA(t), signingKey: newECKey(t, elliptic.P256())}
	f.keyFile = writeFile(t, filepath.Join(f.dir, "command.key"), certgen.KeyPEM(f.signingKey), 0o600)
	tlsKey := newECKey(t, elliptic.P256())
	f.certFile = writeFile(t, filepath.Join(f.dir, "tls-cert.pem"), f.ca.leaf(t, 100, tlsKey), 0o644)
	f.tlsKeyFile = writeFile(t, filepath.Join(f.dir, "tls-key.pem"), certgen.KeyPEM(tlsKey), 0o600)

	pub, err := f.signingKey.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	f.sim = fleetsim.New(fleetsim.Options{TrustedKeys: []*ecdh.PublicKey{pub}})
	f.vin = fleetsim.NewTestVIN(1)
	f.sim.AddVehicle(f.vin, pub)
	var h http.Handler = f.sim
	if o.arrived != nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			o.arrived <- r.URL.Path
			f.sim.ServeHTTP(w, r)
		})
	}
	ts := httptest.NewUnstartedServer(h)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	f.simURL = ts.URL
	f.simCAFile = writeFile(t, filepath.Join(f.dir, "sim-ca.pem"), pemBlock("CERTIFICATE", ts.Certificate().Raw), 0o644)
	f.token = testenv.Token(t, map[string]any{"sub": "test-user", "aud": []any{"https://fleet-api.prd.na.vn.cloud.tesla.com"}, "ou_code": "NA"})
	return f
}

// args are the flags of a proxy on 127.0.0.1, a free port, in front of the simulator, followed
// by extra.
func (f *fixture) args(extra ...string) []string {
	return append([]string{
		"-key-file", f.keyFile, "-cert", f.certFile, "-tls-key", f.tlsKeyFile,
		"-host", "127.0.0.1", "-port", "0",
		"-upstream", f.simURL, "-upstream-ca", f.simCAFile,
	}, extra...)
}

// client trusts the fixture's CA.
func (f *fixture) client(t *testing.T) *http.Client {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.pool}}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// do sends a request with the fixture's bearer token and returns the answer with its body.
func (f *fixture) do(t *testing.T, c *http.Client, method, u string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// hostPort returns the host:port of a listen URL.
func hostPort(t *testing.T, listenURL string) string {
	t.Helper()
	u, err := url.Parse(listenURL)
	if err != nil || u.Host == "" {
		t.Fatalf("listen URL %q: %v", listenURL, err)
	}
	return u.Host
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// --- the tests ---

// TestStartsAndServesTLS: -port 0 logs the real URL; /health answers over TLS 1.2+ with a
// certificate the test CA signed; a TLS 1.1 client is refused.
func TestStartsAndServesTLS(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	args := f.args()
	// Default -host (localhost): the contract says the line shows 127.0.0.1.
	for i := range args {
		if args[i] == "-host" {
			args = append(args[:i:i], args[i+2:]...)
			break
		}
	}
	p := startProc(t, args)
	u := p.waitListening(t)
	if !strings.HasPrefix(u, "https://127.0.0.1:") || strings.HasSuffix(u, ":0") {
		t.Fatalf("listen URL %q, want https://127.0.0.1:<port>", u)
	}
	c := f.client(t)
	resp, err := c.Get(u + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "OK" {
		t.Errorf("GET /health = %d %q, want 200 OK", resp.StatusCode, body)
	}

	addr := hostPort(t, u)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	old, err := tls.DialWithDialer(dialer, "tcp", addr, &tls.Config{RootCAs: f.ca.pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}) //nolint:gosec // G402: an old client, which the proxy must refuse
	if err == nil {
		v := old.ConnectionState().Version
		old.Close()
		t.Errorf("a TLS 1.1 client was accepted (version %x)", v)
	}
	conn, err := tls.DialWithDialer(dialer, "tcp", addr, &tls.Config{RootCAs: f.ca.pool, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}) //nolint:gosec // G402: pins the lowest version the proxy must accept
	if err != nil {
		t.Fatalf("TLS 1.2 client refused: %v", err)
	}
	if v := conn.ConnectionState().Version; v != tls.VersionTLS12 {
		t.Errorf("negotiated %x, want TLS 1.2", v)
	}
	conn.Close()

	for _, l := range p.logs() {
		if l.Level == "warn" || l.Level == "error" {
			t.Errorf("unexpected %s at start: %q", l.Level, l.Msg)
		}
	}
	c.CloseIdleConnections()
	if code := p.stop(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr())
	}
}

// TestPassThroughAndSignedCommand drives the running binary against the simulator.
func TestPassThroughAndSignedCommand(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	p := startProc(t, f.args())
	u := p.waitListening(t)
	c := f.client(t)

	resp, body := f.do(t, c, http.MethodGet, u+"/api/1/vehicles", nil)
	var list struct {
		Response []struct {
			VIN string `json:"vin"`
		} `json:"response"`
		Count int `json:"count"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &list) != nil || list.Count != 1 || len(list.Response) != 1 || list.Response[0].VIN != f.vin {
		t.Errorf("GET /api/1/vehicles = %d %s", resp.StatusCode, body)
	}

	resp, body = f.do(t, c, http.MethodPost, u+"/api/1/vehicles/"+f.vin+"/command/door_lock", []byte("{}"))
	var answer struct {
		Response struct {
			Result bool   `json:"result"`
			Reason string `json:"reason"`
		} `json:"response"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &answer) != nil || !answer.Response.Result {
		t.Errorf("door_lock = %d %s, want 200 result true", resp.StatusCode, body)
	}
	ex := f.sim.Executions(f.vin)
	if len(ex) != 1 || ex[0].Action != "RKE_ACTION_LOCK" {
		t.Errorf("executions = %+v, want one RKE_ACTION_LOCK", ex)
	}
	c.CloseIdleConnections()
	if code := p.stop(t); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr())
	}
}

// expectFatal runs the proxy and checks it fails (never exit 0) with exactly one line for a
// person on stderr, which contains every string in want. Key material must not be printed.
func expectFatal(t *testing.T, args []string, want ...string) {
	t.Helper()
	code, stdout, stderr := runProxy(t, args)
	if code == 0 {
		t.Errorf("exit code 0, want non-zero; stdout %q stderr %q", stdout, stderr)
	}
	lines := problemLines(stderr)
	t.Logf("exit %d: %s", code, strings.Join(lines, " | "))
	if len(lines) != 1 {
		t.Errorf("stderr has %d lines for a person, want exactly 1:\n%s", len(lines), stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr does not mention %q:\n%s", w, stderr)
		}
	}
	if strings.Contains(stderr, "PRIVATE KEY-----") || strings.Contains(stdout, "PRIVATE KEY-----") {
		t.Errorf("output contains key material")
	}
	for _, l := range problemLines(stderr) {
		if strings.Contains(l, "listening on") {
			t.Errorf("proxy started listening: %q", l)
		}
	}
}

// TestRefusesSigningKeyAsTLSKey: the TLS key must not be the command-signing key, whether it is
// the same file or the same key in another file.
func TestRefusesSigningKeyAsTLSKey(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	// A certificate for the signing key itself, so that only the same-key check stands between
	// this setup and a running proxy.
	certForSigningKey := writeFile(t, filepath.Join(f.dir, "signing-cert.pem"), f.ca.leaf(t, 7, f.signingKey), 0o644)
	copySEC1 := writeFile(t, filepath.Join(t.TempDir(), "tls.key"), certgen.KeyPEM(f.signingKey), 0o600)
	copyPKCS8 := writeFile(t, filepath.Join(t.TempDir(), "tls-pkcs8.key"), pkcs8PEM(t, f.signingKey), 0o600)
	for _, tc := range []struct{ name, tlsKey string }{
		{"same file", f.keyFile},
		{"same file, other spelling", filepath.Join(filepath.Dir(f.keyFile), ".", filepath.Base(f.keyFile))},
		{"copy under another path", copySEC1},
		{"copy as PKCS8", copyPKCS8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectFatal(t, f.args("-cert", certForSigningKey, "-tls-key", tc.tlsKey), "command-signing key")
		})
	}
}

// TestFatalStartErrors: every broken file stops the proxy with a non-zero code and one line
// that names the problem (the reference proxy exits 0 silently on a bad cert path).
func TestFatalStartErrors(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := writeFile(t, filepath.Join(dir, "not-pem.pem"), []byte("this is not a certificate\n"), 0o644)
	otherKey := writeFile(t, filepath.Join(dir, "other-tls.key"), certgen.KeyPEM(newECKey(t, elliptic.P256())), 0o600)
	p384 := writeFile(t, filepath.Join(dir, "p384.key"), certgen.KeyPEM(newECKey(t, elliptic.P384())), 0o600)
	garbageKey := writeFile(t, filepath.Join(dir, "garbage.key"), []byte("not a key\n"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"cert path missing", f.args("-cert", missing), []string{"TLS certificate", "missing.pem"}},
		{"cert not PEM", f.args("-cert", notPEM), []string{"not-pem.pem", "PEM"}},
		{"TLS key does not match cert", f.args("-tls-key", otherKey), []string{"other-tls.key", "does not match"}},
		{"TLS key missing", f.args("-tls-key", missing), []string{"TLS key", "missing.pem"}},
		{"signing key missing", f.args("-key-file", missing), []string{"command-signing key", "missing.pem"}},
		{"signing key not P-256", f.args("-key-file", p384), []string{"command-signing key", "P-256"}},
		{"signing key not PEM", f.args("-key-file", garbageKey), []string{"command-signing key", "garbage.key"}},
		{"upstream CA missing", f.args("-upstream-ca", missing), []string{"missing.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectFatal(t, tc.args, tc.want...)
		})
	}
}

// TestCheckConfig: -check-config exits 0 for a good configuration and 1 for a bad one, listing
// every problem.
func TestCheckConfig(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	t.Run("good", func(t *testing.T) {
		code, stdout, stderr := runProxy(t, f.args("-check-config"))
		if code != 0 || !strings.Contains(stdout, "valid") {
			t.Errorf("code %d stdout %q stderr %q, want 0 and a confirmation", code, stdout, stderr)
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		code, _, stderr := runProxy(t, []string{"-check-config", "-tls-key", f.tlsKeyFile,
			"-port", "70000", "-timeout", "0s", "-upstream", "http://fleet.example.com", "-cache-size", "0"})
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		for _, flag := range []string{"-key-file", "-cert", "-port", "-timeout", "-upstream", "-cache-size"} {
			if !strings.Contains(stderr, flag+":") {
				t.Errorf("stderr does not list the problem with %s:\n%s", flag, stderr)
			}
		}
	})
	t.Run("bad file", func(t *testing.T) {
		yaml := writeFile(t, filepath.Join(t.TempDir(), "proxy.yaml"), []byte("port: many\ntimeout: 10\nkey_fil: x\n"), 0o644)
		code, _, stderr := runProxy(t, f.args("-check-config", "-config", yaml))
		if code != 1 {
			t.Errorf("exit code %d, want 1 (a bad configuration, not a usage error)", code)
		}
		for _, w := range []string{"line 1", "line 2", "line 3", "key_file"} {
			if !strings.Contains(stderr, w) {
				t.Errorf("stderr does not mention %q:\n%s", w, stderr)
			}
		}
	})
}

// TestPortPrecedence: -port beats TESLA_HTTP_PROXY_PORT beats the YAML file's port.
func TestPortPrecedence(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	flagPort, envPort, filePort := freePort(t), freePort(t), freePort(t)
	yaml := writeFile(t, filepath.Join(t.TempDir(), "proxy.yaml"), fmt.Appendf(nil, "port: %d\nhost: 127.0.0.1\n", filePort), 0o644)
	base := []string{"-key-file", f.keyFile, "-cert", f.certFile, "-tls-key", f.tlsKeyFile,
		"-upstream", f.simURL, "-upstream-ca", f.simCAFile, "-config", yaml}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want int
	}{
		{"flag beats env and file", append(base[:len(base):len(base)], "-port", strconv.Itoa(flagPort)), []string{"TESLA_HTTP_PROXY_PORT=" + strconv.Itoa(envPort)}, flagPort},
		{"env beats file", base, []string{"TESLA_HTTP_PROXY_PORT=" + strconv.Itoa(envPort)}, envPort},
		{"file", base, nil, filePort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, tc.args, tc.env...)
			u := p.waitListening(t)
			if want := fmt.Sprintf("https://127.0.0.1:%d", tc.want); u != want {
				t.Errorf("listening on %q, want %q", u, want)
			}
			if code := p.stop(t); code != 0 {
				t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr())
			}
		})
	}
}

// TestGracefulShutdown: SIGTERM stops new connections at once, lets the request in flight
// finish with its answer, then exits 0.
func TestGracefulShutdown(t *testing.T) {
	arrived := make(chan string, 8)
	f := newFixture(t, fixtureOptions{arrived: arrived})
	f.sim.SetFault("", fleetsim.Fault{Delay: 1500 * time.Millisecond})
	p := startProc(t, f.args())
	u := p.waitListening(t)
	c := f.client(t)

	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, u+"/api/1/vehicles/"+f.vin+"/vehicle_data", nil)
		req.Header.Set("Authorization", "Bearer "+f.token)
		resp, err := c.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, err: err}
	}()
	select {
	case <-arrived:
	case r := <-done:
		t.Fatalf("request finished before reaching the simulator: %+v", r)
	case <-time.After(10 * time.Second):
		t.Fatal("request did not reach the simulator")
	}
	p.signal(t, syscall.SIGTERM)

	// From SIGTERM until the in-flight request is answered, a new connection must be refused.
	addr := hostPort(t, u)
	var res *result
	var lastErr error
	for refused := false; !refused && res == nil; {
		select {
		case r := <-done:
			res = &r
			t.Errorf("the in-flight request was answered while new connections were still accepted (last dial error: %v)", lastErr)
			continue
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		switch {
		case err == nil:
			conn.Close()
		case errors.Is(err, syscall.ECONNREFUSED):
			refused = true
			continue
		default:
			lastErr = err
		}
		time.Sleep(10 * time.Millisecond)
	}
	if res == nil {
		select {
		case r := <-done:
			res = &r
		case <-time.After(15 * time.Second):
			t.Fatal("in-flight request did not finish")
		}
	}
	if res.err != nil || res.status != http.StatusOK {
		t.Errorf("in-flight request: status %d err %v, want 200", res.status, res.err)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr())
	}
}

// servedSerial returns the serial number of the certificate a new TLS connection sees.
func servedSerial(t *testing.T, addr string, pool *x509.CertPool) int64 {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// waitSerial handshakes until the served certificate has serial want, or d has passed.
func waitSerial(t *testing.T, addr string, pool *x509.CertPool, want int64, d time.Duration) int64 {
	t.Helper()
	var got int64
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = servedSerial(t, addr, pool); got == want {
			return got
		}
	}
	return got
}

// TestCertificateReload: a renewed certificate is served after SIGHUP, and without a signal
// once the files' modification times change.
func TestCertificateReload(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	p := startProc(t, f.args())
	addr := hostPort(t, p.waitListening(t))
	if got := servedSerial(t, addr, f.ca.pool); got != 100 {
		t.Fatalf("serial %d at start, want 100", got)
	}
	certSt, err := os.Stat(f.certFile)
	if err != nil {
		t.Fatal(err)
	}
	keySt, err := os.Stat(f.tlsKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	replace := func(serial int64, mtime time.Time) {
		t.Helper()
		k := newECKey(t, elliptic.P256())
		writeFile(t, f.certFile, f.ca.leaf(t, serial, k), 0o644)
		writeFile(t, f.tlsKeyFile, certgen.KeyPEM(k), 0o600)
		for _, path := range []string{f.certFile, f.tlsKeyFile} {
			if err := os.Chtimes(path, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("SIGHUP", func(t *testing.T) {
		// New files under the old modification times: only the signal can make the proxy look.
		replace(200, certSt.ModTime())
		if keySt.ModTime() != certSt.ModTime() {
			if err := os.Chtimes(f.tlsKeyFile, keySt.ModTime(), keySt.ModTime()); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(1100 * time.Millisecond) // past the reloader's once-a-second check
		if got := servedSerial(t, addr, f.ca.pool); got != 100 {
			t.Fatalf("serial %d before SIGHUP with unchanged mtimes, want 100", got)
		}
		p.signal(t, syscall.SIGHUP)
		if got := waitSerial(t, addr, f.ca.pool, 200, 5*time.Second); got != 200 {
			t.Fatalf("serial %d 5s after SIGHUP, want 200; stderr:\n%s", got, p.stderr())
		}
	})

	t.Run("mtime", func(t *testing.T) {
		replace(300, time.Now().Add(time.Minute))
		if got := waitSerial(t, addr, f.ca.pool, 300, 4*time.Second); got != 300 {
			t.Fatalf("serial %d 4s after the files changed, want 300", got)
		}
	})

	t.Run("broken renewal keeps the old certificate", func(t *testing.T) {
		writeFile(t, f.certFile, []byte("half-written\n"), 0o644)
		p.signal(t, syscall.SIGHUP)
		time.Sleep(1100 * time.Millisecond)
		if got := servedSerial(t, addr, f.ca.pool); got != 300 {
			t.Errorf("serial %d after a failed reload, want 300 still", got)
		}
		if !p.logged("error", "reload failed") {
			t.Errorf("no error logged for the failed reload; stderr:\n%s", p.stderr())
		}
	})

	if code := p.stop(t); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr())
	}
}

// TestWarnsAboutReadableKey: a command-signing key other users can read is logged as a warning
// that says how to fix it.
func TestWarnsAboutReadableKey(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	if err := os.Chmod(f.keyFile, 0o644); err != nil { //nolint:gosec // G302: the readable key this test is about
		t.Fatal(err)
	}
	p := startProc(t, f.args())
	p.waitListening(t)
	if !p.logged("warn", "chmod 600") {
		t.Errorf("no warning mentioning chmod 600; stderr:\n%s", p.stderr())
	}
	if code := p.stop(t); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestSIGHUPRightAfterListening: a reload signal sent as soon as the proxy logs that it listens
// (a deploy or certificate-renewal hook can do that) must not end the process. Before the fix
// the SIGHUP handler was installed after the listen line, and about one start in five died.
func TestSIGHUPRightAfterListening(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.client(t)
	for i := range 5 {
		p := startProc(t, f.args())
		u := p.waitListening(t)
		p.signal(t, syscall.SIGHUP)
		resp, err := c.Get(u + "/health")
		if err == nil {
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			select {
			case <-p.exited:
				t.Fatalf("start %d: SIGHUP right after the listen line ended the proxy (%s)", i+1, p.cmd.ProcessState)
			case <-time.After(5 * time.Second):
				t.Fatalf("start %d: GET /health after SIGHUP: %v", i+1, err)
			}
		}
		c.CloseIdleConnections()
		if code := p.stop(t); code != 0 {
			t.Fatalf("start %d: exit code %d, want 0", i+1, code)
		}
	}
}
