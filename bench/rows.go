package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/jws"
)

// measurement is one contender's figures for one row.
type measurement struct {
	sample
	// hasProc reports whether the contender is a child process, so cpu and the RSS figures mean
	// something.
	hasProc bool
	// cpu is the process's user+system CPU time during the measured part.
	cpu time.Duration
	// idleRSS is the RSS before the warm-up; peakRSS is VmHWM over the warm-up and the measured
	// part.
	idleRSS, peakRSS int64
	// upstream is how many requests reached the simulated Fleet API during the measured part.
	upstream int
	// rejected is how many signed messages the simulated vehicles refused at the protocol level
	// (each makes the client re-sync and send again: billed calls with nothing to show).
	rejected int
	// warmErrs counts failures during the warm-up, which are errors under load too.
	warmErrs     int
	warmFirstErr string
}

func (m measurement) cpuPerOp() time.Duration {
	if m.ops == 0 {
		return 0
	}
	return m.cpu / time.Duration(m.ops)
}

func (m measurement) upstreamPerOp() float64 {
	if m.ops == 0 {
		return 0
	}
	return float64(m.upstream) / float64(m.ops)
}

// job is one contender's part of a row: its load, its own client (so its connections stay warm
// across rounds) and what has been measured so far.
type job struct {
	c        *contender
	l        load
	warmLoad *load // nil: warm up with l itself
	client   *http.Client
	m        measurement
}

// compare measures every job for dur in total. To keep a burst of outside load from landing on one
// contender only, the time is cut into rounds that take the jobs in turn (direct, ours, reference,
// direct, …); each job's figures are the sum of its rounds. Every job is warmed up first, for warm,
// on the connections it then keeps.
func (b *bench) compare(jobs []*job, dur, warm time.Duration) error {
	return b.compareIn(jobs, dur, warm, b.o.roundsFor(dur))
}

// roundsFor is how many rounds a row measured for dur is cut into: -rounds, or one per 2 s, at
// most 5.
func (o *options) roundsFor(dur time.Duration) int {
	if o.rounds > 0 {
		return o.rounds
	}
	return int(min(5, max(1, dur/(2*time.Second))))
}

// compareIn is compare with the number of rounds given.
func (b *bench) compareIn(jobs []*job, dur, warm time.Duration, rounds int) error {
	for _, j := range jobs {
		if err := b.prepare(j, warm); err != nil {
			return err
		}
	}
	for range rounds {
		for _, j := range jobs {
			if err := b.round(j, dur/time.Duration(rounds), 0); err != nil {
				return err
			}
		}
	}
	for _, j := range jobs {
		if err := b.finish(j); err != nil {
			return err
		}
	}
	return nil
}

// once measures one job alone for exactly hits requests, without a warm-up.
func (b *bench) once(j *job, hits int) error {
	if err := b.prepare(j, 0); err != nil {
		return err
	}
	if err := b.round(j, 0, hits); err != nil {
		return err
	}
	return b.finish(j)
}

func (b *bench) prepare(j *job, warm time.Duration) error {
	j.client = newClient(b.pki.pool, j.l.workers)
	if j.c.procs() != nil {
		// The peak covers the warm-up too: for 1,000 connections, opening them is part of the load.
		j.m.hasProc = true
		if err := j.c.resetPeak(); err != nil {
			return fmt.Errorf("reset the peak RSS of %s: %w", j.c.name, err)
		}
		var err error
		if j.m.idleRSS, _, err = j.c.memory(); err != nil {
			return err
		}
	}
	if warm > 0 {
		wl := j.l
		if j.warmLoad != nil {
			wl = *j.warmLoad
			wl.workers = j.l.workers
		}
		w := attack(b.ctx, j.client, wl, warm, 0)
		j.m.warmErrs, j.m.warmFirstErr = w.errs, w.firstErr
	}
	return nil
}

