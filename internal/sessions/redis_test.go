package sessions

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/teslaproxy/proxy/internal/testenv/redistest"
)

// replica opens a Redis store with its own local copy, as one proxy replica would.
func replica(t *testing.T, url string, hooks RedisHooks) *Redis {
	t.Helper()
	local, err := Open(Options{Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	r, err := OpenRedis(RedisOptions{URL: url, Prefix: "test:", Local: local, ProbeEvery: 20 * time.Millisecond, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(); _ = local.Close() })
	return r
}

func session(counter uint32, epoch byte) Session {
	s := Session{Valid: true, Counter: counter, Clock: 10, TimeZero: time.Now().Add(-time.Minute).UnixNano()}
	s.CarKey[0] = 4
	s.Epoch[0] = epoch
	return s
}

func rawClient(t *testing.T, srv *redistest.Server) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRedisSharesRecordsInTwoRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	a, b := replica(t, srv.URL(), RedisHooks{}), replica(t, srv.URL(), RedisHooks{})
	const vin = "5YJ3E1EA1KF000001"

	l, err := a.Acquire(t.Context(), vin)
	if err != nil || !l.Shared() {
		t.Fatalf("Acquire: shared %v, %v", l != nil && l.Shared(), err)
	}
	var rec Record
	rec.Sessions[VCSEC] = session(7, 1)
	rec.Legacy = false
	if !l.Commit(rec) {
		t.Fatal("Commit was refused")
	}
	// Scripts are loaded on first use (NOSCRIPT, then EVAL): count a warm pair.
	before := a.RoundTrips()
	l, _ = a.Acquire(t.Context(), vin)
	rec.Sessions[VCSEC].Counter = 8
	l.Commit(rec)
	if got := a.RoundTrips() - before; got != 2 {
		t.Errorf("a warm acquire and commit took %d round trips, want 2", got)
	}

	l, err = b.Acquire(t.Context(), vin)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Record().Sessions[VCSEC]; got != rec.Sessions[VCSEC] {
		t.Errorf("the other replica read %+v, want %+v", got, rec.Sessions[VCSEC])
	}
	l.Release()
}

func TestRedisLeaseExcludesOtherReplicas(t *testing.T) {
	srv := redistest.Start(t)
	var waits atomic.Int64
	a := replica(t, srv.URL(), RedisHooks{})
	b := replica(t, srv.URL(), RedisHooks{LockWait: func(float64) { waits.Add(1) }})
	const vin = "5YJ3E1EA1KF000002"

	la, err := a.Acquire(t.Context(), vin)
	if err != nil {
		t.Fatal(err)
	}
	// While a holds the lease, b waits until its context ends.
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan error, 1)
	go func() {
		l, err := b.Acquire(ctx, vin)
		if l != nil {
			l.Release()
		}
		got <- err
	}()
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire while another replica holds the lease: %v, want context.Canceled", err)
	}

	// Once a commits (which releases), b gets the lease and a's record.
	done := make(chan *Lease, 1)
	go func() {
		l, err := b.Acquire(t.Context(), vin)
		if err != nil {
			t.Error(err)
		}
		done <- l
	}()
	var rec Record
	rec.Sessions[Infotainment] = session(42, 2)
	if !la.Commit(rec) {
		t.Fatal("Commit was refused")
	}
	lb := <-done
	if lb == nil {
		t.FailNow()
	}
	defer lb.Release()
	if !lb.Shared() || lb.Record().Sessions[Infotainment].Counter != 42 {
		t.Errorf("b after a's commit: shared %v, counter %d, want shared and 42", lb.Shared(), lb.Record().Sessions[Infotainment].Counter)
	}
}

