package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// line is one row of the table: one contender under one load.
type line struct {
	row, load, contender string
	unit                 string
	rate                 float64
	upstream             string
	ops, errs            int
	firstErr             string
	m                    measurement
}

// columns are the table's headings.
var columns = []string{"Row", "Load", "Contender", "Ops", "Errors", "Throughput", "vs ref", "p50", "p99", "CPU/op", "Peak RSS (idle)", "Upstream/op"}

func (b *bench) cells(l line) []string {
	vs := ""
	if l.contender != b.ref.name {
		if r, ok := b.refRate(l); ok && r > 0 {
			vs = fmt.Sprintf("%.2f×", l.rate/r)
		}
	}
	cpu, rss := "—", "—"
	if l.m.hasProc {
		cpu = fmtDur(l.m.cpuPerOp())
		rss = fmt.Sprintf("%s (%s)", fmtBytes(l.m.peakRSS), fmtBytes(l.m.idleRSS))
	}
	rate := strconv.FormatFloat(l.rate, 'f', 0, 64)
	if l.rate < 100 {
		rate = strconv.FormatFloat(l.rate, 'f', 1, 64)
	}
	return []string{
		l.row, l.load, l.contender, strconv.Itoa(l.ops), strconv.Itoa(l.errs),
		rate + " " + l.unit, vs, fmtDur(l.m.quantile(0.5)), fmtDur(l.m.quantile(0.99)), cpu, rss, l.upstream,
	}
}

func (b *bench) refRate(l line) (float64, bool) {
	for _, o := range b.lines {
		if o.row == l.row && o.load == l.load && o.contender == b.ref.name {
			return o.rate, true
		}
	}
	return 0, false
}

// verdict is one target of issue 7 and whether this run met it.
type verdict struct {
	target string
	met    bool
	detail string
}

func (b *bench) get(row, load, who string) (measurement, bool) {
	m, ok := b.results[key(row, load, who)]
	return m, ok
}

// verdicts checks this run against issue 7's targets, one group of rows at a time; a target
// whose rows did not run is left out.
func (b *bench) verdicts() []verdict {
	var v []verdict
	v = append(v, b.passVerdicts()...)
	v = append(v, b.commandVerdicts()...)
	v = append(v, b.uploadVerdicts()...)
	v = append(v, b.slowPassVerdicts()...)
	v = append(v, b.slowCommandVerdicts()...)
	v = append(v, b.rssVerdicts()...)
	v = append(v, b.errorVerdicts()...)
	v = append(v, b.fleetVerdicts()...)
	return v
}

// passVerdicts: pass-through throughput and CPU at 64 connections, added latency at 1.
func (b *bench) passVerdicts() []verdict {
	var v []verdict
	if o, ok := b.get(rowPass, "64 conns", "ours"); ok {
		r, _ := b.get(rowPass, "64 conns", "reference")
		ratio := o.rate() / r.rate()
		v = append(v, verdict{"pass-through at 64 conns: ≥1.2× the reference's req/s", ratio >= 1.2,
			fmt.Sprintf("%.0f vs %.0f req/s = %.2f×", o.rate(), r.rate(), ratio)})
		cr := float64(o.cpuPerOp()) / float64(r.cpuPerOp())
		v = append(v, verdict{"pass-through at 64 conns: ≤0.8× the reference's CPU per request", cr <= 0.8,
			fmt.Sprintf("%s vs %s = %.2f×", fmtDur(o.cpuPerOp()), fmtDur(r.cpuPerOp()), cr)})
	}
	if o, ok := b.get(rowPass, "1 conn", "ours"); ok {
		r, _ := b.get(rowPass, "1 conn", "reference")
		d, _ := b.get(rowPass, "1 conn", "direct")
		ao, ar := o.quantile(0.5)-d.quantile(0.5), r.quantile(0.5)-d.quantile(0.5)
		v = append(v, verdict{"pass-through at 1 conn: added p50 over direct ≤0.8× the reference's", float64(ao) <= 0.8*float64(ar),
			fmt.Sprintf("+%s vs +%s (direct p50 %s) = %.2f×", fmtDur(ao), fmtDur(ar), fmtDur(d.quantile(0.5)), float64(ao)/float64(ar))})
	}
	return v
}

