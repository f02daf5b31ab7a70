package main

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/config"
	"github.com/teslaproxy/proxy/internal/certgen"
	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/server"
)

// devLatency is the simulator's answer time in dev mode, so an app developer sees the timing of
// the real Fleet API rather than a loopback's microseconds: reads in about 200 ms, commands (and
// session handshakes) in about 400 ms as they wait for the car, wake-up calls in about a second.
// devLatencyEnv, when set, replaces it (fleetsim.ParseLatency's syntax; "0" for none).
const (
	devLatency    = "data=200ms±50ms,commands=400ms±100ms,wakes=1s±200ms,other=200ms±50ms"
	devLatencyEnv = "TESLA_HTTP_PROXY_DEV_LATENCY"
	// devScenarioEnv names a YAML scenario (fleetsim.Scenario) that replaces the dev fleet.
	devScenarioEnv = "TESLA_HTTP_PROXY_DEV_SCENARIO"
)

// devScenario is the dev mode's fleet: a parked car, one charging, one asleep, all Model 3s
// (their VINs say so). Idle cars fall asleep after 15 minutes and wake_up takes 10 seconds, as
// real cars roughly do.
func devScenario() fleetsim.Scenario {
	f := func(x float64) *float64 { return &x }
	i := func(x int32) *int32 { return &x }
	no := false
	return fleetsim.Scenario{
		SleepAfter: 15 * time.Minute,
		WakeTime:   10 * time.Second,
		Vehicles: []fleetsim.ScenarioVehicle{
			{VIN: fleetsim.NewTestVIN(0), Name: "Midnight"},
			{VIN: fleetsim.NewTestVIN(1), Name: "Daily Driver", Battery: f(41), ChargeLimit: i(80), Charging: true, Odometer: f(23_412.8),
				Location: &fleetsim.ScenarioLocation{Lat: 37.3947, Lon: -122.1503, Heading: 270}},
			{VIN: fleetsim.NewTestVIN(2), Name: "Weekender", Battery: f(88), PluggedIn: &no, Asleep: true, OutsideTemp: f(12), InsideTemp: f(12),
				Location: &fleetsim.ScenarioLocation{Lat: 37.8080, Lon: -122.4177, Heading: 45}},
		},
	}
}

// loadDevScenario returns the dev fleet: the file TESLA_HTTP_PROXY_DEV_SCENARIO names, or
// devScenario.
func loadDevScenario() (fleetsim.Scenario, error) {
	file, ok := os.LookupEnv(devScenarioEnv)
	if !ok || file == "" {
		return devScenario(), nil
	}
	fh, err := os.Open(file)
	if err != nil {
		return fleetsim.Scenario{}, fmt.Errorf("%s: %w", devScenarioEnv, err)
	}
	defer fh.Close()
	sc, err := fleetsim.ParseScenario(fh)
	if err == nil && len(sc.Vehicles) == 0 {
		err = errors.New("the scenario lists no vehicles")
	}
	if err != nil {
		return sc, fmt.Errorf("%s %s: %w", devScenarioEnv, file, err)
	}
	return sc, nil
}

// Files the dev mode keeps in its folder (git ignores it). They are made once and reused, so a
// CA trusted once stays trusted.
const (
	devCAFile      = "ca.pem"
	devCAKeyFile   = "ca-key.pem"
	devCertFile    = "tls-cert.pem"
	devTLSKeyFile  = "tls-key.pem"
	devCommandKey  = "command-key.pem"
	devSessionFile = "sessions.json"
	devSimFile     = "simulator.json"
)

// prepareDev makes cfg runnable with nothing else: it creates (once) a local CA, a TLS certificate
// for localhost and a command key in cfg.DevDir, starts the Fleet API simulator on loopback with
// that key enrolled on a few vehicles, and points cfg at all of it. The simulator stops when ctx
// ends. printReady prints what a person needs once the proxy listens.
func prepareDev(ctx context.Context, cfg config.Config, log *zap.Logger) (config.Config, func(url string, w io.Writer), error) {
	dir := cfg.DevDir
	path := func(name string) string { return filepath.Join(dir, name) }
	pub, err := devFiles(dir)
	if err != nil {
		return cfg, nil, err
	}
	sim, err := startDevSimulator(ctx, dir, pub, log)
	if err != nil {
		return cfg, nil, err
	}

	cfg.KeyFile = path(devCommandKey)
	cfg.KeyName = "" // dev mode signs with its own key, never one from a keyring
	cfg.CertFile = path(devCertFile)
	cfg.TLSKeyFile = path(devTLSKeyFile)
	cfg.Upstream = sim.url
	cfg.UpstreamCA = path(devCAFile)
	if cfg.SessionCache == "" {
		cfg.SessionCache = path(devSessionFile)
	}
	caPath, _ := filepath.Abs(path(devCAFile))
	printReady := func(url string, w io.Writer) { printDevReady(w, url, cfg.KeyFile, caPath, sim) }
	return cfg, printReady, nil
}

