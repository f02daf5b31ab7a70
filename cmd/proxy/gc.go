package main

import (
	"context"
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
	gcTunePeriod = 200 * time.Millisecond
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

// tuneGC adjusts GOGC to the live heap until ctx ends. It is not started when GOGC is set in the
// environment: the operator's setting wins.
func tuneGC(ctx context.Context) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	last := -1
	t := time.NewTicker(gcTunePeriod)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if p := gcPercentFor(sample[0].Value.Uint64()); p != last {
				debug.SetGCPercent(p)
				last = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