// commandVerdicts: warm signed-command throughput, and one upstream call per command.
func (b *bench) commandVerdicts() []verdict {
	var v []verdict
	for _, ld := range []string{"1 VIN", "16 VINs"} {
		if o, ok := b.get(rowCommands, ld, "ours"); ok {
			r, _ := b.get(rowCommands, ld, "reference")
			ratio := o.rate() / r.rate()
			v = append(v, verdict{"signed commands, warm, " + ld + ": ≥1.5× the reference's cmd/s", ratio >= 1.5,
				fmt.Sprintf("%.0f vs %.0f cmd/s = %.2f×", o.rate(), r.rate(), ratio)})
		}
	}
	var ups []string
	exact, found := true, false
	for _, ld := range []string{"1 VIN", "16 VINs", "50 VINs"} {
		if o, ok := b.get(rowCommands, ld, "ours"); ok {
			found = true
			exact = exact && o.upstream == o.ops
			ups = append(ups, fmt.Sprintf("%s: %d calls for %d commands", ld, o.upstream, o.ops))
		}
	}
	if found {
		v = append(v, verdict{"signed commands, warm: exactly 1 upstream call per command", exact, strings.Join(ups, "; ")})
	}
	return v
}

// uploadVerdicts: memory stays flat while a large upload streams through.
func (b *bench) uploadVerdicts() []verdict {
	var v []verdict
	if o, ok := b.get(rowUpload, "1 conn", "ours"); ok {
		r, _ := b.get(rowUpload, "1 conn", "reference")
		growth := o.peakRSS - o.idleRSS
		v = append(v, verdict{fmt.Sprintf("streaming memory flat: peak RSS during %s uploads ≤ idle + 16 MiB", fmtBytes(uploadSize)), growth <= 16<<20,
			fmt.Sprintf("ours %s → peak %s (+%s); reference %s → peak %s (+%s)",
				fmtBytes(o.idleRSS), fmtBytes(o.peakRSS), fmtBytes(growth), fmtBytes(r.idleRSS), fmtBytes(r.peakRSS), fmtBytes(r.peakRSS-r.idleRSS))})
	}
	return v
}

// slowPassVerdicts: pass-through against a slow upstream keeps up with its latency.
func (b *bench) slowPassVerdicts() []verdict {
	var v []verdict
	slowPass := slowLoad("conns", slowPassConns, slowPassLatency, "req/s")
	if o, ok := b.get(rowSlowPass, slowPass, "ours"); ok {
		r, _ := b.get(rowSlowPass, slowPass, "reference")
		ideal := float64(slowPassConns) / slowPassLatency.Seconds()
		v = append(v, verdict{fmt.Sprintf("pass-through, %d conns × %s: ≥0.9 of ideal and ≥ the reference's req/s", slowPassConns, fmtDur(slowPassLatency)),
			o.rate() >= 0.9*ideal && o.rate() >= r.rate(),
			fmt.Sprintf("%.0f req/s = %.2f of ideal %.0f; reference %.0f = %.2f; ours/reference %.2f×", o.rate(), o.rate()/ideal, ideal, r.rate(), r.rate()/ideal, o.rate()/r.rate())})
		p50 := o.quantile(0.5)
		v = append(v, verdict{fmt.Sprintf("pass-through, %d conns × %s: p50 ≤ 1.1× the latency", slowPassConns, fmtDur(slowPassLatency)),
			float64(p50) <= 1.1*float64(slowPassLatency),
			fmt.Sprintf("p50 %s = %.2f× (reference %s)", fmtDur(p50), float64(p50)/float64(slowPassLatency), fmtDur(r.quantile(0.5)))})
	}
	return v
}

// slowCommandVerdicts: signed commands against a slow upstream.
func (b *bench) slowCommandVerdicts() []verdict {
	var v []verdict
	slowCmd := slowLoad("VINs", slowCmdVINs, slowCmdLatency, "cmd/s")
	if o, ok := b.get(rowSlowCommands, slowCmd, "ours"); ok {
		r, _ := b.get(rowSlowCommands, slowCmd, "reference")
		ideal := float64(slowCmdVINs) / slowCmdLatency.Seconds()
		v = append(v, verdict{fmt.Sprintf("signed commands, %d VINs × %s: ≥1.3× the reference's cmd/s", slowCmdVINs, fmtDur(slowCmdLatency)),
			o.rate() >= 1.3*r.rate(),
			fmt.Sprintf("%.0f vs %.0f cmd/s = %.2f× (ideal %.0f: ours %.2f, reference %.2f)", o.rate(), r.rate(), o.rate()/r.rate(), ideal, o.rate()/ideal, r.rate()/ideal)})
		p50 := o.quantile(0.5)
		v = append(v, verdict{fmt.Sprintf("signed commands, %d VINs × %s: p50 ≤ 1.2× the latency", slowCmdVINs, fmtDur(slowCmdLatency)),
			float64(p50) <= 1.2*float64(slowCmdLatency),
			fmt.Sprintf("p50 %s = %.2f× (reference %s)", fmtDur(p50), float64(p50)/float64(slowCmdLatency), fmtDur(r.quantile(0.5)))})
		v = append(v, verdict{fmt.Sprintf("signed commands, %d VINs × %s: exactly 1 upstream call per warm command", slowCmdVINs, fmtDur(slowCmdLatency)),
			o.upstream == o.ops, fmt.Sprintf("%d calls for %d commands (reference %d for %d)", o.upstream, o.ops, r.upstream, r.ops)})
	}
	return v
}