// devFiles creates in dir, where they are missing, the local CA, the proxy's TLS certificate and
// key, and the command key, and returns the command key's public half.
func devFiles(dir string) (*ecdh.PublicKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev mode: %w", err)
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	ca, err := devCA(path(devCAFile), path(devCAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("dev mode: local CA: %w", err)
	}
	if err := devLeaf(path(devCertFile), path(devTLSKeyFile), ca); err != nil {
		return nil, fmt.Errorf("dev mode: TLS certificate: %w", err)
	}
	if _, err := os.Stat(path(devCommandKey)); errors.Is(err, fs.ErrNotExist) {
		if _, err := writeNewKey(path(devCommandKey)); err != nil {
			return nil, fmt.Errorf("dev mode: command key: %w", err)
		}
	}
	key, err := protocol.LoadPrivateKey(path(devCommandKey))
	if err != nil {
		return nil, fmt.Errorf("dev mode: command key %s: %w", path(devCommandKey), err)
	}
	return ecdh.P256().NewPublicKey(key.PublicBytes())
}

// devSim is the running dev simulator, as printDevReady describes it.
type devSim struct {
	url       string
	dashboard string // the dashboard's URL, plain HTTP on loopback
	vins      []string
	latency   string // the simulated Fleet API latency, as printed
	sleep     string // how long an idle car stays awake, as printed
	wake      string // how long wake_up takes, as printed
}

// startDevSimulator serves the Fleet API simulator on loopback over TLS (with the dev
// certificate in dir), its vehicles enrolled with pub, and its dashboard over plain HTTP, until
// ctx ends.
//
// The simulator plays the Fleet API and the vehicles. Its vehicles keep their keys, epochs and
// clocks across restarts (like real cars, which do not reboot when the proxy does), so saved
// sessions stay valid.
func startDevSimulator(ctx context.Context, dir string, pub *ecdh.PublicKey, log *zap.Logger) (devSim, error) {
	path := func(name string) string { return filepath.Join(dir, name) }
	ident, err := devSimIdentity(path(devSimFile))
	if err != nil {
		return devSim{}, fmt.Errorf("dev mode: simulator identity: %w", err)
	}
	sc, opts, err := devSimOptions(fleetsim.Options{Logger: log.Named("sim"), TrustedKeys: []*ecdh.PublicKey{pub}, Seed: ident.Seed, BootTime: ident.Boot})
	if err != nil {
		return devSim{}, err
	}
	sim := fleetsim.New(opts)
	vins := sc.Apply(sim, pub)
	simCert, err := server.LoadKeyPair(path(devCertFile), path(devTLSKeyFile))
	if err != nil {
		return devSim{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return devSim{}, fmt.Errorf("dev mode: simulator: %w", err)
	}
	simSrv := &http.Server{
		Handler:           sim,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*simCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("sim").WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
	go func() { _ = simSrv.ServeTLS(ln, "", "") }()
	go func() {
		<-ctx.Done()
		_ = simSrv.Close()
	}()
	dashURL, err := serveDashboard(ctx, sim, log)
	if err != nil {
		return devSim{}, fmt.Errorf("dev mode: dashboard: %w", err)
	}
	return devSim{
		url: "https://" + ln.Addr().String(), dashboard: dashURL, vins: vins, latency: fmt.Sprint(opts.Latency),
		sleep: durationText(opts.SleepAfter, "never"), wake: durationText(opts.WakeTime, "no time"),
	}, nil
}

// devSimOptions returns the dev fleet and the simulator's options: the scenario's sleep and wake
// times, and the dev latency unless the scenario or TESLA_HTTP_PROXY_DEV_LATENCY sets another.
func devSimOptions(base fleetsim.Options) (fleetsim.Scenario, fleetsim.Options, error) {
	sc, err := loadDevScenario()
	if err != nil {
		return sc, base, fmt.Errorf("dev mode: %w", err)
	}
	opts, err := sc.Options(base)
	if err != nil {
		return sc, opts, fmt.Errorf("dev mode: %w", err)
	}
	latencySetting := devLatency
	if sc.Latency != "" {
		latencySetting = sc.Latency
	}
	if v, ok := os.LookupEnv(devLatencyEnv); ok {
		latencySetting = v
	}
	if opts.Latency, err = fleetsim.ParseLatency(latencySetting); err != nil {
		return sc, opts, fmt.Errorf("dev mode: %s: %w", devLatencyEnv, err)
	}
	return sc, opts, nil
}

// printDevReady writes what a person needs to try the dev proxy listening at url: the CA to
// trust, a token, the dashboard, and a curl line for each kind of request.
func printDevReady(w io.Writer, url, keyFile, caPath string, sim devSim) {
	url = strings.Replace(url, "://127.0.0.1:", "://localhost:", 1)
	vin := sim.vins[0]
	curl := "curl --cacert " + shellQuote(caPath) + ` -H "Authorization: Bearer $TOKEN"`
	fmt.Fprintf(w, `
Dev mode: the proxy signs with %s and talks to a simulated Fleet API at %s
(vehicles %s; simulator counters at %s/sim/stats).
The simulator answers with the Fleet API's typical latency: %s
(set %s, such as 0 or commands=1s, to change it). Idle cars fall asleep after %s;
wake_up takes %s (%s=FILE replaces the fleet with a YAML scenario).

Dashboard (the cars, their commands, billed calls; sleep, wake, faults): %s

Trust this CA in your app: %s

export TOKEN=%s

A vehicle command:
  %s -X POST %s/api/1/vehicles/%s/command/door_lock

What the car says now (battery, lock, climate, location):
  %s '%s/api/1/vehicles/%s/vehicle_data?endpoints=charge_state;climate_state;vehicle_state;location_data'

A fleet telemetry config (signed by the proxy):
  %s -X POST %s/api/1/vehicles/fleet_telemetry_config -H 'Content-Type: application/json' -d '{"vins":["%s"],"config":{"hostname":"telemetry.example.com","port":4443,"fields":{"BatteryLevel":{"interval_seconds":60}}}}'

A pass-through call:
  %s %s/api/1/vehicles

`, keyFile, sim.url, strings.Join(sim.vins, ", "), sim.url, sim.latency, devLatencyEnv, sim.sleep, sim.wake, devScenarioEnv,
		sim.dashboard, caPath, devToken(), curl, url, vin, curl, url, vin, curl, url, vin, curl, url)
}

// durationText prints d, or none when it is zero.
func durationText(d time.Duration, none string) string {
	if d <= 0 {
		return none
	}
	return d.String()
}

// serveDashboard serves the simulator's /sim/ pages over plain HTTP on a loopback port, so a
// browser opens the dashboard without trusting the dev CA. It serves nothing else (the Fleet
// API stays behind TLS) and stops when ctx ends. It returns the dashboard's URL.
func serveDashboard(ctx context.Context, sim *fleetsim.Server, log *zap.Logger) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.Handle("/sim/", sim)
	mux.Handle("/{$}", http.RedirectHandler("/sim/", http.StatusFound))
	srv := &http.Server{
		Handler: mux,
		// The event stream stays open, so there is no WriteTimeout; headers must come promptly.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(log.Named("dashboard").WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return "http://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/sim/", nil
}

// simIdentity is what makes the dev simulator's vehicles the same from one run to the next.
type simIdentity struct {
	Seed []byte    `json:"seed"`
	Boot time.Time `json:"boot"`
}

// devSimIdentity loads the simulator identity, creating it on first use.
func devSimIdentity(file string) (simIdentity, error) {
	var id simIdentity
	if b, err := os.ReadFile(file); err == nil && json.Unmarshal(b, &id) == nil && len(id.Seed) == 32 && !id.Boot.IsZero() {
		return id, nil
	}
	id.Seed = make([]byte, 32)
	if _, err := rand.Read(id.Seed); err != nil {
		return id, err
	}
	id.Boot = time.Now().Truncate(time.Second)
	b, err := json.Marshal(id)
	if err != nil {
		return id, err
	}
	return id, os.WriteFile(file, b, 0o600)
}

// devToken is a JWT-shaped sample bearer token for the simulator. It is not signed: the proxy
// never verifies tokens (the Fleet API does), and the simulator does not either.
func devToken() string {
	claims, _ := json.Marshal(map[string]any{
		"iss": "https://auth.tesla.com/oauth2/v3/nts", "sub": "dev-user", "ou_code": "NA",
		"aud": []string{"https://fleet-api.prd.na.vn.cloud.tesla.com", "https://auth.tesla.com/oauth2/v3/userinfo"},
		"scp": []string{"openid", "offline_access", "vehicle_device_data", "vehicle_cmds", "vehicle_charging_cmds"},
		"exp": time.Now().Add(365 * 24 * time.Hour).Unix(),
	})
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(claims) + ".dev"
}

func shellQuote(s string) string {
	if !strings.ContainsAny(s, " '\"$`\\") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// devCA loads the dev CA, creating it on first use.
func devCA(certFile, keyFile string) (*certgen.CA, error) {
	if ca, err := certgen.LoadCA(certFile, keyFile); err == nil {
		return ca, nil
	}
	ca, err := certgen.NewCA("tesla-proxy dev CA", 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, ca.KeyPEM(), 0o600); err != nil {
		return nil, err
	}
	return ca, os.WriteFile(certFile, ca.CertPEM(), 0o644) //nolint:gosec // G306: a certificate is public; clients must be able to read it
}

// devLeaf makes the TLS certificate for localhost, 127.0.0.1 and ::1, signed by the dev CA,
// unless one valid for at least another week is already there.
func devLeaf(certFile, keyFile string, ca *certgen.CA) error {
	if c, err := server.LoadKeyPair(certFile, keyFile); err == nil && c.Leaf != nil &&
		time.Until(c.Leaf.NotAfter) > 7*24*time.Hour && c.Leaf.CheckSignatureFrom(ca.Cert) == nil {
		return nil
	}
	leaf, err := ca.Issue(397 * 24 * time.Hour)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, leaf.KeyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, leaf.CertPEM, 0o644) //nolint:gosec // G306: a certificate is public
}