func TestRedisFenceRefusesStaleHolder(t *testing.T) {
	srv := redistest.Start(t)
	var lost atomic.Int64
	a := replica(t, srv.URL(), RedisHooks{LeaseLost: func() { lost.Add(1) }})
	b := replica(t, srv.URL(), RedisHooks{})
	raw := rawClient(t, srv)
	const vin = "5YJ3E1EA1KF000003"

	la, err := a.Acquire(t.Context(), vin)
	if err != nil {
		t.Fatal(err)
	}
	// a's lease runs out (a GC pause, a partition): drop it as its expiry would.
	if err := raw.Del(t.Context(), a.keys(vin)[0]).Err(); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(t.Context(), vin)
	if err != nil {
		t.Fatal(err)
	}
	var rb Record
	rb.Sessions[VCSEC] = session(10, 1)
	if !lb.Commit(rb) {
		t.Fatal("the current holder's commit was refused")
	}
	var ra Record
	ra.Sessions[VCSEC] = session(5, 1)
	if la.Commit(ra) {
		t.Fatal("a stale holder's commit was accepted")
	}
	if lost.Load() != 1 {
		t.Errorf("lease losses counted: %d, want 1", lost.Load())
	}
	l, _ := b.Acquire(t.Context(), vin)
	defer l.Release()
	if c := l.Record().Sessions[VCSEC].Counter; c != 10 {
		t.Errorf("stored counter %d after the stale write, want 10", c)
	}
}

func TestRedisCounterNeverGoesBack(t *testing.T) {
	srv := redistest.Start(t)
	a, b := replica(t, srv.URL(), RedisHooks{}), replica(t, srv.URL(), RedisHooks{})
	const vin = "5YJ3E1EA1KF000004"

	la, _ := a.Acquire(t.Context(), vin)
	var rec Record
	rec.Sessions[VCSEC] = session(20, 1)
	la.Commit(rec)

	// b holds the lease rightfully but writes a lower counter for the same epoch.
	lb, _ := b.Acquire(t.Context(), vin)
	rec.Sessions[VCSEC].Counter = 3
	if lb.Commit(rec) {
		t.Fatal("a counter going back was written")
	}
	// A new epoch (the car rebooted) may start low.
	lb, _ = b.Acquire(t.Context(), vin)
	rec.Sessions[VCSEC] = session(1, 9)
	if !lb.Commit(rec) {
		t.Fatal("a new epoch's first counter was refused")
	}
}

func TestRedisMergeKeepsLocalCounterAhead(t *testing.T) {
	var remote, local Record
	remote.Sessions[VCSEC] = session(5, 1)
	local.Sessions[VCSEC] = session(9, 1)
	local.Sessions[Infotainment] = session(3, 2)
	local.Legacy = true
	got := merge(remote, local)
	if got.Sessions[VCSEC].Counter != 9 || !got.Sessions[Infotainment].Valid || !got.Legacy {
		t.Errorf("merge = %+v", got)
	}
	local.Sessions[VCSEC] = session(50, 7) // another epoch: the shared one wins
	if got := merge(remote, local); got.Sessions[VCSEC].Counter != 5 {
		t.Errorf("merge across epochs took counter %d, want the shared 5", got.Sessions[VCSEC].Counter)
	}
}

