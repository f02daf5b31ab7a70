package sessions

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// Shared state in Redis, for replicas (issue 13). Per VIN, under a prefix of the app's key:
//
//	{prefix}{vin}:lease  the lease: a random token, SET NX PX, renewed while a command runs
//	{prefix}{vin}:fence  a counter INCRed on every acquire: the fence of the lease
//	{prefix}{vin}:state  a hash: rec (the Record, MarshalBinary), and per domain its epoch (hex)
//	                     and counter (e0 c0 e1 c1), so a script can refuse a counter going back
//
// Nothing in them is secret: a Record holds only what the vehicle sends in the clear. A warm
// command costs two round trips: acquire+read in one script, write+release in another.

// DefaultCallTimeout bounds one Redis call when RedisOptions.CallTimeout is zero.
const DefaultCallTimeout = 200 * time.Millisecond

// minPoolSize is the least number of connections a replica keeps to Redis.
const minPoolSize = 128

// A Redis that refuses connections (stopped, unreachable) degrades the store at once. One that
// only times out degrades it once calls have kept failing, with no success in between, for
// failingFor and at least failuresToDegrade calls: a replica starved of CPU for a moment, or one
// slow call, must not switch every command to local state, where replicas' counters collide.
// Until then a timed-out acquire or commit is tried again (both scripts can be repeated).
const (
	failuresToDegrade = 3
	failingFor        = time.Second
)

// KeyPrefix returns the prefix of every key a proxy signing with the key whose public half is
// pub writes to Redis: apps with different keys can share one Redis without sharing anything.
func KeyPrefix(pub []byte) string {
	h := sha256.Sum256(pub)
	return "tesla-proxy:" + hex.EncodeToString(h[:8]) + ":"
}

// RedisHooks are told what a Redis store does, for metrics. Every field may be nil.
type RedisHooks struct {
	// Call is told about every store call: what it was ("acquire", "commit", "release",
	// "renew", "reconcile", "ping"), how long it took, and whether it failed.
	Call func(op string, seconds float64, failed bool)
	// LockWait is told how long each acquire waited for another replica's lease.
	LockWait func(seconds float64)
	// LeaseLost is told when a lease ran out, or was taken over, while its command ran.
	LeaseLost func()
	// Degraded is told when Redis becomes unreachable (true) and reachable again (false).
	Degraded func(on bool)
	// LocalCommand is told about every command served from local state alone, Redis being
	// unreachable.
	LocalCommand func()
}

// RedisOptions configures a Redis store.
type RedisOptions struct {
	// URL is redis://[user:password@]host:port/db or rediss://… (TLS).
	URL string
	// Prefix starts every key (see KeyPrefix). Empty is refused.
	Prefix string
	// Local is the replica's own copy of the records; it answers when Redis cannot. Required.
	Local *Store
	// LeaseTTL is how long a lease lives unless renewed; it is renewed every third of it while
	// its command runs. Zero means 3 s. Keep it below the command timeout.
	LeaseTTL time.Duration
	// CallTimeout bounds each Redis call. Zero means DefaultCallTimeout.
	CallTimeout time.Duration
	// ProbeEvery is how often an unreachable Redis is tried again. Zero means 1 s.
	ProbeEvery time.Duration
	// Hooks are told what happens, for metrics.
	Hooks RedisHooks
	// Logger receives warnings; nil means none.
	Logger *zap.Logger
}