// rssVerdicts: peak memory against the reference's in the rows with many connections.
func (b *bench) rssVerdicts() []verdict {
	var v []verdict
	slowPass := slowLoad("conns", slowPassConns, slowPassLatency, "req/s")
	slowCmd := slowLoad("VINs", slowCmdVINs, slowCmdLatency, "cmd/s")
	var rss []string
	rssMet, rssFound := true, false
	replicas := fmt.Sprintf("%d VINs × %s, %d replicas each", replicaVINs, fmtDur(replicaLatency), replicaCount)
	if o, ok := b.get(rowReplicas, replicas, "ours"); ok {
		r, _ := b.get(rowReplicas, replicas, "reference")
		v = append(v, verdict{fmt.Sprintf("%d replicas behind HAProxy: exactly 1 upstream call per warm command and none refused by the car", replicaCount),
			o.upstream == o.ops && o.rejected == 0,
			fmt.Sprintf("ours %d calls for %d commands, %d refused; reference %d calls for %d commands, %d refused", o.upstream, o.ops, o.rejected, r.upstream, r.ops, r.rejected)})
		v = append(v, verdict{fmt.Sprintf("%d replicas behind HAProxy: ≥1.3× the reference's cmd/s", replicaCount), o.rate() >= 1.3*r.rate(),
			fmt.Sprintf("%.0f vs %.0f cmd/s = %.2f×", o.rate(), r.rate(), o.rate()/r.rate())})
	}
	for _, rl := range []struct{ row, load string }{{rowConns1000, "1000 conns"}, {rowSlowPass, slowPass}, {rowSlowCommands, slowCmd}} {
		o, ok := b.get(rl.row, rl.load, "ours")
		if !ok {
			continue
		}
		r, _ := b.get(rl.row, rl.load, "reference")
		rssFound = true
		rssMet = rssMet && o.peakRSS <= r.peakRSS
		rss = append(rss, fmt.Sprintf("%s: %s vs %s", rl.row, fmtBytes(o.peakRSS), fmtBytes(r.peakRSS)))
	}
	if rssFound {
		v = append(v, verdict{"peak RSS ≤ the reference's in every row with ≥1,000 connections", rssMet, strings.Join(rss, "; ")})
	}
	return v
}

// errorVerdicts: no contender had a failed request in any row.
func (b *bench) errorVerdicts() []verdict {
	var v []verdict
	errsBy := map[string]int{}
	for _, l := range b.lines {
		errsBy[l.contender] += l.errs
	}
	v = append(v, verdict{"no errors under any row's load", errsBy["ours"] == 0 && errsBy["direct"] == 0 && errsBy["reference"] == 0,
		fmt.Sprintf("ours %d, reference %d, direct %d", errsBy["ours"], errsBy["reference"], errsBy["direct"])})
	return v
}

type report struct{ text, markdown string }

