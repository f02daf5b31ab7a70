package main

import (
	"bufio"
	"crypto/ecdh"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/sessions"
)

// The fleet rows (issue 12): commands to a fleet that grows by fleetRound new VINs a round, up to
// fleetVINs, one command per new VIN, so every command is a car's first; then the first VINs
// again, the memory and goroutines left at idle, and a restart over restartSessions saved
// sessions. Each proxy has VINs of its own on a simulator of its own (this row's), and the two
// take turns round by round, so both see the same machine.
const (
	fleetVINs       = 50_000
	fleetRound      = 1_000
	fleetConns      = 64
	restartSessions = 100_000
)

// fleetResult is what the fleet rows measured.
type fleetResult struct {
	// rates holds each contender's commands per second, one per round.
	rates map[string][]float64
	// elapsed holds each contender's time per round.
	elapsed map[string][]time.Duration
	// upstream and cmds count the Fleet API calls and commands of the growing rounds.
	upstream, cmds map[string]int
	errs           map[string]int
	firstErr       map[string]string
	rejected       map[string]int
	peakRSS        map[string]int64
	// againHandshakes counts handshakes when the first fleetRound VINs are commanded again after
	// the whole fleet; againErrs the errors then.
	againHandshakes, againErrs map[string]int
	// Ours at idle after the run: goroutines and heap in use, from its /metrics.
	idleGoroutines, idleHeap, startHeap int64
	// The restart over restartSessions saved sessions: time to the listen line, time to the
	// first command answered, and handshakes for that command.
	restartListen, restartFirst time.Duration
	restartHandshakes           int
	restartErr                  string
	// rssAnon and rssFile split ours's RSS at idle: the heap and stacks, and the session file's
	// pages mapped in.
	rssAnon, rssFile int64
	// vins is how many new VINs each proxy commanded.
	vins int
}

// rowFleet runs the fleet rows: commands to a growing number of vehicles, the first vehicles
// again, ours at idle, and ours restarted over many saved sessions.
func (b *bench) rowFleet() error {
	total, round := fleetVINs, fleetRound
	if b.o.quick {
		total, round = 2_000, 500
	}
	res := &fleetResult{vins: total, rates: map[string][]float64{}, elapsed: map[string][]time.Duration{},
		upstream: map[string]int{}, cmds: map[string]int{}, errs: map[string]int{}, firstErr: map[string]string{},
		rejected: map[string]int{}, peakRSS: map[string]int64{}, againHandshakes: map[string]int{}, againErrs: map[string]int{}}
	b.fleet = res

	fmt.Fprintf(os.Stderr, "fleet: simulating %d vehicles …\n", 2*total)
	f := &fleetRun{b: b, res: res, total: total, round: round}
	defer f.stop()
	if err := f.start(); err != nil {
		return err
	}
	var err error
	if res.startHeap, _, err = scrapeRuntime(f.clients["ours"], f.procs["ours"].url, b.token); err != nil {
		return err
	}
	if err := f.growingRounds(); err != nil {
		return err
	}
	f.firstAgain()
	if err := f.idle(); err != nil {
		return err
	}
	return f.restart()
}

// fleetRun is one run of the fleet rows: the simulator, both proxies and their clients.
type fleetRun struct {
	b            *bench
	res          *fleetResult
	total, round int
	sim          *fleetsim.Server
	vins         map[string][]string // "ours" and "reference": each proxy's own vehicles
	procs        map[string]*child
	clients      map[string]*http.Client
	oursArgs     []string
	sessionFile  string
	stops        []func()
}

// stop stops what start started, last first.
func (f *fleetRun) stop() {
	for i := len(f.stops) - 1; i >= 0; i-- {
		f.stops[i]()
	}
}