// Redis is a store of Records shared by replicas through Redis, with a per-VIN lease that
// serializes the commands to one car across replicas. It keeps every record in its local Store
// as well, and serves from that alone while Redis is unreachable (degraded). It is safe for
// concurrent use.
type Redis struct {
	client  *redis.Client
	prefix  string
	local   *Store
	ttl     time.Duration
	timeout time.Duration
	probe   time.Duration
	hooks   RedisHooks
	log     *zap.Logger

	// roundTrips counts commands sent to Redis (a script is one).
	roundTrips atomic.Int64
	down       atomic.Bool
	failures   atomic.Int32 // calls in a row that failed
	failingAt  atomic.Int64 // Unix ns of the first of them; 0 after a success

	mu     sync.Mutex
	dirty  map[string]struct{} // VINs committed locally while degraded
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

// OpenRedis returns a Redis store for o.URL. It does not need Redis to be reachable: if it is
// not, the store starts degraded and keeps trying.
func OpenRedis(o RedisOptions) (*Redis, error) {
	if o.Local == nil || o.Prefix == "" {
		return nil, errors.New("sessions: a Redis store needs a local store and a key prefix")
	}
	opt, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("session store: %s", redactURLError(err))
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 3 * time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.ProbeEvery <= 0 {
		o.ProbeEvery = time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	// A retried acquire would meet its own lease and a retried commit is decided by the fence:
	// never let the client resend on its own. Every call is bounded by its context.
	opt.MaxRetries = -1
	// A command holds a connection for one script (well under a millisecond), but under load
	// hundreds run at once; waiting for a pooled connection counts against the call timeout.
	opt.PoolSize = max(opt.PoolSize, minPoolSize)
	opt.DialTimeout = o.CallTimeout
	opt.ReadTimeout = o.CallTimeout
	opt.WriteTimeout = o.CallTimeout
	opt.PoolTimeout = o.CallTimeout
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	r := &Redis{
		client: redis.NewClient(opt), prefix: o.Prefix, local: o.Local, ttl: o.LeaseTTL,
		timeout: o.CallTimeout, probe: o.ProbeEvery, hooks: o.Hooks, log: o.Logger,
		dirty: make(map[string]struct{}), stop: make(chan struct{}),
	}
	r.client.AddHook(countHook{&r.roundTrips})
	ctx, cancel := context.WithTimeout(context.Background(), 5*o.CallTimeout)
	defer cancel()
	if err := r.client.Ping(ctx).Err(); err != nil {
		r.degrade(err)
	}
	return r, nil
}

// redactURLError words a URL parse error without the URL, which may hold a password.
func redactURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return "not a valid redis:// or rediss:// URL: " + ue.Err.Error()
	}
	// go-redis names the part it refuses (scheme, database number, option), never the password.
	return err.Error()
}

// Close stops the store's background work and closes the connections. The local Store is the
// caller's to close.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.stop)
	r.mu.Unlock()
	r.wg.Wait()
	return r.client.Close()
}

// Degraded reports whether Redis is unreachable and the store serves from local state alone.
func (r *Redis) Degraded() bool { return r.down.Load() }

// RoundTrips returns how many commands the store has sent to Redis.
func (r *Redis) RoundTrips() int64 { return r.roundTrips.Load() }

// Local returns the replica's own copy of the records.
func (r *Redis) Local() *Store { return r.local }

func (r *Redis) keys(vin string) []string {
	base := r.prefix + "{" + vin + "}:"
	return []string{base + "lease", base + "fence", base + "state"}
}

