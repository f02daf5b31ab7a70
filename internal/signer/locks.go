package signer

import (
	"context"
	"sync"
)

// vinLocks serializes commands per VIN. A VIN has a lock only while a command holds it or waits
// for it, so the table grows with the commands in flight, not with the fleet.
type vinLocks struct {
	mu sync.Mutex
	m  map[string]*vinLock
}

type vinLock struct {
	// ch holds a token while a command runs. A channel, not a mutex, so a waiting client that
	// leaves gives up its place.
	ch chan struct{}
	// refs counts holders and waiters; guarded by vinLocks.mu.
	refs int
}

// lock takes vin's lock, or gives up when ctx ends. The caller must call unlock(vin, l) once.
func (t *vinLocks) lock(ctx context.Context, vin string) (*vinLock, error) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[string]*vinLock)
	}
	l := t.m[vin]
	if l == nil {
		l = &vinLock{ch: make(chan struct{}, 1)}
		t.m[vin] = l
	}
	l.refs++
	t.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
		// select picks at random when both are ready: a client that already left must not go
		// on to run its command.
		if err := ctx.Err(); err != nil {
			<-l.ch
			t.drop(vin, l)
			return nil, err
		}
		return l, nil
	case <-ctx.Done():
		t.drop(vin, l)
		return nil, ctx.Err()
	}
}

// unlock releases a lock taken by lock.
func (t *vinLocks) unlock(vin string, l *vinLock) {
	<-l.ch
	t.drop(vin, l)
}

func (t *vinLocks) drop(vin string, l *vinLock) {
	t.mu.Lock()
	l.refs--
	if l.refs == 0 {
		delete(t.m, vin)
	}
	t.mu.Unlock()
}

// held returns how many VINs have a command running or waiting.
func (t *vinLocks) held() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