// start serves 2×total simulated vehicles (half for each proxy) and starts both proxies on them.
func (f *fleetRun) start() error {
	b := f.b
	pub, err := publicKey(b.key.private)
	if err != nil {
		return err
	}
	f.sim = fleetsim.New(fleetsim.Options{TrustedKeys: []*ecdh.PublicKey{pub}})
	f.vins = map[string][]string{}
	for i := range 2 * f.total {
		vin := fleetsim.NewTestVIN(1_000_000 + i)
		f.sim.AddVehicle(vin, pub)
		who := "ours"
		if i >= f.total {
			who = "reference"
		}
		f.vins[who] = append(f.vins[who], vin)
	}
	simURL, simAddr, stopSim, err := b.serveSim(f.sim)
	if err != nil {
		return err
	}
	f.stops = append(f.stops, stopSim)

	files, err := writeFiles(b.tmp, map[string][]byte{"fleet-ca.pem": b.pki.caPEM})
	if err != nil {
		return err
	}
	f.sessionFile = filepath.Join(b.tmp, "fleet-sessions.db")
	keys := []string{"-key-file", filepath.Join(b.tmp, "command.pem"), "-cert", filepath.Join(b.tmp, "tls.pem"), "-tls-key", filepath.Join(b.tmp, "tls-key.pem")}
	f.oursArgs = append(append([]string{}, keys...), "-host", "127.0.0.1", "-port", "0", "-upstream", simURL, "-upstream-ca", files["fleet-ca.pem"], "-session-cache", f.sessionFile)
	ours, err := startChild("ours-fleet", b.ours.proc.bin, b.tmp, f.oursArgs...)
	if err != nil {
		return err
	}
	f.procs = map[string]*child{"ours": ours}
	f.stops = append(f.stops, func() { f.procs["ours"].stop() }) // restart replaces ours
	ref, err := startChild("reference-fleet", b.ref.proc.bin, b.tmp, append(append([]string{}, keys...), "-sim", simAddr, "-sim-ca", files["fleet-ca.pem"])...)
	if err != nil {
		return err
	}
	f.stops = append(f.stops, ref.stop)
	f.procs["reference"] = ref
	f.clients = map[string]*http.Client{}
	for who := range f.procs {
		f.clients[who] = newClient(b.pki.pool, fleetConns)
	}
	return nil
}

// growingRounds sends one command to each of round new vehicles per round, alternating which
// proxy goes first, until every vehicle has had one.
func (f *fleetRun) growingRounds() error {
	b, res, sim, procs, clients, vins, round, total := f.b, f.res, f.sim, f.procs, f.clients, f.vins, f.round, f.total
	for r := 0; r*round < total; r++ {
		order := []string{"ours", "reference"}
		if r%2 == 1 {
			order = []string{"reference", "ours"}
		}
		for _, who := range order {
			p := procs[who]
			before := sim.Stats()
			s := attack(b.ctx, clients[who], b.commandLoad(p.url, vins[who][r*round:(r+1)*round]), 0, round)
			after := sim.Stats()
			res.rates[who] = append(res.rates[who], float64(s.ops)/s.elapsed.Seconds())
			res.elapsed[who] = append(res.elapsed[who], s.elapsed)
			res.cmds[who] += s.ops
			res.upstream[who] += after.Upstream - before.Upstream
			res.rejected[who] += sum(after.Rejections) - sum(before.Rejections)
			res.errs[who] += s.errs
			if res.firstErr[who] == "" {
				res.firstErr[who] = s.firstErr
			}
			if err := b.ctx.Err(); err != nil {
				return err
			}
			if !p.alive() {
				return fmt.Errorf("%s exited in round %d: %s", who, r, p.logTail(2000))
			}
		}
		if (r+1)%10 == 0 || b.o.quick {
			fmt.Fprintf(os.Stderr, "fleet: %d VINs: ours %.0f cmd/s, reference %.0f cmd/s\n", (r+1)*round,
				res.rates["ours"][r], res.rates["reference"][r])
		}
	}
	return nil
}

// firstAgain sends a command to each proxy's first round of vehicles again and records how many
// of them needed a new handshake, and each proxy's peak memory.
func (f *fleetRun) firstAgain() {
	b, res, sim, clients, vins, round := f.b, f.res, f.sim, f.clients, f.vins, f.round
	for who, p := range f.procs {
		before := handshakes(sim)
		s := attack(b.ctx, clients[who], b.commandLoad(p.url, vins[who][:round]), 0, round)
		res.againHandshakes[who] = handshakes(sim) - before
		res.againErrs[who] = s.errs
		if res.firstErr[who] == "" {
			res.firstErr[who] = s.firstErr
		}
		if _, peak, err := p.memory(); err == nil {
			res.peakRSS[who] = peak
		}
	}
}

// idle records ours at rest: heap, goroutines and resident memory once its connections are
// closed.
func (f *fleetRun) idle() error {
	for _, c := range f.clients {
		c.CloseIdleConnections()
	}
	time.Sleep(3 * time.Second)
	ours := f.procs["ours"]
	var err error
	if f.res.idleHeap, f.res.idleGoroutines, err = scrapeRuntime(f.clients["ours"], ours.url, f.b.token); err != nil {
		return err
	}
	f.res.rssAnon, f.res.rssFile = rssSplit(ours.pid)
	return nil
}