var (
	// acquireScript takes the lease and reads the state in one round trip. It answers
	// {fence, record or false} when it took the lease, {0, ms left} when another holds it.
	// A repeat of an acquire whose answer was lost finds its own token and answers as the first
	// time did.
	acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local f = redis.call('INCR', KEYS[2])
  return {f, redis.call('HGET', KEYS[3], 'rec')}
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {tonumber(redis.call('GET', KEYS[2])), redis.call('HGET', KEYS[3], 'rec')}
end
return {0, redis.call('PTTL', KEYS[1])}`)

	// commitScript writes the state, fenced, and releases the lease, in one round trip. It
	// answers 1 when it wrote, 0 when the fence is not current or another holds the lease, and
	// -1 when a domain's counter would go back within the same epoch.
	commitScript = redis.NewScript(`
local holder = redis.call('GET', KEYS[1])
local res = 1
if redis.call('GET', KEYS[2]) ~= ARGV[2] or (holder and holder ~= ARGV[1]) then
  res = 0
else
  local cur = redis.call('HMGET', KEYS[3], 'e0', 'c0', 'e1', 'c1')
  for i = 0, 1 do
    local e, c = cur[2*i+1], cur[2*i+2]
    if e and e ~= '' and e == ARGV[4+2*i] and tonumber(c) > tonumber(ARGV[5+2*i]) then res = -1 end
  end
  if res == 1 then
    redis.call('HSET', KEYS[3], 'rec', ARGV[3], 'e0', ARGV[4], 'c0', ARGV[5], 'e1', ARGV[6], 'c1', ARGV[7])
  end
end
if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
return res`)

	// renewScript extends the lease if it is still ours.
	renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

	// releaseScript drops the lease if it is still ours.
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

	// reconcileScript writes a record kept locally while Redis was unreachable, when no lease is
	// held and the stored state is absent or behind it: some domain of the same epoch has a lower
	// counter there, and none a higher one.
	reconcileScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local cur = redis.call('HMGET', KEYS[3], 'e0', 'c0', 'e1', 'c1')
local behind = not cur[1] and not cur[3]
for i = 0, 1 do
  local e, c = cur[2*i+1], cur[2*i+2]
  if e and e ~= '' and e == ARGV[2+2*i] then
    if tonumber(c) > tonumber(ARGV[3+2*i]) then return 0 end
    if tonumber(c) < tonumber(ARGV[3+2*i]) then behind = true end
  end
end
if not behind then return 0 end
redis.call('HSET', KEYS[3], 'rec', ARGV[1], 'e0', ARGV[2], 'c0', ARGV[3], 'e1', ARGV[4], 'c1', ARGV[5])
return 1`)
)

// stateArgs returns a record's binary form and, per domain, its epoch in hex ("" without a
// session) and counter, as the scripts take them.
func stateArgs(rec Record) []any {
	b, _ := rec.MarshalBinary()
	args := []any{b}
	for d := range numDomains {
		s := &rec.Sessions[d]
		if !s.Valid {
			args = append(args, "", 0)
			continue
		}
		args = append(args, hex.EncodeToString(s.Epoch[:]), s.Counter)
	}
	return args
}

// Lease is one command's hold on a VIN: the record to start from, and, when Redis was
// reachable, the lease that keeps other replicas' commands to the car waiting. Commit or
// Release it exactly once.
type Lease struct {
	r      *Redis
	vin    string
	keys   []string
	rec    Record
	shared bool // holds a Redis lease
	token  string
	fence  int64
	done   chan struct{} // closed to stop the renewal
	lost   atomic.Bool
	once   sync.Once
}

// Record returns the record the command starts from: the shared one, merged with the local
// copy where that is ahead, or the local copy alone.
func (l *Lease) Record() Record { return l.rec }

// Shared reports whether the lease is held in Redis; false means Redis was unreachable and the
// command runs on local state, serialized by the caller's local lock only.
func (l *Lease) Shared() bool { return l.shared }

