package main

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// GC tuning. The proxy's live heap is a few MiB when it serves a handful of connections, and the
// collector at the default GOGC=100 then runs every few MiB of request garbage: a fifth of the CPU
// of a small pass-through request. With thousands of connections the live heap is tens of MiB, and
// a fixed higher GOGC (200 before issue 11) multiplies that into the peak RSS: 169 MiB at 1,000
// connections against the reference's 98 MiB. So the heap goal is kept at least a floor: GOGC
// rises while the live heap is small (up to gcMaxPercent), and falls to gcMinPercent once the heap
// is large. A large live heap means thousands of connections, each holding buffers and goroutine
// stacks; there the collector's extra runs cost less than letting the heap grow to twice that.
//
// The floor follows the allocation rate: it holds gcFloorSpan of allocation, between gcFloorMin
// and gcFloorMax. Thousands of small requests a second allocate tens of MiB a second and get the
// whole 32 MiB; a quiet proxy, or one streaming a large body through pooled buffers, allocates
// little, and then has no reason to keep 32 MiB of garbage in its RSS (issue 7's streaming row:
// the warm-up's garbage alone took the peak past idle + 16 MiB).
const (
	gcFloorMax   = 32 << 20
	gcFloorMin   = 8 << 20
	gcFloorSpan  = 300 * time.Millisecond
	gcMaxPercent = 400
	gcMinPercent = 50
	gcTunePeriod = 50 * time.Millisecond
	// gcRateWindow is the shortest time the allocation rate is measured over. Shorter windows
	// see spikes, not a rate: the proxy's own start-up allocates several MiB within 50 ms, and
	// set the floor to the full 32 MiB for the seconds it took to decay.
	gcRateWindow = 500 * time.Millisecond
	// gcFloorHalfLife is how fast the floor comes down once the allocation rate has: slowly,
	// so that the pauses between a client's bursts do not reset it.
	gcFloorHalfLife = 2 * time.Second
)

// gcPercentFor returns the GOGC that puts the heap goal at floor for a live heap of live bytes,
// within [gcMinPercent, gcMaxPercent].
//
// The runtime's goal is never below its minimum heap, 4 MiB scaled by GOGC/100 (16 MiB at
// GOGC=400), and before the first collection that minimum is the whole goal: so GOGC is also kept
// at most what puts the minimum at the floor. Without that, a quiet proxy with 1 MiB live ran at
// GOGC=400 with a 16 MiB goal whatever its floor, and its RSS held the difference.
func gcPercentFor(live, floor uint64) int {
	p := int(min(floor*100/gcMinHeapUnit, gcMaxPercent)) //nolint:gosec // G115: at most gcMaxPercent
	if live > 0 {
		p = min(p, int(min(floor*100/live, gcMaxPercent+100))-100) //nolint:gosec // G115: at most gcMaxPercent+100
	}
	return max(gcMinPercent, min(gcMaxPercent, p))
}

// gcMinHeapUnit is the runtime's minimum heap goal at GOGC=100 (runtime.defaultHeapMinimum).
const gcMinHeapUnit = 4 << 20

// gcFloor is the heap-goal floor: at the end of each window of at least gcRateWindow it rises at
// once to hold gcFloorSpan of the allocation rate measured over the window, or decays towards it
// with gcFloorHalfLife.
type gcFloor struct {
	floor     float64 // bytes
	allocs    uint64  // /gc/heap/allocs:bytes at the start of the window
	windowEnd time.Time
}

// update takes the allocation counter at now and returns the floor in bytes.
func (f *gcFloor) update(allocs uint64, now time.Time) uint64 {
	if f.windowEnd.IsZero() {
		f.floor, f.allocs, f.windowEnd = gcFloorMin, allocs, now
		return gcFloorMin
	}
	dt := now.Sub(f.windowEnd)
	if dt < gcRateWindow {
		return uint64(f.floor) &^ (1<<20 - 1)
	}
	rate := float64(allocs-f.allocs) / dt.Seconds()
	want := min(max(rate*gcFloorSpan.Seconds(), gcFloorMin), gcFloorMax)
	decayed := f.floor * math.Exp2(-dt.Seconds()/gcFloorHalfLife.Seconds())
	f.floor = max(want, decayed, gcFloorMin)
	f.allocs, f.windowEnd = allocs, now
	// Whole MiB, so that GOGC is not set again for every few bytes of drift.
	return uint64(f.floor) &^ (1<<20 - 1)
}

// tuneGC adjusts GOGC to the live heap and the allocation rate after every collection until ctx
// ends. It is not started when GOGC is set in the environment: the operator's setting wins.
//
// It runs at the end of each GC cycle, and every gcTunePeriod: a burst of connections (1,000 TLS
// handshakes at once) grows the live heap from a few MiB to tens within one tick of a 200 ms timer,
// and the cycle after it then ran with the small heap's GOGC of 400, letting the heap reach five
// times its live size before the 200 ms timer of the first version caught up. That was the largest
// part of the peak RSS in the benchmark's 1,000-connection row.
func tuneGC(ctx context.Context) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	var floor gcFloor
	last := -1
	retune := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 || sample[1].Value.Kind() != metrics.KindUint64 {
			return
		}
		f := floor.update(sample[1].Value.Uint64(), time.Now())
		if p := gcPercentFor(sample[0].Value.Uint64(), f); p != last {
			debug.SetGCPercent(p)
			last = p
		}
	}
	retune()
	cycles := make(chan struct{}, 1)
	onEachGC(ctx, func() {
		select {
		case cycles <- struct{}{}:
		default: // a retune is already pending; it will read the newest live heap
		}
	})
	// The cleanup runs once the sentinel's span is swept, which a busy process may put off past
	// the next cycle; the ticker bounds how long a stale GOGC can last.
	tick := time.NewTicker(gcTunePeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-cycles:
			retune()
		case <-tick.C:
			retune()
		}
	}
}

// gcSentinel is an object allocated only to be collected: its cleanup marks the end of a GC cycle.
// It holds a pointer so that it is not batched by the tiny allocator, whose blocks can outlive
// their objects.
type gcSentinel struct{ _ *gcSentinel }

// onEachGC calls f after every garbage collection until ctx ends. Each call comes from the
// runtime's cleanup goroutine once the cycle has found the previous sentinel unreachable; f must
// not block.
//
// The next sentinel is armed before f runs. Armed after, a collection that f's caller started
// on hearing of the last one could begin before the sentinel existed; a sentinel allocated during
// that cycle's mark phase is marked live, and no call would come until some later collection.
func onEachGC(ctx context.Context, f func()) {
	var arm func()
	arm = func() {
		runtime.AddCleanup(new(gcSentinel), func(struct{}) {
			if ctx.Err() != nil {
				return
			}
			arm()
			f()
		}, struct{}{})
	}
	arm()
}
