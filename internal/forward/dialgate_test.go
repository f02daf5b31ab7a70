package forward

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// A dial beyond maxDialsPerHost waits; it is dropped once its request has a connection, goes
// ahead once a place is free and its request still has none, and gives up with its context.
func TestDialGateHoldsDialsAndDropsTheOnesNoLongerNeeded(t *testing.T) {
	var heldNow, heldMax atomic.Int64
	g := dialGate{max: DefaultMaxDialsPerHost, onHeld: func(d float64) {
		if n := heldNow.Add(int64(d)); n > heldMax.Load() {
			heldMax.Store(n)
		}
	}}
	const addr = "fleet-api.test:443"
	ctx := t.Context()
	for i := range g.max {
		if err := g.acquire(ctx, addr, nil); err != nil {
			t.Fatalf("dial %d: %v", i+1, err)
		}
	}
	held := func(w *connWant, ctx context.Context) chan error {
		done := make(chan error, 1)
		go func() { done <- g.acquire(ctx, addr, w) }()
		return done
	}
	served, waiting := new(connWant), new(connWant)
	servedDone, waitingDone := held(served, ctx), held(waiting, ctx)
	cctx, cancel := context.WithCancel(ctx)
	canceledDone := held(new(connWant), cctx)
	select {
	case err := <-servedDone:
		t.Fatalf("a dial beyond %d went ahead: %v", g.max, err)
	case err := <-waitingDone:
		t.Fatalf("a dial beyond %d went ahead: %v", g.max, err)
	case <-time.After(50 * time.Millisecond):
	}
	if n := heldNow.Load(); n != 3 {
		t.Fatalf("%d dials counted as held, want 3", n)
	}
	cancel()
	if err := <-canceledDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("held dial after its context ended: %v, want context.Canceled", err)
	}
	// The transport hands the new connection to served's request; a place frees up.
	served.got.Store(true)
	g.release(addr, nil)
	if err := <-servedDone; !errors.Is(err, errDialNotNeeded) {
		t.Fatalf("held dial of a request with a connection: %v, want errDialNotNeeded", err)
	}
	if err := <-waitingDone; err != nil {
		t.Fatalf("held dial of a request without a connection: %v, want it to go ahead", err)
	}
	if n, m := heldNow.Load(), heldMax.Load(); n != 0 || m != 3 {
		t.Fatalf("held count %d at the end (at most %d), want 0 (at most 3)", n, m)
	}
	// Another host is not held back by this one.
	if err := g.acquire(ctx, "other.test:443", nil); err != nil {
		t.Fatal(err)
	}
}
