package main

import (
	"context"
	"crypto/ecdh"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/teslaproxy/proxy/internal/fleetsim"
)

// simulateUsage heads "proxy simulate -h".
const simulateUsage = `Usage: proxy simulate [flags]

Runs the Fleet API and vehicle simulator (internal/fleetsim) on its own, for trying the proxy or
another client without a car. It serves the simulated Fleet API under /api/1/ (vehicle_data and
the other read routes answer from stateful cars), a dashboard at /sim/, and its control endpoints
under /sim/ (GET /sim/stats, POST /sim/faults, POST /sim/reboot, …).

-scenario FILE describes the fleet in YAML (models, firmware, battery, location, asleep, legacy,
faults; see internal/fleetsim/scenario.go); -vins and the other flags describe it on the command
line. A flag given explicitly wins over the scenario.

Flags:
`

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// simulateFlags are the parsed flags of "proxy simulate".
type simulateFlags struct {
	listen      string
	allowRemote bool
	enroll      stringList
	vins        string
	cert, key   string
	legacy      string
	asleep      string
	latency     string
	scenario    string
	sleepAfter  time.Duration
	wakeTime    time.Duration
	echo        bool
	verbose     bool
	// set holds the names of the flags given on the command line.
	set map[string]bool
}

// Defaults of "proxy simulate": cars sleep and wake about as real ones do.
const (
	simSleepAfter = 15 * time.Minute
	simWakeTime   = 10 * time.Second
)

// runSimulate runs "proxy simulate" until ctx ends. It prints the listen URL and the VINs on
// stdout and returns 0 after a clean shutdown, 1 on a runtime failure, 2 on a usage error.
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, code, ok := parseSimulateFlags(args, stderr)
	if !ok {
		return code
	}
	log := newSimLogger(f.verbose, stderr)
	defer func() { _ = log.Sync() }()
	sim, vins, tlsConfig, err := buildSimulator(f, log)
	if err != nil {
		fmt.Fprintf(stderr, "proxy simulate: %v\n", err)
		return 2
	}
	ln, code := listenSimulate(ctx, f, stderr)
	if ln == nil {
		return code
	}

	srv := &http.Server{
		Handler: sim,
		// Headers must arrive promptly; bodies may not: the echo route streams uploads of any
		// size and faults inject delays, so there is no ReadTimeout or WriteTimeout.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         tlsConfig,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	srv.RegisterOnShutdown(sim.StopEvents) // dashboards' event streams would hold Shutdown up
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "simulator listening on %s://%s\n", scheme, ln.Addr())
	fmt.Fprintf(stdout, "vins: %s\n", strings.Join(vins, ","))
	fmt.Fprintf(stdout, "dashboard: %s://%s/sim/\n", scheme, ln.Addr())
	if l := sim.Latency(); !l.IsZero() {
		fmt.Fprintf(stdout, "latency: %s\n", l)
	}
	return serveSimulate(ctx, srv, ln, stderr)
}

// parseSimulateFlags parses the simulate subcommand's flags. When ok is false the caller
// returns code: 0 after -help, 2 for a usage error (already reported on stderr).
func parseSimulateFlags(args []string, stderr io.Writer) (f simulateFlags, code int, ok bool) {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, simulateUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.listen, "listen", "127.0.0.1:0", "`address` to listen on; port 0 picks a free one")
	fs.BoolVar(&f.allowRemote, "allow-remote", false, "allow -listen on a non-loopback address")
	fs.Var(&f.enroll, "enroll", "public or private key `file` (PEM, or a raw/hex P-256 point) to enroll on every vehicle and trust for telemetry JWS; repeatable")
	fs.StringVar(&f.vins, "vins", "", "comma-separated `VINs` to simulate (default: three generated VINs)")
	fs.StringVar(&f.cert, "cert", "", "TLS certificate `file` (serve HTTPS; needs -key)")
	fs.StringVar(&f.key, "key", "", "TLS private key `file` (needs -cert)")
	fs.StringVar(&f.legacy, "legacy", "", "comma-separated `VINs` of vehicles without the Vehicle Command Protocol (422 on signed_command)")
	fs.StringVar(&f.asleep, "asleep", "", "comma-separated `VINs` of vehicles that start asleep (wake_up wakes them)")
	fs.StringVar(&f.latency, "latency", "", "how long Fleet API answers take: one `delay` for every route (300ms, 300ms±50ms) or per class, "+
		"such as commands=300ms,data=200ms±50ms,wakes=1s,other=100ms (classes: data, commands, wakes, other, all); default none")
	fs.StringVar(&f.scenario, "scenario", "", "YAML `file` describing the vehicles (model, firmware, battery, location, asleep, legacy, faults), sleep_after, wake_time and latency")
	fs.DurationVar(&f.sleepAfter, "sleep-after", simSleepAfter, "idle `time` after which a car falls asleep (0: never)")
	fs.DurationVar(&f.wakeTime, "wake-time", simWakeTime, "how long wake_up takes to bring a car online (0: at once)")
	fs.BoolVar(&f.echo, "echo", false, "answer the read routes and unknown paths with an echo of the request, for pass-through tests")
	fs.BoolVar(&f.verbose, "verbose", false, "log every request (never tokens or keys)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, 0, false
		}
		return f, 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "proxy simulate: unexpected argument %q\n", fs.Arg(0))
		return f, 2, false
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	return f, 0, true
}

