// Command bench measures our proxy against Tesla's reference tesla-http-proxy v0.4.1 and against
// the Fleet API simulator reached directly, all on loopback, and prints one table (issue 7).
//
// It starts the simulator (internal/fleetsim) over TLS in this process, builds and starts both
// proxies as child processes (ours from ./cmd/proxy, the reference from ./bench/refproxy), drives
// closed-loop load with vegeta, and for every row measures each contender in turn in the same run,
// so ratios hold on a noisy machine. The proxies' CPU time and peak RSS are read from /proc.
//
// Nothing here dials anything but 127.0.0.1: the simulator listens there, both proxies point
// their upstream at it (ours with -upstream, the reference by a dialer that connects only to
// it), and the load generator only talks to the three loopback URLs.
//
// Usage (scripts/bench.sh wraps it):
//
//	go run ./bench [-duration 10s] [-quick] [-rows pass,telemetry,commands,conns1000,slowpass,slowcmds,upload] [-out docs/benchmarks.md]
package main

import (
	"context"
	"crypto/ecdh"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/jws"
)

// allRows are the row groups in the order they run; -rows selects among them.
// Upload runs last: the reference buffers 100 MiB bodies, and the heap that leaves behind would
// inflate its RSS in every later row.
var allRows = []string{"pass", "telemetry", "commands", "conns1000", "slowpass", "slowcmds", "upload", "fleet", "replicas"}

type options struct {
	duration time.Duration
	warm     time.Duration
	rounds   int
	quick    bool
	rows     map[string]bool
	out      string
	root     string
	command  string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// realMain parses the flags, runs the rows asked for, prints the report and writes it to -out.
func realMain(ctx context.Context) error {
	o, err := parseOptions()
	if err != nil || o == nil {
		return err
	}
	b, err := setup(ctx, *o)
	if err != nil {
		return err
	}
	defer b.close()
	start := time.Now()
	if err := b.run(); err != nil {
		return err
	}
	report := b.render(time.Since(start))
	fmt.Println(report.text)
	if o.out != "" {
		if err := writeReport(o.root, o.out, report.markdown); err != nil {
			return err
		}
	}
	if b.totalErrors() > 0 {
		return fmt.Errorf("%d requests failed under load (see the Errors column)", b.totalErrors())
	}
	return nil
}

// parseOptions parses the command line. It returns nil options and no error after -help.
func parseOptions() (*options, error) {
	args := os.Args[1:]
	var o options
	var rows string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of each row and contender")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds each row's time is cut into, taking the contenders in turn (0: one per 2 s, at most 5)")
	fs.BoolVar(&o.quick, "quick", false, "1 s rows and short warm-ups, for CI and development (does not write -out unless it is given)")
	fs.StringVar(&rows, "rows", "all", "comma-separated rows to run: "+strings.Join(allRows, ", ")+", or all")
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "markdown file to write the results to; empty writes none")
	fs.StringVar(&o.root, "repo", "", "module root to build the proxies in (default: the current module's)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	o.warm = time.Second
	if o.quick {
		if !given["duration"] {
			o.duration = time.Second
		}
		o.warm = 200 * time.Millisecond
		if !given["out"] {
			o.out = ""
		}
	}
	var err error
	if o.rows, err = parseRows(rows); err != nil {
		return nil, err
	}
	o.command = os.Getenv("BENCH_COMMAND")
	if o.command == "" {
		o.command = strings.TrimSpace("go run ./bench " + strings.Join(args, " "))
	}
	if o.root == "" {
		if o.root, err = moduleRoot(); err != nil {
			return nil, err
		}
	}
	return &o, nil
}

// parseRows parses -rows: a comma-separated list of row names, or all.
func parseRows(rows string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, r := range strings.Split(rows, ",") {
		r = strings.TrimSpace(r)
		switch r {
		case "all":
			for _, a := range allRows {
				out[a] = true
			}
		case "":
		default:
			if !slices.Contains(allRows, r) {
				return nil, fmt.Errorf("-rows: unknown row %q (want %s or all)", r, strings.Join(allRows, ", "))
			}
			out[r] = true
		}
	}
	return out, nil
}

// moduleRoot returns the directory of the current Go module, as the go command finds it.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("cannot find the module root (run from the repository or pass -repo): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("cannot find the module root: not inside a Go module (run from the repository or pass -repo)")
	}
	return filepath.Dir(gomod), nil
}