func (b *bench) render(took time.Duration) report {
	var tb strings.Builder
	tw := tabwriter.NewWriter(&tb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(columns, "\t"))
	for _, l := range b.lines {
		fmt.Fprintln(tw, strings.Join(b.cells(l), "\t"))
	}
	_ = tw.Flush()
	tb.WriteString("\nTargets:\n")
	verdicts := b.verdicts()
	for _, v := range verdicts {
		fmt.Fprintf(&tb, "  [%s] %s: %s\n", metWord(v.met), v.target, v.detail)
	}
	for _, l := range b.lines {
		if l.errs > 0 {
			fmt.Fprintf(&tb, "  first error, %s %s %s: %s\n", l.row, l.load, l.contender, l.firstErr)
		}
	}

	var md strings.Builder
	md.WriteString("# Benchmarks\n\n")
	md.WriteString("Generated by `bench/` (issue 7); do not edit by hand: run the command below again.\n\n")
	fmt.Fprintf(&md, "- **Date:** %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&md, "- **Machine:** %s\n", machine())
	fmt.Fprintf(&md, "- **Go:** %s (harness and both proxies built with it)\n", runtime.Version())
	fmt.Fprintf(&md, "- **Command:** `%s`\n", b.o.command)
	rounds := b.o.roundsFor(b.o.duration)
	fmt.Fprintf(&md, "- **Per row and contender:** %s measured in %d rounds that take the contenders in turn, after a %s warm-up on the same connections", b.o.duration, rounds, b.o.warm)
	if b.o.rows["pass"] {
		fmt.Fprintf(&md, " (pass-through at %d connections: %s in %d rounds)", passCPUConns, b.o.duration*passCPUScale, rounds*passCPUScale)
	}
	if b.o.rows["conns1000"] {
		fmt.Fprintf(&md, " (1,000 connections: %s, warm-up %s)", min(b.o.duration, conns1000Duration), max(b.o.warm, time.Second))
	}
	if b.o.rows["slowpass"] || b.o.rows["slowcmds"] {
		fmt.Fprintf(&md, " (slow Fleet API rows: %s, warm-up %s)", min(b.o.duration, slowDuration), max(b.o.warm, slowWarm))
	}
	fmt.Fprintf(&md, "; whole run %s\n\n", took.Round(time.Second))
	md.WriteString("## Results\n\n")
	md.WriteString("| " + strings.Join(columns, " | ") + " |\n")
	md.WriteString("|" + strings.Repeat("---|", len(columns)) + "\n")
	for _, l := range b.lines {
		md.WriteString("| " + strings.Join(b.cells(l), " | ") + " |\n")
	}
	md.WriteString("\n## Targets\n\n")
	for _, v := range verdicts {
		fmt.Fprintf(&md, "- **%s** — %s: %s\n", metWord(v.met), v.target, v.detail)
	}
	for _, l := range b.lines {
		if l.errs > 0 {
			fmt.Fprintf(&md, "- First error, %s %s %s: `%s`\n", l.row, l.load, l.contender, strings.ReplaceAll(l.firstErr, "`", "'"))
		}
	}
	md.WriteString(b.fleetMarkdown())
	md.WriteString(method)
	return report{text: tb.String(), markdown: md.String()}
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// method is the fixed part of docs/benchmarks.md: how the figures were made.
const method = `
## How it is measured

- **Contenders.** *direct*: the load generator talks to the Fleet API simulator itself (the
  limit). *ours*: ` + "`go build ./cmd/proxy`" + ` run as a child process with ` + "`-upstream https://127.0.0.1:PORT -upstream-ca`" + `,
  default settings otherwise (so it writes its JSON access log line per request to stderr, here a
  file). *reference*: Tesla's tesla-http-proxy v0.4.1 handler (` + "`pkg/proxy`" + `, cache size 10,000) in
  ` + "`bench/refproxy`" + `, a child process serving it over TLS; its ` + "`http.DefaultTransport`" + ` is
  replaced by one that dials only the simulator (the TLS name stays fleet-api.prd.na.vn.cloud.tesla.com,
  which the simulator's certificate carries), everything else as the reference sets it (HTTP/2,
  two idle connections per host, no logging at its default level).
- **Simulator.** ` + "`internal/fleetsim`" + ` in the harness process over TLS on 127.0.0.1 (HTTP/2 offered, as the
  Fleet API does), with the command key enrolled on every vehicle and trusted for telemetry JWS.
  Its ` + "`Stats().Upstream`" + ` counts every request that reached it: "Upstream/op" is that delta over the
  measured part divided by the operations.
- **Load.** vegeta (` + "`github.com/tsenart/vegeta/v12`" + `) as a library, closed loop: N workers over N HTTP/1.1
  keep-alive connections, each sending its next request when the previous answer has been read.
  Each row's time is cut into rounds that take the contenders in turn, so a burst of outside load
  does not land on one contender only; a contender's figures are the sums over its rounds.
  Latencies are exact percentiles of every request. A request counts as an error if it failed,
  answered other than 200, or its body was not the expected one (the simulator's echo of the
  request, ` + "`\"result\":true`" + `, ` + "`\"updated_vehicles\":1`" + `, the echoed 100 MiB body length); warm-up errors count too.
- **CPU/op** is the proxy process's utime+stime from /proc/PID/stat (10 ms ticks) over the measured
  part, divided by the operations it served. **Peak RSS** is VmHWM from /proc/PID/status over the
  warm-up and the measured part (reset with clear_refs 5 before them); "idle" is VmRSS at that
  moment. Both proxies are restarted before the 1,000-connection and the upload rows, so those
  start from a fresh heap; the other rows run in the table's order in the same two processes.
- **Rows.** Pass-through: GET /api/1/vehicles/VIN/vehicle_data (echoed by the simulator, ~0.5 KiB).
  Upload: POST of a 100 MiB body to an echo route, one after another on one connection; its
  throughput is 100 MiB over the median upload's time (one upload stalled by outside load would
  otherwise decide a mean). Telemetry:
  POST /api/1/vehicles/fleet_telemetry_config (direct posts one pre-signed token to
  fleet_telemetry_config_jws instead). Commands: POST /api/1/vehicles/VIN/command/flash_lights
  with one connection per VIN; every VIN first gets one command ("first": session set-up), then
  the measured load runs on warm sessions ("then"); each proxy has VINs of its own. "Refused by
  the car" counts protocol-level rejections (such as TIME_EXPIRED from clock drift), each of which
  costs a re-sync and a resend. Direct has no
  command line: it would need the signing and session logic the proxies are there for.
- **Slow Fleet API rows (production shape).** The simulator answers every request after a fixed
  delay (` + "`fleetsim.Latency`" + `, no jitter): 500 ms for the 2,000-connection pass-through row, 300 ms for
  every call (handshakes and commands) in the 1,000-VIN command row. The ideal is connections ÷
  latency: every connection always waiting on exactly one upstream answer. Each connection's
  first request is staggered over one latency period, so that thousands of connections with a
  fixed latency do not move in step as one burst per period (each round restarts the load, and a
  burst of 2,000 requests at once is not a production shape); after that each connection sends
  as soon as it has its answer. The rate is the requests started in the measured time divided by
  it: the drain after it, when answers still come but no request starts, is not counted (before
  this change it was, which measured these rows at 0.8 of their rate for every contender). Direct,
  the load generator straight to the simulator, shows in the pass-through row what the harness
  itself reaches on this machine. Both proxies are restarted before each, so Peak RSS is that
  row's own. The command row first sends one command per VIN (session set-up, "first"), then
  measures warm sessions ("then"); its peak RSS covers both.
- **Replicas.** Three replicas of each proxy behind HAProxy (Debian's package; TLS on both
  sides, round-robin per request, no affinity), 200 VINs with one connection each, every Fleet
  API call answered after 100 ms. Ours share sessions and per-vehicle leases through one
  redis-server (` + "`-session-store`" + `); the reference has nothing to share them with, so each of its
  replicas keeps its own session with each car and the car refuses commands signed with a
  counter another replica has already used (each refusal costs a re-sync and a resend). CPU/op
  and Peak RSS add up the three replicas (each one's own peak); Redis and HAProxy are not
  counted. The row needs redis-server and haproxy on PATH and is left out without them.
- **What the reference does with a 100 MiB upload.** Its forwarder reads the whole request body
  into memory (` + "`io.ReadAll`" + `, no limit) before sending it, and reads the whole answer too (up
  to 10 MB; a larger answer becomes a 502), so its RSS grows by a few times the body size; ours
  streams both ways.
- **Noise.** The machine has 2 cores shared by the load generator, the simulator, the proxy under
  test (the other proxy idles) and whatever else runs there, so absolute numbers are low and move
  between runs. On a busy machine the throughput ratios of the pass-through rows moved by tens of
  percent from run to run (a contender that loses the CPU for a moment loses throughput and gains
  p99); CPU/op and upstream calls per operation are much steadier. Run on a quiet machine before
  reading much into a throughput ratio near a target.

To profile our pass-through path in-process: ` + "`go test ./bench -run '^$' -bench PassThrough -cpuprofile /tmp/cpu.out`" + `
then ` + "`go tool pprof -top -focus 'teslaproxy' /tmp/cpu.out`" + `.
`

// machine describes the CPU and memory from /proc.
func machine() string {
	model, cpus := "unknown CPU", 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "processor":
				cpus++
			case "model name":
				model = strings.TrimSpace(v)
			}
		}
	}
	mem := "unknown memory"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					mem = fmtBytes(kb<<10) + " memory"
				}
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d cores (%s), %s%s, GOMAXPROCS %d", cpus, model, mem, kernel, runtime.GOMAXPROCS(0))
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + fmtDur(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtBytes(n int64) string {
	switch {
	case n < 0:
		return "-" + fmtBytes(-n)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d KiB", n>>10)
	}
}