// listenSimulate opens the simulator's listener, on loopback unless -allow-remote. On failure it
// reports on stderr and returns a nil listener and the exit code: 2 for a refused address, 1
// when listening failed.
func listenSimulate(ctx context.Context, f simulateFlags, stderr io.Writer) (net.Listener, int) {
	if err := checkLoopback(f.listen, f.allowRemote); err != nil {
		fmt.Fprintf(stderr, "proxy simulate: %v\n", err)
		return nil, 2
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", f.listen)
	if err != nil {
		fmt.Fprintf(stderr, "proxy simulate: listen on %s: %v\n", f.listen, err)
		return nil, 1
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !f.allowRemote && !tcp.IP.IsLoopback() {
		_ = ln.Close()
		fmt.Fprintf(stderr, "proxy simulate: %s is not a loopback address; pass -allow-remote to serve it anyway\n", tcp.IP)
		return nil, 2
	}
	return ln, 0
}

// serveSimulate serves srv on ln (over TLS when srv has a TLSConfig) until ctx ends, then shuts
// down within 5 seconds. It returns 0 after a clean shutdown, 1 when serving failed.
func serveSimulate(ctx context.Context, srv *http.Server, ln net.Listener, stderr io.Writer) int {
	served := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			served <- srv.ServeTLS(ln, "", "")
		} else {
			served <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-served:
		fmt.Fprintf(stderr, "proxy simulate: serve: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "proxy simulate: serve: %v\n", err)
		return 1
	}
	return 0
}

// buildSimulator turns the flags into a simulator with its vehicles. Flag errors are reported in
// the order the flags are read: keys, vehicles, TLS, timing, then the per-VIN lists.
func buildSimulator(f simulateFlags, log *zap.Logger) (*fleetsim.Server, []string, *tls.Config, error) {
	keys, err := loadEnrolledKeys(f.enroll)
	if err != nil {
		return nil, nil, nil, err
	}
	sc, err := simulatedVehicles(f)
	if err != nil {
		return nil, nil, nil, err
	}
	tlsConfig, err := simulateTLSConfig(f.cert, f.key)
	if err != nil {
		return nil, nil, nil, err
	}
	opts, err := simulatorOptions(f, sc, log, keys)
	if err != nil {
		return nil, nil, nil, err
	}
	sim := fleetsim.New(opts)
	vins := sc.Apply(sim, keys...)
	if err := markVehicles(sim, splitList(f.legacy), splitList(f.asleep)); err != nil {
		return nil, nil, nil, err
	}
	return sim, vins, tlsConfig, nil
}

// loadEnrolledKeys reads the -enroll public keys, which every simulated car trusts.
func loadEnrolledKeys(paths []string) ([]*ecdh.PublicKey, error) {
	var keys []*ecdh.PublicKey
	for _, path := range paths {
		k, err := protocol.LoadPublicKey(path)
		if err != nil {
			return nil, fmt.Errorf("-enroll %s: %w", path, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// simulatedVehicles is the scenario the flags describe: the -scenario file, or the -vins list
// (three test VINs when neither is given). The two are exclusive, and a VIN must be plausible
// and listed once.
func simulatedVehicles(f simulateFlags) (fleetsim.Scenario, error) {
	var sc fleetsim.Scenario
	if f.scenario != "" {
		if f.vins != "" {
			return sc, errors.New("-scenario and -vins both list the vehicles; use one")
		}
		var err error
		if sc, err = readScenario(f.scenario); err != nil {
			return sc, err
		}
	}
	vins := splitList(f.vins)
	if f.scenario == "" && len(vins) == 0 {
		vins = []string{fleetsim.NewTestVIN(1), fleetsim.NewTestVIN(2), fleetsim.NewTestVIN(3)}
	}
	known := map[string]bool{}
	for _, vin := range vins {
		if !fleetsim.PlausibleVIN(vin) {
			return sc, fmt.Errorf("-vins: %q is not 17 upper-case letters and digits", vin)
		}
		if known[vin] {
			return sc, fmt.Errorf("-vins: %s is listed twice", vin)
		}
		known[vin] = true
		sc.Vehicles = append(sc.Vehicles, fleetsim.ScenarioVehicle{VIN: vin})
	}
	return sc, nil
}

// readScenario parses the -scenario file, which must list at least one vehicle.
func readScenario(path string) (fleetsim.Scenario, error) {
	file, err := os.Open(path)
	if err != nil {
		return fleetsim.Scenario{}, fmt.Errorf("-scenario: %w", err)
	}
	sc, err := fleetsim.ParseScenario(file)
	_ = file.Close()
	if err != nil {
		return sc, fmt.Errorf("-scenario %s: %w", path, err)
	}
	if len(sc.Vehicles) == 0 {
		return sc, fmt.Errorf("-scenario %s lists no vehicles", path)
	}
	return sc, nil
}

// simulateTLSConfig loads -cert and -key, which go together; nil (plain HTTP) when neither is set.
func simulateTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	case certFile != "" || keyFile != "":
		return nil, errors.New("-cert and -key go together")
	}
	return nil, nil
}

// simulatorOptions are the scenario's options with the timing flags applied. With a scenario, a
// timing flag overrides it only when given on the command line; without one, the flags (and
// their defaults) set the timing.
func simulatorOptions(f simulateFlags, sc fleetsim.Scenario, log *zap.Logger, keys []*ecdh.PublicKey) (fleetsim.Options, error) {
	opts, err := sc.Options(fleetsim.Options{Logger: log, TrustedKeys: keys, Echo: f.echo})
	if err != nil {
		return opts, err
	}
	if f.scenario == "" || f.set["sleep-after"] {
		opts.SleepAfter = f.sleepAfter
	}
	if f.scenario == "" || f.set["wake-time"] {
		opts.WakeTime = f.wakeTime
	}
	if f.scenario == "" || f.set["latency"] {
		if opts.Latency, err = fleetsim.ParseLatency(f.latency); err != nil {
			return opts, fmt.Errorf("-latency: %w", err)
		}
	}
	if opts.SleepAfter < 0 || opts.WakeTime < 0 {
		return opts, errors.New("-sleep-after and -wake-time must not be negative")
	}
	return opts, nil
}

// markVehicles makes the -legacy VINs cars without the Vehicle Command Protocol and puts the
// -asleep ones to sleep. Every VIN named must be simulated; none is changed otherwise.
func markVehicles(sim *fleetsim.Server, legacy, asleep []string) error {
	for _, vin := range append(append([]string(nil), legacy...), asleep...) {
		if sim.Vehicle(vin) == nil {
			return fmt.Errorf("%s is not one of the simulated VINs (-vins)", vin)
		}
	}
	for _, vin := range legacy {
		f := sim.Fault(vin)
		f.Legacy = true
		sim.SetFault(vin, f)
	}
	for _, vin := range asleep {
		sim.Vehicle(vin).SetAsleep(true)
	}
	return nil
}

// checkLoopback refuses a listen address beyond loopback unless allowed.
func checkLoopback(addr string, allowRemote bool) error {
	if allowRemote {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen %s: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("-listen %s is not a loopback address; pass -allow-remote to serve it anyway", addr)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// newSimLogger logs JSON lines to w: warnings and above, or debug and above when verbose.
func newSimLogger(verbose bool, w io.Writer) *zap.Logger {
	level := zapcore.WarnLevel
	if verbose {
		level = zapcore.DebugLevel
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), level))
}
