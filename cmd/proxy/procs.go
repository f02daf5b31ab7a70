package main

import (
	"context"
	"runtime"
	"runtime/metrics"
	"syscall"
	"time"
)

// Processor tuning. A request through the proxy hands work between goroutines several times (the
// server's connection, its background read, the upstream connection's reader and writer). With
// GOMAXPROCS above one, each handoff to an idle processor wakes an operating-system thread that
// spins looking for work and sleeps again. Under light load that is about a third of the proxy's
// CPU: at one connection a pass-through request cost 322-349 µs of CPU with two processors and
// 230-241 µs with one, and its added latency fell by a third (scripts/bench.sh -rows pass, two
// runs each way). Under real load the same wakeups are what lets requests run in parallel.
//
// So the proxy runs on one processor while its load fits in a fraction of one and it serves few
// connections, and on the runtime's default (the CPUs it may use, cgroup quota included) as soon
// as it does not: when one processor is busy, goroutines wait for it, or connections pile up. With
// thousands of connections one processor is the wrong trade even at light load: the collector,
// which gets a quarter of the processors, fell behind the allocations and the peak RSS of the
// 2,000-connection slow row went from 180-230 MiB to 245-328 MiB.
const (
	// procsWindow is how often the load is sampled.
	procsWindow = 25 * time.Millisecond
	// procsDownWindows windows (1 s) of light load, on average below procsLight cores, drop to
	// one processor. Idle windows (below procsIdle) do not count either way.
	procsDownWindows = 40
	procsLight       = 0.7
	procsIdle        = 0.02
	// procsUpWindows windows in a row with one processor busier than procsBusy, or goroutines
	// waiting for it longer than procsWaitP90 at the 90th percentile, go back to the default.
	procsUpWindows = 2
	procsBusy      = 0.85
	procsWaitP90   = 500 * time.Microsecond
	// procsCrowd goroutines (each client connection has one, each HTTP/1.1 upstream connection
	// two) keep the default, and send one processor back to it.
	procsCrowd = 256
	// procsFlap: going back up within it of dropping doubles procsHold (from procsHoldMin up to
	// procsHoldMax), the time before the next drop, so a load near the threshold does not make
	// the proxy switch back and forth.
	procsFlap    = 5 * time.Second
	procsHoldMin = 2 * time.Second
	procsHoldMax = time.Minute
)

// procsWindowLoad is what one window measured.
type procsWindowLoad struct {
	// cores is the process's CPU time in the window divided by its length.
	cores float64
	// waitP90 is the 90th percentile of the time goroutines spent runnable before they ran, and
	// waits how many such waits the window saw.
	waitP90 time.Duration
	waits   uint64
	// goroutines is how many goroutines there were at the end of the window.
	goroutines uint64
}

// procsTuner decides, window by window, between one processor and the default.
type procsTuner struct {
	one      bool
	recent   [procsDownWindows]float64 // cores of the last non-idle windows, a ring
	n, next  int
	busy     int
	dropped  time.Time
	hold     time.Duration
	holdTill time.Time
}

// observe takes one window's load and returns -1 to drop to one processor, +1 to go back to the
// default, and 0 to stay.
func (t *procsTuner) observe(now time.Time, w procsWindowLoad) int {
	if t.one {
		if w.cores > procsBusy || (w.waits >= 20 && w.waitP90 > procsWaitP90) || w.goroutines > procsCrowd {
			t.busy++
		} else {
			t.busy = 0
		}
		if t.busy < procsUpWindows {
			return 0
		}
		t.one, t.busy, t.n, t.next = false, 0, 0, 0
		if now.Sub(t.dropped) < procsFlap {
			t.hold = min(max(2*t.hold, procsHoldMin), procsHoldMax)
			t.holdTill = now.Add(t.hold)
		} else {
			t.hold = 0
		}
		return 1
	}
	if w.goroutines > procsCrowd {
		t.n, t.next = 0, 0
		return 0
	}
	if w.cores < procsIdle {
		return 0
	}
	t.recent[t.next] = w.cores
	t.next = (t.next + 1) % len(t.recent)
	t.n = min(t.n+1, len(t.recent))
	if t.n < len(t.recent) || now.Before(t.holdTill) {
		return 0
	}
	var sum float64
	for _, c := range t.recent {
		sum += c
	}
	if sum/float64(len(t.recent)) >= procsLight {
		return 0
	}
	t.one, t.dropped = true, now
	return -1
}

// tuneProcs moves GOMAXPROCS between one and the runtime's default with the load, until ctx
// ends, and leaves the default behind. It is not started when GOMAXPROCS is set in the
// environment: the operator's setting wins.
func tuneProcs(ctx context.Context) {
	if runtime.GOMAXPROCS(0) <= 1 {
		return
	}
	defer runtime.SetDefaultGOMAXPROCS()
	var tuner procsTuner
	m := newProcsMeter()
	tick := time.NewTicker(procsWindow)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			switch tuner.observe(now, m.read(now)) {
			case -1:
				runtime.GOMAXPROCS(1)
			case 1:
				runtime.SetDefaultGOMAXPROCS()
			}
		}
	}
}

// procsMeter reads a window's load: the process's CPU time from getrusage and the scheduler's
// latency histogram from runtime/metrics, each as the change since the last read, and the number
// of goroutines.
type procsMeter struct {
	at     time.Time
	cpu    time.Duration
	sample []metrics.Sample
	counts []uint64
}

func newProcsMeter() *procsMeter {
	m := &procsMeter{sample: []metrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/sched/goroutines:goroutines"}}}
	m.read(time.Now())
	return m
}

func (m *procsMeter) read(now time.Time) procsWindowLoad {
	var w procsWindowLoad
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		if wall := now.Sub(m.at); !m.at.IsZero() && wall > 0 {
			w.cores = float64(cpu-m.cpu) / float64(wall)
		}
		m.cpu = cpu
	}
	m.at = now
	metrics.Read(m.sample)
	if m.sample[0].Value.Kind() == metrics.KindFloat64Histogram {
		h := m.sample[0].Value.Float64Histogram()
		w.waitP90, w.waits = histogramDelta(h, m.counts)
		m.counts = append(m.counts[:0], h.Counts...)
	}
	if m.sample[1].Value.Kind() == metrics.KindUint64 {
		w.goroutines = m.sample[1].Value.Uint64()
	}
	return w
}

// histogramDelta returns the 90th percentile (a bucket's lower bound) and the number of samples
// that h gained over the counts prev read earlier from the same histogram.
func histogramDelta(h *metrics.Float64Histogram, prev []uint64) (time.Duration, uint64) {
	if len(prev) != len(h.Counts) {
		return 0, 0 // the first read: no window yet
	}
	var total uint64
	for i, c := range h.Counts {
		total += c - prev[i]
	}
	if total == 0 {
		return 0, 0
	}
	var seen uint64
	for i, c := range h.Counts {
		seen += c - prev[i]
		if seen*10 >= total*9 {
			return time.Duration(max(h.Buckets[i], 0) * float64(time.Second)), total
		}
	}
	return 0, total
}
