package signer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/cache"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"github.com/teslamotors/vehicle-command/pkg/vehicle"

	"github.com/teslaproxy/proxy/internal/forward"
)

// car is one VIN's long-lived state: the vehicle object whose sessions stay live between
// commands, and the lock that serializes commands to it.
type car struct {
	vin string
	// lock is held (a token in the channel) while a command runs. A channel, not a mutex, so a
	// waiting client that leaves gives up its place.
	lock chan struct{}

	// legacy reports whether the vehicle answered 422 (no protocol support): its commands go to
	// the REST API. Atomic, because parameter checks read it before taking the lock.
	legacy atomic.Bool

	// The fields below are guarded by lock.

	// evicted reports whether the pool dropped this car: a request that looked it up before
	// that must look the VIN up again, or it would run a second, unserialized vehicle object.
	evicted  bool
	v        *vehicle.Vehicle
	conn     *conn
	lastUsed time.Time
	// fresh means the saved sessions are not to be used for this car again (see reset).
	fresh bool
}

// acquire takes the car's lock, or gives up when ctx ends.
func (c *car) acquire(ctx context.Context) error {
	select {
	case c.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *car) release() { <-c.lock }

// pool holds a bounded number of cars, dropping the least recently used idle one when full.
type pool struct {
	key      protocol.ECDHPrivateKey
	fwd      *forward.Forwarder
	max      int
	counters *counters
	// seed holds sessions restored at start; a car built for a VIN in it starts with them. It is
	// set once by newPool and only read after that.
	seed *cache.SessionCache

	mu   sync.Mutex
	cars map[string]*car
}

func newPool(key protocol.ECDHPrivateKey, fwd *forward.Forwarder, max int, seed *cache.SessionCache, c *counters) *pool {
	if max <= 0 {
		max = 10_000
	}
	return &pool{key: key, fwd: fwd, max: max, counters: c, cars: make(map[string]*car), seed: seed}
}

// get returns the car for vin, creating it (without a vehicle object yet) if needed.
func (p *pool) get(vin string) *car {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.cars[vin]; ok {
		return c
	}
	c := &car{vin: vin, lock: make(chan struct{}, 1)}
	p.cars[vin] = c
	if len(p.cars) > p.max {
		p.evictLocked(vin)
	}
	return c
}

// legacy reports whether vin is known not to support the protocol. It takes no car lock.
func (p *pool) legacy(vin string) bool {
	p.mu.Lock()
	c := p.cars[vin]
	p.mu.Unlock()
	return c != nil && c.legacy.Load()
}

// evictLocked drops the least recently used car that is not busy, other than keep.
func (p *pool) evictLocked(keep string) {
	var oldest *car
	for vin, c := range p.cars {
		if vin == keep {
			continue
		}
		select {
		case c.lock <- struct{}{}:
		default:
			continue // busy: not a candidate
		}
		if oldest == nil || c.lastUsed.Before(oldest.lastUsed) {
			if oldest != nil {
				oldest.release()
			}
			oldest = c
		} else {
			c.release()
		}
	}
	if oldest == nil {
		return
	}
	delete(p.cars, oldest.vin)
	if oldest.v != nil {
		oldest.v.Disconnect()
		oldest.v = nil
	}
	oldest.evicted = true
	oldest.release()
}

// vehicle returns c's vehicle object, building and connecting it on first use. c's lock must be
// held.
func (p *pool) vehicle(ctx context.Context, c *car) (*vehicle.Vehicle, error) {
	if c.v != nil {
		return c.v, nil
	}
	cn := newConn(c.vin, p.fwd, p.counters)
	seed := p.seed
	if c.fresh {
		seed = nil
	}
	v, err := vehicle.NewVehicle(cn, p.key, seed)
	if err != nil {
		// A seed entry the library cannot load is no reason to fail: start without it.
		if v, err = vehicle.NewVehicle(cn, p.key, nil); err != nil {
			return nil, err
		}
	}
	if err := v.Connect(ctx); err != nil {
		v.Disconnect()
		return nil, err
	}
	c.v, c.conn = v, cn
	return v, nil
}

// reset drops c's vehicle object and its sessions, so the next command starts with a handshake
// (and never again from the saved sessions). c's lock must be held.
func (p *pool) reset(c *car) {
	if c.v != nil {
		c.v.Disconnect()
	}
	c.v, c.conn, c.fresh = nil, nil, true
}

// sessions exports the live sessions of every car (and seed entries for cars not built yet).
func (p *pool) sessions() *cache.SessionCache {
	out := cache.New(0)
	p.mu.Lock()
	if p.seed != nil {
		for vin, entries := range p.seed.Vehicles {
			_ = out.Update(vin, entries)
		}
	}
	cars := make([]*car, 0, len(p.cars))
	for _, c := range p.cars {
		cars = append(cars, c)
	}
	p.mu.Unlock()
	for _, c := range cars {
		// Exporting reads the dispatcher under its own lock; it does not need the car's.
		if err := c.acquireExport(); err != nil {
			continue
		}
		v := c.v
		c.release()
		if v != nil {
			_ = v.UpdateCachedSessions(out)
		}
	}
	return out
}

// acquireExport takes the car's lock briefly for reading its vehicle pointer; it waits at most a
// moment, since an export that skips one busy car is still useful.
func (c *car) acquireExport() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.acquire(ctx)
}

// close disconnects every vehicle.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for vin, c := range p.cars {
		if c.acquireExport() == nil {
			if c.v != nil {
				c.v.Disconnect()
				c.v = nil
			}
			c.evicted = true
			c.release()
		}
		delete(p.cars, vin)
	}
}
