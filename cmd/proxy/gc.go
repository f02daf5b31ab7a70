package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// GC tuning. The proxy's live heap is a few MiB when it serves a handful of connections, and the
// collector at the default GOGC=100 then runs every few MiB of request garbage: a fifth of the CPU
// of a small pass-through request. With thousands of connections the live heap is tens of MiB, and
// a fixed higher GOGC (200 before issue 11) multiplies that into the peak RSS: 169 MiB at 1,000
// connections against the reference's 98 MiB. So the goal is kept at least gcHeapFloor: GOGC rises
// while the live heap is small (up to gcMaxPercent), and falls to gcMinPercent once the heap is
// large. A large live heap means thousands of connections, each holding buffers and goroutine
// stacks; there the collector's extra runs cost less than letting the heap grow to twice that.
const (
	gcHeapFloor  = 32 << 20
	gcMaxPercent = 400
	gcMinPercent = 50
	gcTunePeriod = 50 * time.Millisecond
)

// gcPercentFor returns the GOGC that puts the heap goal at gcHeapFloor for a live heap of live
// bytes, within [gcMinPercent, gcMaxPercent].
func gcPercentFor(live uint64) int {
	if live == 0 {
		return gcMaxPercent
	}
	p := int(min(gcHeapFloor*100/live, gcMaxPercent+100)) - 100 //nolint:gosec // G115: at most gcMaxPercent+100
	return max(gcMinPercent, min(gcMaxPercent, p))
}

// tuneGC adjusts GOGC to the live heap after every collection until ctx ends. It is not started
// when GOGC is set in the environment: the operator's setting wins.
//
// It runs at the end of each GC cycle, and every gcTunePeriod: a burst of connections (1,000 TLS
// handshakes at once) grows the live heap from a few MiB to tens within one tick of a 200 ms timer,
// and the cycle after it then ran with the small heap's GOGC of 400, letting the heap reach five
// times its live size before the 200 ms timer of the first version caught up. That was the largest
// part of the peak RSS in the benchmark's 1,000-connection row.
func tuneGC(ctx context.Context) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	last := -1
	retune := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		if p := gcPercentFor(sample[0].Value.Uint64()); p != last {
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
// runtime's cleanup goroutine once the cycle has found the previous sentinel unreachable, and
// arms the next one; f must not block.
func onEachGC(ctx context.Context, f func()) {
	var arm func()
	arm = func() {
		runtime.AddCleanup(new(gcSentinel), func(struct{}) {
			if ctx.Err() != nil {
				return
			}
			f()
			arm()
		}, struct{}{})
	}
	arm()
}