func TestRedisDownServesLocallyAndReconciles(t *testing.T) {
	srv := redistest.Start(t)
	var degraded, local atomic.Int64
	a := replica(t, srv.URL(), RedisHooks{
		Degraded:     func(on bool) { degraded.Add(map[bool]int64{true: 1, false: 100}[on]) },
		LocalCommand: func() { local.Add(1) },
	})
	const vin = "5YJ3E1EA1KF000005"
	var rec Record
	rec.Sessions[VCSEC] = session(4, 1)
	l, _ := a.Acquire(t.Context(), vin)
	l.Commit(rec)

	srv.Stop()
	// Every call fails fast; the store degrades once and serves from local state.
	for i := range 3 {
		l, err := a.Acquire(t.Context(), vin)
		if err != nil {
			t.Fatal(err)
		}
		if l.Shared() {
			t.Fatal("a lease was shared with Redis down")
		}
		if c := l.Record().Sessions[VCSEC].Counter; c != uint32(4+i) {
			t.Fatalf("local record counter %d, want %d", c, 4+i)
		}
		rec.Sessions[VCSEC].Counter = uint32(5 + i)
		l.Commit(rec)
	}
	if !a.Degraded() || degraded.Load() != 1 || local.Load() != 3 {
		t.Fatalf("degraded %v, transitions %d, local commands %d; want true, 1, 3", a.Degraded(), degraded.Load(), local.Load())
	}

	// Redis comes back empty: the store reconciles what it kept and leaves the degraded state.
	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for a.Degraded() {
		if time.Now().After(deadline) {
			t.Fatal("still degraded 30 s after Redis came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b := replica(t, srv.URL(), RedisHooks{})
	lb, err := b.Acquire(t.Context(), vin)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Release()
	if !lb.Shared() || lb.Record().Sessions[VCSEC].Counter != 7 {
		t.Errorf("after reconcile another replica reads shared %v counter %d, want true 7", lb.Shared(), lb.Record().Sessions[VCSEC].Counter)
	}
}

func TestRedisHungServerTimesOut(t *testing.T) {
	srv := redistest.Start(t)
	var calls, failed atomic.Int64
	a := replica(t, srv.URL(), RedisHooks{Call: func(_ string, _ float64, f bool) {
		calls.Add(1)
		if f {
			failed.Add(1)
		}
	}})
	const vin = "5YJ3E1EA1KF000006"
	l, _ := a.Acquire(t.Context(), vin)
	l.Release()
	srv.Pause()
	defer srv.Resume()
	calls.Store(0)
	failed.Store(0)
	// Each call times out; the acquire tries again until calls have failed for a while, then the
	// store degrades and the command runs on local state.
	l, err := a.Acquire(t.Context(), vin)
	if err != nil {
		t.Fatal(err)
	}
	if l.Shared() || !a.Degraded() {
		t.Errorf("with Redis hung: shared %v, degraded %v; want false, true", l.Shared(), a.Degraded())
	}
	if failed.Load() < failuresToDegrade || failed.Load() != calls.Load() {
		t.Errorf("%d calls, %d failed before degrading; want at least %d, all failed", calls.Load(), failed.Load(), failuresToDegrade)
	}
	l.Commit(Record{})
}

func TestOpenRedisRefusesBadURL(t *testing.T) {
	local, _ := Open(Options{Size: 1})
	defer local.Close()
	const leaky = "http://user:s3cret@127.0.0.1:1/0" //nolint:gosec // G101: a fake password; the test checks it stays out of the error
	_, err := OpenRedis(RedisOptions{URL: leaky, Prefix: "p:", Local: local})
	if err == nil {
		t.Fatal("an http:// URL was accepted")
	}
	if got := err.Error(); strings.Contains(got, "s3cret") {
		t.Errorf("error %q shows the password", got)
	}
}

// TestRedisScriptsCanBeRepeated: an acquire or a commit whose answer was lost (a timeout) is
// sent again; the repeat must answer as the first did, not wait for its own lease or refuse its
// own write.
func TestRedisScriptsCanBeRepeated(t *testing.T) {
	srv := redistest.Start(t)
	a := replica(t, srv.URL(), RedisHooks{})
	keys := a.keys("5YJ3E1EA1KF000007")
	ttl := a.ttl.Milliseconds()
	first, err := acquireScript.Run(t.Context(), a.client, keys, "tok", ttl).Slice()
	if err != nil {
		t.Fatal(err)
	}
	again, err := acquireScript.Run(t.Context(), a.client, keys, "tok", ttl).Slice()
	if err != nil {
		t.Fatal(err)
	}
	if first[0].(int64) < 1 || again[0] != first[0] {
		t.Fatalf("acquire then its repeat: fence %v then %v, want the same fence, at least 1", first[0], again[0])
	}
	var rec Record
	rec.Sessions[VCSEC] = session(3, 1)
	args := append([]any{"tok", first[0]}, stateArgs(rec)...)
	for i := range 2 {
		n, err := commitScript.Run(t.Context(), a.client, keys, args...).Int64()
		if err != nil || n != 1 {
			t.Fatalf("commit #%d: %d %v, want 1", i+1, n, err)
		}
	}
}