func (b *bench) round(j *job, dur time.Duration, hits int) error {
	var cpu0 time.Duration
	if j.c.procs() != nil {
		var err error
		if cpu0, err = j.c.cpu(); err != nil {
			return err
		}
	}
	st0 := b.sim.Stats()
	s := attack(b.ctx, j.client, j.l, dur, hits)
	st1 := b.sim.Stats()
	j.m.upstream += st1.Upstream - st0.Upstream
	j.m.rejected += sum(st1.Rejections) - sum(st0.Rejections)
	j.m.merge(s)
	if j.c.procs() != nil {
		cpu1, err := j.c.cpu()
		if err != nil {
			return err
		}
		j.m.cpu += cpu1 - cpu0
	}
	return b.ctx.Err()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (b *bench) finish(j *job) error {
	j.client.CloseIdleConnections()
	slices.Sort(j.m.lat)
	if j.c.procs() != nil {
		var err error
		if _, j.m.peakRSS, err = j.c.memory(); err != nil {
			return err
		}
	}
	if j.m.errs > 0 || j.m.warmErrs > 0 {
		first := j.m.firstErr
		if first == "" {
			first = j.m.warmFirstErr
		}
		fmt.Fprintf(os.Stderr, "  %s: %d errors (+%d in warm-up), first: %s\n", j.c.name, j.m.errs, j.m.warmErrs, first)
	}
	return nil
}

// contenders returns the contenders in the order each row measures them.
func (b *bench) contenders() []*contender { return []*contender{b.direct, b.ours, b.ref} }

// takeVINs hands out n vehicles no earlier row has used. Each proxy gets VINs of its own: two
// clients sharing a key and a VIN would step on each other's counters.
func (b *bench) takeVINs(n int) []string {
	if b.nextVIN+n > len(b.vins) {
		panic("bench: not enough simulated vehicles")
	}
	v := b.vins[b.nextVIN : b.nextVIN+n]
	b.nextVIN += n
	return v
}

func (b *bench) target(c *contender, method, path string, body []byte) vegeta.Target {
	h := http.Header{"Authorization": {"Bearer " + b.token}}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	return vegeta.Target{Method: method, URL: c.url + path, Body: body, Header: h}
}

func (b *bench) smallGet(c *contender) load {
	return load{
		targets: []vegeta.Target{b.target(c, http.MethodGet, "/api/1/vehicles/"+b.vins[0]+"/vehicle_data", nil)},
		check:   contains(`"method":"GET"`),
	}
}

func (b *bench) progress(row string, c *contender, m measurement) {
	fmt.Fprintf(os.Stderr, "%-28s %-10s %8d ops %8.1f/s p50 %-9s p99 %-9s errors %d\n",
		row, c.name, m.ops, m.rate(), fmtDur(m.quantile(0.5)), fmtDur(m.quantile(0.99)), m.errs+m.warmErrs)
}

// The pass-through row's step at passCPUConns connections is measured passCPUScale times longer,
// in as many times more rounds: its CPU per request is held to a target (at most 0.8 of the
// reference's) that single 10 s runs on 2 shared cores moved by 3 to 5 per cent either way.
const (
	passCPUConns = 64
	passCPUScale = 3
)

// rowPass: small JSON pass-through (vehicle_data, answered by the simulator's echo) at 1, 16 and
// 64 connections.
func (b *bench) rowPass() error {
	for _, conns := range []int{1, 16, 64} {
		var jobs []*job
		for _, c := range b.contenders() {
			l := b.smallGet(c)
			l.workers = conns
			jobs = append(jobs, &job{c: c, l: l})
		}
		dur, rounds := b.o.duration, b.o.roundsFor(b.o.duration)
		if conns == passCPUConns {
			dur, rounds = dur*passCPUScale, rounds*passCPUScale
		}
		if err := b.compareIn(jobs, dur, b.o.warm, rounds); err != nil {
			return err
		}
		ld := fmt.Sprintf("%d conns", conns)
		if conns == 1 {
			ld = "1 conn"
		}
		for _, j := range jobs {
			b.add(line{row: rowPass, load: ld, unit: "req/s", rate: j.m.rate(), upstream: fmt.Sprintf("%.2f", j.m.upstreamPerOp())}, j.c, j.m)
		}
	}
	return nil
}

// uploadSize is the body of the upload row.
const uploadSize = 100 << 20

// rowUpload: one connection posting 100 MiB bodies to an echo route, one after another.
func (b *bench) rowUpload() error {
	body := make([]byte, uploadSize)
	for i := range body {
		body[i] = byte(i*7 + i>>13)
	}
	var jobs []*job
	for _, c := range b.contenders() {
		t := b.target(c, http.MethodPost, "/api/1/vehicles/"+b.vins[0]+"/bench_upload", body)
		t.Header.Set("Content-Type", "application/octet-stream")
		warm := b.smallGet(c)
		jobs = append(jobs, &job{c: c, warmLoad: &warm,
			l: load{targets: []vegeta.Target{t}, workers: 1, check: contains(fmt.Sprintf(`"body_length":%d`, uploadSize))}})
	}
	if err := b.compare(jobs, b.o.duration, b.o.warm); err != nil {
		return err
	}
	for _, j := range jobs {
		// The median upload's speed: on a shared machine one stalled upload would otherwise
		// decide the mean.
		mib := 0.0
		if p50 := j.m.quantile(0.5); p50 > 0 {
			mib = float64(uploadSize) / (1 << 20) / p50.Seconds()
		}
		b.add(line{row: rowUpload, load: "1 conn", unit: "MiB/s", rate: mib, upstream: fmt.Sprintf("%.2f", j.m.upstreamPerOp())}, j.c, j.m)
	}
	return nil
}

// rowTelemetry: POST fleet_telemetry_config at 16 connections; the proxies sign the config into a
// JWS for fleet_telemetry_config_jws. Direct posts one pre-signed token to the JWS route: the
// simulator's own limit.
func (b *bench) rowTelemetry() error {
	config := map[string]any{
		"hostname": "telemetry.example.com",
		"port":     4443,
		"exp":      time.Now().Add(30 * 24 * time.Hour).Unix(),
		"fields":   map[string]any{"BatteryLevel": map[string]any{"interval_seconds": 60}, "VehicleSpeed": map[string]any{"interval_seconds": 10}},
	}
	vins := []string{b.vins[0]}
	plain, err := json.Marshal(map[string]any{"vins": vins, "config": config})
	if err != nil {
		return err
	}
	token, _, err := jws.SignTelemetryConfig(b.key.private, config)
	if err != nil {
		return err
	}
	signed, err := json.Marshal(map[string]any{"vins": vins, "token": token})
	if err != nil {
		return err
	}
	var jobs []*job
	for _, c := range b.contenders() {
		t := b.target(c, http.MethodPost, "/api/1/vehicles/fleet_telemetry_config", plain)
		if c == b.direct {
			t = b.target(c, http.MethodPost, "/api/1/vehicles/fleet_telemetry_config_jws", signed)
		}
		jobs = append(jobs, &job{c: c, l: load{targets: []vegeta.Target{t}, workers: 16, check: contains(`"updated_vehicles":1`)}})
	}
	if err := b.compare(jobs, b.o.duration, b.o.warm); err != nil {
		return err
	}
	for _, j := range jobs {
		b.add(line{row: rowTelemetry, load: "16 conns", unit: "req/s", rate: j.m.rate(), upstream: fmt.Sprintf("%.2f", j.m.upstreamPerOp())}, j.c, j.m)
	}
	return nil
}

// commandName is the command the command rows send: an Infotainment command with no parameters
// that the simulated car carries out every time.
const commandName = "flash_lights"

// rowCommands: signed commands at 1, 16 and 50 VINs, one connection per VIN. First every VIN gets
// one command (the session is set up: "first"), then the measured load runs on warm sessions
// ("then"). Direct has no line: a client cannot sign without the key's session logic.
func (b *bench) rowCommands() error {
	for _, n := range []int{1, 16, 50} {
		ld := fmt.Sprintf("%d VIN", n)
		if n > 1 {
			ld += "s"
		}
		var jobs, firsts []*job
		for _, c := range []*contender{b.ours, b.ref} {
			var targets []vegeta.Target
			for _, vin := range b.takeVINs(n) {
				targets = append(targets, b.target(c, http.MethodPost, "/api/1/vehicles/"+vin+"/command/"+commandName, nil))
			}
			l := load{targets: targets, workers: n, check: contains(`"result":true`)}
			first := &job{c: c, l: l}
			if err := b.once(first, n); err != nil {
				return err
			}
			firsts = append(firsts, first)
			jobs = append(jobs, &job{c: c, l: l})
		}
		if err := b.compare(jobs, b.o.duration, b.o.warm); err != nil {
			return err
		}
		for i, j := range jobs {
			first := firsts[i].m
			j.m.warmErrs += first.errs
			if j.m.warmFirstErr == "" {
				j.m.warmFirstErr = first.firstErr
			}
			b.keep(rowCommands+" first", ld, j.c, first)
			up := fmt.Sprintf("first %.2f, then %.3f", first.upstreamPerOp(), j.m.upstreamPerOp())
			if j.m.rejected > 0 {
				up += fmt.Sprintf(" (%d refused by the car)", j.m.rejected)
			}
			b.add(line{row: rowCommands, load: ld, unit: "cmd/s", rate: j.m.rate(), upstream: up}, j.c, j.m)
		}
	}
	return nil
}

// conns1000Duration is how long the 1,000-connection row holds its connections (at most).
const conns1000Duration = 5 * time.Second

// rowConns1000: 1,000 keep-alive connections doing small pass-through requests; the figure that
// matters is the proxy's peak RSS.
func (b *bench) rowConns1000() error {
	var jobs []*job
	for _, c := range b.contenders() {
		l := b.smallGet(c)
		l.workers = 1000
		jobs = append(jobs, &job{c: c, l: l})
	}
	if err := b.compare(jobs, min(b.o.duration, conns1000Duration), max(b.o.warm, time.Second)); err != nil {
		return err
	}
	for _, j := range jobs {
		b.add(line{row: rowConns1000, load: "1000 conns", unit: "req/s", rate: j.m.rate(), upstream: fmt.Sprintf("%.2f", j.m.upstreamPerOp())}, j.c, j.m)
	}
	return nil
}

// Production shape: the Fleet API answers in hundreds of milliseconds, so what counts is how many
// requests the proxy keeps in flight at once, not its cost per request.
const (
	slowPassConns   = 2000
	slowPassLatency = 500 * time.Millisecond
	slowCmdVINs     = 1000
	slowCmdLatency  = 300 * time.Millisecond
	// slowDuration bounds the measured time of the production-shape rows; slowWarm is their
	// warm-up, long enough for every connection to be opened and used at least once.
	slowDuration = 10 * time.Second
	slowWarm     = 2 * time.Second
)

// slowLoad names a production-shape load with its ideal rate: every connection always waiting
// on exactly one upstream latency.
func slowLoad(what string, conns int, latency time.Duration, unit string) string {
	return fmt.Sprintf("%d %s × %s (ideal %.0f %s)", conns, what, fmtDur(latency), float64(conns)/latency.Seconds(), unit)
}

// rowSlowPass: 2,000 connections of small pass-through GETs while the simulator answers every
// request after 500 ms. Direct is left out: the ideal (connections ÷ latency) is its figure.
func (b *bench) rowSlowPass() error {
	b.sim.SetLatency(fleetsim.Latency{Data: fleetsim.Delay{Base: slowPassLatency}})
	defer b.sim.SetLatency(fleetsim.Latency{})
	var jobs []*job
	// Direct shows what the harness and the simulator reach on this machine at this shape: the
	// ceiling a proxy in between can approach.
	for _, c := range b.contenders() {
		l := b.smallGet(c)
		l.workers = slowPassConns
		l.stagger = slowPassLatency
		jobs = append(jobs, &job{c: c, l: l})
	}
	if err := b.compare(jobs, min(b.o.duration, slowDuration), max(b.o.warm, slowWarm)); err != nil {
		return err
	}
	ld := slowLoad("conns", slowPassConns, slowPassLatency, "req/s")
	for _, j := range jobs {
		b.add(line{row: rowSlowPass, load: ld, unit: "req/s", rate: j.m.rate(), upstream: fmt.Sprintf("%.2f", j.m.upstreamPerOp())}, j.c, j.m)
	}
	return nil
}

// rowSlowCommands: signed commands over 1,000 VINs, one connection each, while every Fleet API
// call (handshakes and commands) is answered after 300 ms. Every VIN first gets one command
// (session set-up), then the measured load runs on warm sessions.
func (b *bench) rowSlowCommands() error {
	return b.slowCommands(rowSlowCommands, slowLoad("VINs", slowCmdVINs, slowCmdLatency, "cmd/s"),
		[]*contender{b.ours, b.ref}, slowCmdVINs, slowCmdLatency)
}

// slowCommands measures signed commands over vins VINs of its own per contender, one connection
// each, while every Fleet API call (handshakes and commands) is answered after latency: every VIN
// first gets one command (session set-up, "first"), then the measured load runs on warm sessions
// ("then"). The peak RSS covers both.
func (b *bench) slowCommands(row, ld string, contenders []*contender, vins int, latency time.Duration) error {
	b.sim.SetLatency(fleetsim.Latency{Commands: fleetsim.Delay{Base: latency}, Data: fleetsim.Delay{Base: latency},
		Wakes: fleetsim.Delay{Base: latency}, Other: fleetsim.Delay{Base: latency}})
	defer b.sim.SetLatency(fleetsim.Latency{})
	var jobs, firsts []*job
	for _, c := range contenders {
		var targets []vegeta.Target
		for _, vin := range b.takeVINs(vins) {
			targets = append(targets, b.target(c, http.MethodPost, "/api/1/vehicles/"+vin+"/command/"+commandName, nil))
		}
		l := load{targets: targets, workers: vins, check: contains(`"result":true`), stagger: latency}
		first := &job{c: c, l: l}
		if err := b.once(first, vins); err != nil {
			return err
		}
		firsts = append(firsts, first)
		jobs = append(jobs, &job{c: c, l: l})
	}
	if err := b.compare(jobs, min(b.o.duration, slowDuration), max(b.o.warm, slowWarm)); err != nil {
		return err
	}
	for i, j := range jobs {
		first := firsts[i].m
		j.m.warmErrs += first.errs
		if j.m.warmFirstErr == "" {
			j.m.warmFirstErr = first.firstErr
		}
		// The peak covers the first pass too, where every session is set up.
		j.m.peakRSS = max(j.m.peakRSS, first.peakRSS)
		b.keep(row+" first", ld, j.c, first)
		up := fmt.Sprintf("first %.2f, then %.3f", first.upstreamPerOp(), j.m.upstreamPerOp())
		if j.m.rejected > 0 {
			up += fmt.Sprintf(" (%d refused by the car)", j.m.rejected)
		}
		b.add(line{row: row, load: ld, unit: "cmd/s", rate: j.m.rate(), upstream: up}, j.c, j.m)
	}
	return nil
}

// Row titles, as the table shows them.
const (
	rowSlowPass     = "pass-through, slow Fleet API"
	rowSlowCommands = "signed commands, slow Fleet API"
	rowPass         = "pass-through small JSON"
	rowUpload       = "pass-through 100 MiB upload"
	rowTelemetry    = "telemetry config signing"
	rowCommands     = "signed commands, warm"
	rowConns1000    = "1,000 connections"
)

func key(row, load, contender string) string { return row + "|" + load + "|" + contender }

func (b *bench) keep(row, load string, c *contender, m measurement) {
	b.results[key(row, load, c.name)] = m
}

func (b *bench) add(l line, c *contender, m measurement) {
	b.keep(l.row, l.load, c, m)
	l.contender = c.name
	l.m = m
	l.ops = m.ops
	l.errs = m.errs + m.warmErrs
	l.firstErr = m.firstErr
	if l.firstErr == "" {
		l.firstErr = m.warmFirstErr
	}
	b.lines = append(b.lines, l)
	b.progress(l.row+" "+l.load, c, m)
}
