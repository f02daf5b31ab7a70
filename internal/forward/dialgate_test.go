package forward

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A dial beyond maxDialsPerHost waits; it is dropped once its request has a connection, goes
// ahead once a place is free and its request still has none, and gives up with its context.
func TestDialGateHoldsDialsAndDropsTheOnesNoLongerNeeded(t *testing.T) {
	var g dialGate
	const addr = "fleet-api.test:443"
	ctx := t.Context()
	for i := range maxDialsPerHost {
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
		t.Fatalf("a dial beyond %d went ahead: %v", maxDialsPerHost, err)
	case err := <-waitingDone:
		t.Fatalf("a dial beyond %d went ahead: %v", maxDialsPerHost, err)
	case <-time.After(50 * time.Millisecond):
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
	// Another host is not held back by this one.
	if err := g.acquire(ctx, "other.test:443", nil); err != nil {
		t.Fatal(err)
	}
}