// restart restarts ours over restartSessions saved sessions (the fleet's real ones, and made-up
// ones for cars that are not in the simulator, up to the count) and times the first command.
func (f *fleetRun) restart() error {
	b, res := f.b, f.res
	f.procs["ours"].stop()
	if err := padSessions(f.sessionFile, restartSessions, f.total); err != nil {
		return err
	}
	start := time.Now()
	again, err := startChild("ours-fleet-restart", b.ours.proc.bin, b.tmp, f.oursArgs...)
	if err != nil {
		return err
	}
	f.procs["ours"] = again
	res.restartListen = time.Since(start)
	before := handshakes(f.sim)
	s := attack(b.ctx, newClient(b.pki.pool, 1), b.commandLoad(again.url, f.vins["ours"][f.total-1:]), 0, 1)
	res.restartFirst = time.Since(start)
	res.restartHandshakes = handshakes(f.sim) - before
	if s.errs > 0 {
		res.restartErr = s.firstErr
	}
	return nil
}

// commandLoad is one flash_lights command to each of vins, over fleetConns connections.
func (b *bench) commandLoad(url string, vins []string) load {
	c := &contender{url: url}
	l := load{workers: fleetConns, check: contains(`"result":true`)}
	for _, vin := range vins {
		l.targets = append(l.targets, b.target(c, http.MethodPost, "/api/1/vehicles/"+vin+"/command/flash_lights", nil))
	}
	return l
}

// handshakes counts the session handshakes the simulator has seen.
func handshakes(sim *fleetsim.Server) int {
	n := 0
	for _, v := range sim.Stats().Vehicles {
		n += v.Handshakes.VCSEC + v.Handshakes.Infotainment
	}
	return n
}

// serveSim serves sim over TLS on loopback with a certificate for the NA Fleet API host.
func (b *bench) serveSim(sim *fleetsim.Server) (url, addr string, stop func(), err error) {
	cert, _, _, err := b.pki.leaf(forward.HostNA)
	if err != nil {
		return "", "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", nil, err
	}
	srv := &http.Server{ //nolint:gosec // G112: the loopback Fleet API stand-in of a benchmark; timeouts would change what is measured
		Handler: sim, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return "https://" + ln.Addr().String(), ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// scrapeRuntime reads go_memstats_heap_inuse_bytes and go_goroutines from a proxy's /metrics.
func scrapeRuntime(c *http.Client, url, token string) (heap, goroutines int64, err error) {
	req, err := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "go_memstats_heap_inuse_bytes":
			dst = &heap
		case "go_goroutines":
			dst = &goroutines
		default:
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/metrics %s: %w", name, err)
		}
		*dst = int64(f)
		found++
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if found != 2 {
		return 0, 0, fmt.Errorf("/metrics of %s lacks the Go runtime figures (status %d)", url, resp.StatusCode)
	}
	return heap, goroutines, nil
}

// rssSplit returns a process's RssAnon and RssFile, in bytes (0 where /proc does not say).
func rssSplit(pid int) (anon, file int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "RssAnon":
			anon = kb << 10
		case "RssFile":
			file = kb << 10
		}
	}
	return anon, file
}

// padSessions adds made-up sessions, for VINs no simulated car has, to the session file until it
// holds n cars.
func padSessions(path string, n, have int) error {
	st, err := sessions.Open(sessions.Options{Path: path, Size: 2 * n})
	if err != nil {
		return err
	}
	var r sessions.Record
	s := &r.Sessions[sessions.Infotainment]
	s.Valid, s.Counter, s.Clock = true, 7, 1000
	s.CarKey[0] = 4
	s.TimeZero = time.Now().Add(-time.Hour).UnixNano()
	for i := 0; st.Len() < n; i++ {
		s.CarKey[1], s.CarKey[2], s.CarKey[3] = byte(i), byte(i>>8), byte(i>>16)
		st.Put(fleetsim.NewTestVIN(5_000_000+i), r)
	}
	_ = have
	return st.Close()
}