// Acquire waits until vin's lease is free, takes it, and returns it with vin's record. The wait
// ends with ctx's error. When Redis cannot be reached it returns a local lease (see Shared) and
// no error: the caller, which holds its own in-process lock on vin, serves from local state.
func (r *Redis) Acquire(ctx context.Context, vin string) (*Lease, error) {
	local, _ := r.local.Get(vin)
	l := &Lease{r: r, vin: vin, keys: r.keys(vin), rec: local}
	if r.down.Load() {
		return r.localLease(l), nil
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	l.token = hex.EncodeToString(tok[:])
	start := time.Now()
	backoff := time.Millisecond
	for {
		res, err := r.run(ctx, "acquire", acquireScript, l.keys, l.token, r.ttl.Milliseconds())
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if r.down.Load() {
				return r.localLease(l), nil
			}
			continue // timed out, not yet degraded: the script may have run; it can be repeated
		}
		vals, ok := res.([]any)
		if !ok || len(vals) < 1 {
			r.degrade(fmt.Errorf("unexpected acquire answer %T", res))
			return r.localLease(l), nil
		}
		fence, _ := vals[0].(int64)
		if fence > 0 {
			l.fence, l.shared = fence, true
			if len(vals) > 1 {
				if s, ok := vals[1].(string); ok {
					var remote Record
					if remote.UnmarshalBinary([]byte(s)) == nil {
						l.rec = merge(remote, local)
					}
				}
			}
			if r.hooks.LockWait != nil {
				r.hooks.LockWait(time.Since(start).Seconds())
			}
			l.done = make(chan struct{})
			r.spawn(l.renew)
			return l, nil
		}
		// Another replica holds it: wait a little, no longer than it has left.
		wait := backoff
		if len(vals) > 1 {
			if left, ok := vals[1].(int64); ok && left > 0 && time.Duration(left)*time.Millisecond < wait {
				wait = time.Duration(left) * time.Millisecond
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		if backoff < 16*time.Millisecond {
			backoff *= 2
		}
	}
}

func (r *Redis) localLease(l *Lease) *Lease {
	if r.hooks.LocalCommand != nil {
		r.hooks.LocalCommand()
	}
	return l
}

// merge returns the record a command starts from: per domain, the shared session, unless the
// local copy holds the same session (car key and epoch) with a higher counter: a commit of this
// replica that Redis lost. A domain Redis does not have comes from the local copy.
func merge(remote, local Record) Record {
	out := remote
	out.Legacy = remote.Legacy || local.Legacy
	for d := range numDomains {
		rs, ls := &remote.Sessions[d], &local.Sessions[d]
		switch {
		case !ls.Valid:
		case !rs.Valid:
			out.Sessions[d] = *ls
		case rs.CarKey == ls.CarKey && rs.Epoch == ls.Epoch && ls.Counter > rs.Counter:
			out.Sessions[d] = *ls
		}
	}
	return out
}

// renew extends the lease every third of its life until the lease is committed or released.
func (l *Lease) renew() {
	t := time.NewTicker(l.r.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-l.r.stop:
			return
		case <-t.C:
		}
		res, err := l.r.run(context.Background(), "renew", renewScript, l.keys[:1], l.token, l.r.ttl.Milliseconds())
		if err != nil {
			continue // degraded; the commit's fence decides
		}
		if n, _ := res.(int64); n == 0 {
			l.markLost()
			return
		}
	}
}

func (l *Lease) markLost() {
	if l.lost.CompareAndSwap(false, true) {
		l.r.log.Warn("a vehicle's lease ran out while its command ran; its state write will be refused if another replica took over", zap.String("vin", l.vin))
		if l.r.hooks.LeaseLost != nil {
			l.r.hooks.LeaseLost()
		}
	}
}

// Commit keeps rec as vin's record, locally and, fenced, in Redis, and releases the lease. Redis
// refuses the write when another replica took the lease since (the fence moved on) or when a
// counter would go back; the local copy keeps rec either way. Commit reports whether Redis took
// the write.
func (l *Lease) Commit(rec Record) bool {
	wrote := false
	l.once.Do(func() {
		l.r.local.Put(l.vin, rec)
		if !l.shared {
			l.r.markDirty(l.vin)
			return
		}
		close(l.done)
		args := append([]any{l.token, l.fence}, stateArgs(rec)...)
		// A repeated commit writes the same state under the same fence, or is refused if
		// another replica has the lease by then: safe to try again after a timeout.
		var res any
		var err error
		for range failuresToDegrade {
			if res, err = l.r.run(context.Background(), "commit", commitScript, l.keys, args...); err == nil || l.r.down.Load() {
				break
			}
		}
		if err != nil {
			l.r.markDirty(l.vin)
			return
		}
		switch n, _ := res.(int64); n {
		case 1:
			wrote = true
		case 0:
			l.markLost()
		default:
			l.r.log.Info("a vehicle's stored counter is ahead of this replica's; keeping the stored one", zap.String("vin", l.vin))
		}
	})
	return wrote
}

// Release gives the lease up without writing, if Commit has not been called.
func (l *Lease) Release() {
	l.once.Do(func() {
		if !l.shared {
			return
		}
		close(l.done)
		_, _ = l.r.run(context.Background(), "release", releaseScript, l.keys[:1], l.token)
	})
}

// run runs a script with the call timeout, counting it and noticing an unreachable Redis.
func (r *Redis) run(ctx context.Context, op string, s *redis.Script, keys []string, args ...any) (any, error) {
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	res, err := s.Run(cctx, r.client, keys, args...).Result()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	if r.hooks.Call != nil {
		r.hooks.Call(op, time.Since(start).Seconds(), err != nil)
	}
	switch {
	case err == nil:
		r.failures.Store(0)
		r.failingAt.Store(0)
	case ctx.Err() != nil:
		// The caller gave up (the client left): says nothing about Redis.
	case !isTimeout(err):
		r.degrade(err)
	default:
		now := time.Now().UnixNano()
		r.failingAt.CompareAndSwap(0, now)
		if r.failures.Add(1) >= failuresToDegrade && now-r.failingAt.Load() >= int64(failingFor) {
			r.degrade(err)
		}
	}
	return res, err
}

// isTimeout reports whether err is a call that ran out of time (Redis slow, or this process
// starved), as opposed to one Redis refused or could not be reached for.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrPoolTimeout) || (errors.As(err, &ne) && ne.Timeout())
}