// writeReport writes the markdown report to path, relative to root unless absolute.
func writeReport(root, path, markdown string) error {
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	// The report is a document of the repository (docs/benchmarks.md), readable by all like
	// the rest of the checkout.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil { //nolint:gosec // G301: see above
		return err
	}
	if err := os.WriteFile(path, []byte(markdown), 0o644); err != nil { //nolint:gosec // G306: see above
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", path)
	return nil
}

// contender is one way of reaching the simulated Fleet API.
type contender struct {
	name string
	url  string
	proc *child // nil for direct: the simulator runs in this process
	// group, when set, are the replicas behind a load balancer at url: their CPU times are
	// added, and so are their peak RSS figures (each replica's own peak).
	group []*child
}

// procs returns the processes whose CPU and memory are the contender's.
func (c *contender) procs() []*child {
	if c.group != nil {
		return c.group
	}
	if c.proc != nil {
		return []*child{c.proc}
	}
	return nil
}

// resetPeak starts a new peak RSS reading for each process.
func (c *contender) resetPeak() error {
	for _, p := range c.procs() {
		if err := p.resetPeak(); err != nil {
			return err
		}
	}
	return nil
}

// memory returns the summed RSS and summed peak RSS of the contender's processes.
func (c *contender) memory() (rss, peak int64, err error) {
	for _, p := range c.procs() {
		r, pk, err := p.memory()
		if err != nil {
			return 0, 0, err
		}
		rss, peak = rss+r, peak+pk
	}
	return rss, peak, nil
}

// cpu returns the summed CPU time of the contender's processes.
func (c *contender) cpu() (time.Duration, error) {
	var total time.Duration
	for _, p := range c.procs() {
		t, err := p.cpu()
		if err != nil {
			return 0, err
		}
		total += t
	}
	return total, nil
}

type bench struct {
	ctx   context.Context
	o     options
	tmp   string
	pki   *pki
	key   *commandKey
	token string

	sim    *fleetsim.Server
	simSrv *http.Server
	simURL string
	vins   []string
	// nextVIN is the first of vins that takeVINs has not handed out.
	nextVIN int

	direct, ours, ref *contender

	lines []line
	// fleet holds the fleet rows' figures, when they ran.
	fleet   *fleetResult
	results map[string]measurement
}

// VIN sets: pass-through and telemetry use vins[0]; each command row has VINs of its own, so
// "first command" figures are not spoilt by an earlier row's sessions.
const (
	vinsPass      = 1
	vinsCmdTotal  = 2 * (1 + 16 + 50) // each proxy has its own
	vinsSlowCmd   = 2 * slowCmdVINs
	vinsReplicas  = 2 * replicaVINs
	totalVehicles = vinsPass + vinsCmdTotal + vinsSlowCmd + vinsReplicas
)

