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
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
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