// degrade marks Redis unreachable, logs it once, and starts probing for its return.
func (r *Redis) degrade(err error) {
	if !r.down.CompareAndSwap(false, true) {
		return
	}
	r.log.Warn("the session store is unreachable; serving from this replica's local state until it returns", zap.String("error", describeRedisError(err)))
	if r.hooks.Degraded != nil {
		r.hooks.Degraded(true)
	}
	r.spawn(r.probeLoop)
}

// spawn runs f in a goroutine that Close waits for, unless the store is closed.
func (r *Redis) spawn(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// describeRedisError words a Redis error without anything from the URL.
func describeRedisError(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ne):
		return "network error"
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}

func (r *Redis) markDirty(vin string) {
	r.mu.Lock()
	r.dirty[vin] = struct{}{}
	r.mu.Unlock()
}

// probeLoop pings Redis until it answers, then writes back what changed meanwhile and ends the
// degraded state.
func (r *Redis) probeLoop() {
	t := time.NewTicker(r.probe)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		start := time.Now()
		err := r.client.Ping(ctx).Err()
		cancel()
		if r.hooks.Call != nil {
			r.hooks.Call("ping", time.Since(start).Seconds(), err != nil)
		}
		if err != nil {
			continue
		}
		n := r.reconcile()
		r.failures.Store(0)
		r.failingAt.Store(0)
		r.down.Store(false)
		r.log.Info("the session store is reachable again", zap.Int("reconciled", n))
		if r.hooks.Degraded != nil {
			r.hooks.Degraded(false)
		}
		return
	}
}

// reconcile writes the records committed locally while Redis was unreachable where Redis is
// behind, and returns how many it wrote.
func (r *Redis) reconcile() int {
	r.mu.Lock()
	vins := r.dirty
	r.dirty = make(map[string]struct{})
	r.mu.Unlock()
	n := 0
	for vin := range vins {
		rec, ok := r.local.Peek(vin)
		if !ok {
			continue
		}
		keys := r.keys(vin)
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		start := time.Now()
		res, err := reconcileScript.Run(ctx, r.client, keys, stateArgs(rec)...).Result()
		cancel()
		if r.hooks.Call != nil {
			r.hooks.Call("reconcile", time.Since(start).Seconds(), err != nil)
		}
		if err != nil {
			r.markDirty(vin)
			continue
		}
		if v, _ := res.(int64); v == 1 {
			n++
		}
	}
	return n
}

// countHook counts the commands the client sends.
type countHook struct{ n *atomic.Int64 }

// DialHook counts nothing: a dial is not a command.
func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook counts one command.
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook counts each command of the pipeline, though it takes one round trip.
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}
