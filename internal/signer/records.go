package signer

import (
	"context"

	"github.com/teslaproxy/proxy/internal/sessions"
)

// records is where a Signer keeps the cars' session records and how it serializes the commands to
// one car: within this process (localRecords, the embedded store), or across replicas as well
// (sharedRecords, a store in Redis).
type records interface {
	// Acquire waits for vin's turn and returns it with vin's record. The wait ends with ctx.
	Acquire(ctx context.Context, vin string) (turn, error)
	// Peek returns vin's record as this process last saw it, without waiting or marking it used.
	Peek(vin string) (sessions.Record, bool)
}

// turn is one command's exclusive hold on a car. Exactly one of Commit and Release ends it.
type turn interface {
	// Record is the record the command starts from.
	Record() sessions.Record
	// Commit keeps rec as the car's record and ends the turn.
	Commit(rec sessions.Record)
	// Release ends the turn and keeps the record as it was.
	Release()
}

// SharedStore is a session store that replicas share, such as sessions.Redis: it serializes the
// commands to a car across replicas with a lease, and keeps a local copy of every record.
type SharedStore interface {
	// Acquire waits for vin's lease and returns it with vin's record.
	Acquire(ctx context.Context, vin string) (*sessions.Lease, error)
	// Local returns the replica's own copy of the records.
	Local() *sessions.Store
}

// localRecords serializes a car's commands with this process's lock and keeps its records in the
// embedded store.
type localRecords struct {
	store *sessions.Store
	locks *vinLocks
}

// Peek returns vin's record without waiting for its turn.
func (t localRecords) Peek(vin string) (sessions.Record, bool) { return t.store.Peek(vin) }

// Acquire waits for vin's turn in this process, or until ctx ends.
func (t localRecords) Acquire(ctx context.Context, vin string) (turn, error) {
	l, err := t.locks.lock(ctx, vin)
	if err != nil {
		return nil, err
	}
	rec, _ := t.store.Get(vin)
	return &localTurn{t: t, vin: vin, l: l, rec: rec}, nil
}

// localTurn is a car's turn under this process's lock.
type localTurn struct {
	t   localRecords
	vin string
	l   *vinLock
	rec sessions.Record
}

// Record returns the record the turn started from.
func (h *localTurn) Record() sessions.Record { return h.rec }

// Commit stores rec and ends the turn.
func (h *localTurn) Commit(rec sessions.Record) {
	h.t.store.Put(h.vin, rec)
	h.Release()
}

// Release ends the turn without storing anything.
func (h *localTurn) Release() { h.t.locks.unlock(h.vin, h.l) }

// sharedRecords takes this process's lock first, so that the commands of one replica to a car
// queue here rather than poll the shared store, and then the shared lease.
type sharedRecords struct {
	shared SharedStore
	locks  *vinLocks
}

// Peek returns this replica's copy of vin's record without waiting for its turn; another
// replica may have moved on since.
func (t sharedRecords) Peek(vin string) (sessions.Record, bool) { return t.shared.Local().Peek(vin) }

// Acquire waits for this process's lock and then the shared lease for vin, or until ctx ends;
// on failure it holds neither.
func (t sharedRecords) Acquire(ctx context.Context, vin string) (turn, error) {
	l, err := t.locks.lock(ctx, vin)
	if err != nil {
		return nil, err
	}
	lease, err := t.shared.Acquire(ctx, vin)
	if err != nil {
		t.locks.unlock(vin, l)
		return nil, err
	}
	return &sharedTurn{locks: t.locks, vin: vin, l: l, lease: lease}, nil
}

// sharedTurn is a car's turn under this process's lock and the shared lease.
type sharedTurn struct {
	locks *vinLocks
	vin   string
	l     *vinLock
	lease *sessions.Lease
}

// Record returns the record the lease was granted with (see sessions.Lease.Record).
func (h *sharedTurn) Record() sessions.Record { return h.lease.Record() }

// Commit keeps rec through the lease (locally, and in the shared store unless another replica
// has taken the lease since), then releases the local lock.
func (h *sharedTurn) Commit(rec sessions.Record) {
	h.lease.Commit(rec)
	h.locks.unlock(h.vin, h.l)
}

// Release gives up the lease and the local lock and leaves the record as it was.
func (h *sharedTurn) Release() {
	h.lease.Release()
	h.locks.unlock(h.vin, h.l)
}

var (
	_ records     = localRecords{}
	_ records     = sharedRecords{}
	_ SharedStore = (*sessions.Redis)(nil)
)
