package main

import (
	"context"
	"runtime"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, gcMaxPercent},
		{1 << 20, gcMaxPercent},   // 1 MiB live: the floor would need 3100
		{8 << 20, 300},            // 8 MiB live: goal 32 MiB
		{16 << 20, 100},           // 16 MiB: 100 reaches the floor
		{24 << 20, gcMinPercent},  // past the floor: the goal grows by half the live heap
		{100 << 20, gcMinPercent}, // large heaps collect at half the default headroom
		{(32 << 20) / 3, 200},     // a third of the floor
	} {
		if got := gcPercentFor(tc.live, gcFloorMax); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}

// Under a quiet floor the goal is the floor: a proxy at 4 MiB live collects at twice that, and
// one with 1 MiB live, or before its first collection, at GOGC=200, whose minimum heap is the
// floor's 8 MiB (GOGC=400 would have made it 16).
func TestGCPercentForAQuietFloor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{{4 << 20, 100}, {1 << 20, 200}, {0, 200}} {
		if got := gcPercentFor(tc.live, gcFloorMin); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB, 8 MiB floor) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}

// The floor rises at once with the allocation rate, up to its cap, and comes down slowly once the
// rate has.
func TestGCFloorFollowsTheAllocationRate(t *testing.T) {
	const mib = 1 << 20
	var f gcFloor
	t0 := time.Unix(1000, 0)
	if got := f.update(0, t0); got != gcFloorMin {
		t.Fatalf("first floor = %d MiB, want the minimum %d MiB", got/mib, gcFloorMin/mib)
	}
	// 100 MiB/s for a window: 300 ms of it is 30 MiB.
	allocs := uint64(gcRateWindow.Seconds() * 100 * mib)
	now := t0.Add(gcRateWindow)
	if got := f.update(allocs, now); got != 30*mib {
		t.Fatalf("floor at 100 MiB/s = %d MiB, want 30", got/mib)
	}
	// A burst within a shorter window (a collection right after) is no rate yet: the floor
	// stays, and the window goes on.
	allocs += 40 * mib
	if got := f.update(allocs, now.Add(gcRateWindow/10)); got != 30*mib {
		t.Fatalf("floor after a short window = %d MiB, want it kept at 30", got/mib)
	}
	// Over the whole window that burst is 80 MiB/s: the floor decays only a little towards 24.
	now = now.Add(gcRateWindow)
	if got := f.update(allocs, now); got < 24*mib || got >= 30*mib {
		t.Fatalf("floor after 80 MiB/s = %d MiB, want between 24 and 30", got/mib)
	}
	// 1 GiB/s: capped.
	allocs += uint64(gcRateWindow.Seconds() * 1024 * mib)
	now = now.Add(gcRateWindow)
	if got := f.update(allocs, now); got != gcFloorMax {
		t.Fatalf("floor at 1 GiB/s = %d MiB, want the cap %d", got/mib, gcFloorMax/mib)
	}
	// Nothing allocated for one half-life: half the cap.
	now = now.Add(gcFloorHalfLife)
	if got := f.update(allocs, now); got != gcFloorMax/2 {
		t.Fatalf("floor a half-life after the load stopped = %d MiB, want %d", got/mib, gcFloorMax/2/mib)
	}
	// Long after: the minimum, never below it.
	now = now.Add(10 * gcFloorHalfLife)
	if got := f.update(allocs, now); got != gcFloorMin {
		t.Fatalf("floor long after the load = %d MiB, want the minimum %d", got/mib, gcFloorMin/mib)
	}
}

// onEachGC must fire once per collection, and keep firing: each call arms the next.
func TestOnEachGCFiresAfterEveryCollection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := make(chan struct{}, 16)
	onEachGC(ctx, func() { calls <- struct{}{} })
	for i := range 3 {
		runtime.GC()
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("no call after collection %d", i+1)
		}
	}
	// Collections started elsewhere (parallel tests) may have added calls; after cancel, the
	// sentinel armed last still has its cycle, so let that pass, drain, and expect no more.
	cancel()
	for range 3 {
		runtime.GC()
	}
	time.Sleep(100 * time.Millisecond)
	for len(calls) > 0 {
		<-calls
	}
	runtime.GC()
	runtime.GC()
	select {
	case <-calls:
		t.Fatal("onEachGC kept firing after its context ended")
	case <-time.After(200 * time.Millisecond):
	}
}