// setup makes the keys and certificates, serves the simulator and starts both proxies on it.
// On error it undoes what it did.
func setup(ctx context.Context, o options) (*bench, error) {
	b := &bench{ctx: ctx, o: o, results: map[string]measurement{}, nextVIN: vinsPass}
	var err error
	if b.tmp, err = os.MkdirTemp("", "proxy-bench-"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	if b.pki, err = newPKI(); err != nil {
		return nil, err
	}
	if b.key, err = newCommandKey(); err != nil {
		return nil, err
	}
	if b.token, err = benchToken(); err != nil {
		return nil, err
	}
	simAddr, err := b.startSimulator()
	if err != nil {
		return nil, err
	}
	if err := b.startProxies(simAddr); err != nil {
		return nil, err
	}
	ok = true
	return b, nil
}

// startSimulator serves the simulator with totalVehicles vehicles, trusted for the NA Fleet API
// host so the reference's TLS check passes, and returns its address.
func (b *bench) startSimulator() (string, error) {
	jws.Register()
	pub, err := publicKey(b.key.private)
	if err != nil {
		return "", err
	}
	b.sim = fleetsim.New(fleetsim.Options{TrustedKeys: []*ecdh.PublicKey{pub}, Echo: true})
	for i := range totalVehicles {
		vin := fleetsim.NewTestVIN(i)
		b.sim.AddVehicle(vin, pub)
		b.vins = append(b.vins, vin)
	}
	simCert, _, _, err := b.pki.leaf(forward.HostNA)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	b.simSrv = &http.Server{ //nolint:gosec // G112: the loopback Fleet API stand-in of a benchmark; timeouts would change what is measured
		Handler:   b.sim,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{simCert}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = b.simSrv.ServeTLS(ln, "", "") }()
	b.simURL = "https://" + ln.Addr().String()

	return ln.Addr().String(), nil
}

// startProxies builds ours and the reference and starts both, pointed at the simulator at
// simAddr.
func (b *bench) startProxies(simAddr string) error {
	o := b.o
	_, proxyCertPEM, proxyKeyPEM, err := b.pki.leaf()
	if err != nil {
		return err
	}
	files, err := writeFiles(b.tmp, map[string][]byte{
		"command.pem": b.key.pemSEC1,
		"tls.pem":     proxyCertPEM,
		"tls-key.pem": proxyKeyPEM,
		"ca.pem":      b.pki.caPEM,
	})
	if err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "building ./cmd/proxy and ./bench/refproxy …")
	oursBin, refBin := filepath.Join(b.tmp, "proxy"), filepath.Join(b.tmp, "refproxy")
	if err := goBuild(o.root, "./cmd/proxy", oursBin); err != nil {
		return err
	}
	if err := goBuild(o.root, "./bench/refproxy", refBin); err != nil {
		return err
	}
	oursProc, err := startChild("ours", oursBin, b.tmp,
		"-key-file", files["command.pem"], "-cert", files["tls.pem"], "-tls-key", files["tls-key.pem"],
		"-host", "127.0.0.1", "-port", "0", "-upstream", b.simURL, "-upstream-ca", files["ca.pem"])
	if err != nil {
		return err
	}
	refProc, err := startChild("reference", refBin, b.tmp,
		"-key-file", files["command.pem"], "-cert", files["tls.pem"], "-tls-key", files["tls-key.pem"],
		"-sim", simAddr, "-sim-ca", files["ca.pem"])
	if err != nil {
		oursProc.stop()
		return err
	}
	b.direct = &contender{name: "direct", url: b.simURL}
	b.ours = &contender{name: "ours", url: oursProc.url, proc: oursProc}
	b.ref = &contender{name: "reference", url: refProc.url, proc: refProc}
	fmt.Fprintf(os.Stderr, "simulator %s, ours %s (pid %d), reference %s (pid %d)\n",
		b.simURL, oursProc.url, oursProc.pid, refProc.url, refProc.pid)
	return nil
}

func (b *bench) close() {
	if b.ours != nil {
		b.ours.proc.stop()
	}
	if b.ref != nil {
		b.ref.proc.stop()
	}
	if b.simSrv != nil {
		_ = b.simSrv.Close()
	}
	if b.tmp != "" {
		_ = os.RemoveAll(b.tmp)
	}
}

func (b *bench) run() error {
	steps := []struct {
		name string
		fn   func() error
	}{
		{"pass", b.rowPass},
		{"telemetry", b.rowTelemetry},
		{"commands", b.rowCommands},
		{"conns1000", b.rowConns1000},
		{"slowpass", b.rowSlowPass},
		{"slowcmds", b.rowSlowCommands},
		{"upload", b.rowUpload},
		{"fleet", b.rowFleet},
		{"replicas", b.rowReplicas},
	}
	for _, s := range steps {
		if !b.o.rows[s.name] {
			continue
		}
		if s.name == "conns1000" || s.name == "slowpass" || s.name == "slowcmds" || s.name == "upload" {
			// Memory rows start from fresh processes, so earlier rows' heaps do not count.
			if err := b.restartProxies(); err != nil {
				return err
			}
		}
		if err := s.fn(); err != nil {
			return fmt.Errorf("row %s: %w", s.name, err)
		}
		if err := b.ctx.Err(); err != nil {
			return err
		}
		for _, c := range []*contender{b.ours, b.ref} {
			if !c.proc.alive() {
				return fmt.Errorf("%s exited during row %s: %s", c.name, s.name, c.proc.logTail(2000))
			}
		}
	}
	return nil
}

func (b *bench) restartProxies() error {
	for _, c := range []*contender{b.ours, b.ref} {
		p, err := c.proc.restart()
		if err != nil {
			return err
		}
		c.proc, c.url = p, p.url
	}
	return nil
}

func (b *bench) totalErrors() int {
	n := 0
	for _, l := range b.lines {
		n += l.errs
	}
	return n
}

// publicKey returns a command key's public half.
func publicKey(k protocol.ECDHPrivateKey) (*ecdh.PublicKey, error) {
	return ecdh.P256().NewPublicKey(k.PublicBytes())
}