// fleetVerdicts are the fleet rows' targets (issue 12).
func (b *bench) fleetVerdicts() []verdict {
	f := b.fleet
	if f == nil || len(f.rates["ours"]) < 2 {
		return nil
	}
	n := len(f.elapsed["ours"])
	stretch := max(1, n/5) // 10,000 of 50,000
	rate := func(who string, from, to int) float64 {
		var d time.Duration
		for _, e := range f.elapsed[who][from:to] {
			d += e
		}
		return float64((to-from)*f.vins/n) / d.Seconds()
	}
	oFirst, oLast := rate("ours", 0, stretch), rate("ours", n-stretch, n)
	rLast := rate("reference", n-stretch, n)
	cars := fmt.Sprintf("%d", stretch*f.vins/n)
	v := []verdict{
		{"fleet: our rate over the last " + cars + " VINs ≥ 0.8× over the first " + cars, oLast >= 0.8*oFirst,
			fmt.Sprintf("%.0f vs %.0f cmd/s = %.2f×", oLast, oFirst, oLast/oFirst)},
		{"fleet: our rate over the last " + cars + " VINs ≥ 2× the reference's", oLast >= 2*rLast,
			fmt.Sprintf("%.0f vs %.0f cmd/s = %.2f×", oLast, rLast, oLast/rLast)},
		{"fleet: the first VINs again after the whole fleet need 0 handshakes", f.againHandshakes["ours"] == 0,
			fmt.Sprintf("ours %d, reference %d", f.againHandshakes["ours"], f.againHandshakes["reference"])},
		{"fleet: peak RSS ≤ the reference's (we keep every session, it keeps 10,000)", f.peakRSS["ours"] <= f.peakRSS["reference"],
			fmt.Sprintf("%s vs %s", fmtBytes(f.peakRSS["ours"]), fmtBytes(f.peakRSS["reference"]))},
		{"fleet: goroutines at idle ≤ 300", f.idleGoroutines <= 300, fmt.Sprintf("%d with %d cars' sessions", f.idleGoroutines, f.vins)},
		{"fleet: no errors, no rejections", f.errs["ours"]+f.againErrs["ours"]+f.rejected["ours"] == 0 && f.errs["reference"]+f.againErrs["reference"] == 0,
			fmt.Sprintf("ours %d errors, %d rejected; reference %d errors, %d rejected %s", f.errs["ours"]+f.againErrs["ours"], f.rejected["ours"],
				f.errs["reference"]+f.againErrs["reference"], f.rejected["reference"], strings.TrimSpace(f.firstErr["ours"]+" "+f.firstErr["reference"]))},
		{"fleet: restart with 100,000 saved sessions serving in ≤ 2 s, with 0 handshakes", f.restartFirst <= 2*time.Second && f.restartHandshakes == 0 && f.restartErr == "",
			fmt.Sprintf("listening after %s, first command answered after %s, %d handshakes %s", fmtDur(f.restartListen), fmtDur(f.restartFirst), f.restartHandshakes, f.restartErr)},
	}
	return v
}

// fleetMarkdown renders the fleet rows.
func (b *bench) fleetMarkdown() string {
	f := b.fleet
	if f == nil || len(f.rates["ours"]) == 0 {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n## Fleet: %d new VINs in rounds of %d (one flash_lights each, %d connections)\n\n", f.vins, f.vins/len(f.rates["ours"]), fleetConns)
	fmt.Fprintf(&sb, "Every command is a car's first: ours sends %.2f upstream calls per command, the reference %.2f.\n\n",
		float64(f.upstream["ours"])/float64(max(1, f.cmds["ours"])), float64(f.upstream["reference"])/float64(max(1, f.cmds["reference"])))
	sb.WriteString("| VINs so far | ours cmd/s | reference cmd/s | ours/reference |\n|---|---|---|---|\n")
	per := f.vins / len(f.rates["ours"])
	for i := range f.rates["ours"] {
		o, r := f.rates["ours"][i], f.rates["reference"][i]
		fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.2f× |\n", (i+1)*per, o, r, o/r)
	}
	fmt.Fprintf(&sb, "\n| | ours | reference |\n|---|---|---|\n")
	fmt.Fprintf(&sb, "| peak RSS | %s | %s |\n", fmtBytes(f.peakRSS["ours"]), fmtBytes(f.peakRSS["reference"]))
	fmt.Fprintf(&sb, "| handshakes for the first %d VINs again | %d | %d |\n", per, f.againHandshakes["ours"], f.againHandshakes["reference"])
	fmt.Fprintf(&sb, "| RSS at idle: anonymous / session file mapped | %s / %s | — |\n", fmtBytes(f.rssAnon), fmtBytes(f.rssFile))
	fmt.Fprintf(&sb, "| goroutines at idle | %d | — |\n", f.idleGoroutines)
	fmt.Fprintf(&sb, "| heap in use at idle (at start) | %s (%s) | — |\n", fmtBytes(f.idleHeap), fmtBytes(f.startHeap))
	fmt.Fprintf(&sb, "| heap in use ÷ cars | %.0f B | — |\n", float64(f.idleHeap-f.startHeap)/float64(f.vins))
	fmt.Fprintf(&sb, "| restart with %d saved sessions: listening / first command | %s / %s (%d handshakes) | — |\n",
		restartSessions, fmtDur(f.restartListen), fmtDur(f.restartFirst), f.restartHandshakes)
	return sb.String()
}
