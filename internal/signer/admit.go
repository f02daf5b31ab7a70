package signer

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/bounded"
	"github.com/teslaproxy/proxy/internal/forward"
)

// admission decides, before a command waits for its vehicle's turn, whether it may (issue 18).
// The proxy cannot verify a bearer token; only the Fleet API can, and the turn is held for the
// whole upstream round trip. So a caller the Fleet API has not yet accepted for the car must not
// be able to keep its owner waiting:
//
//   - a token that recently succeeded for the VIN waits for the turn as before;
//   - an unproven token has at most one request waiting per VIN (more wait for its verdict,
//     outside the car's queue), and unproven tokens take the VIN's turn one at a time, so
//     together they hold at most one place in its queue;
//   - a token the Fleet API refused (401, 403) for the VIN is refused locally for a while.
//
// Everything is keyed by the token's hash, never by its claims, which anyone can forge. The
// caches are bounded by count and bytes with expiry; the in-flight tables hold only requests
// in flight. Every step is O(1). It runs before the turn is acquired, so it works the same with
// the local locks and with a shared (Redis) store's leases.
type admission struct {
	proven  *bounded.Cache[admitKey, struct{}]
	refused *bounded.Cache[admitKey, int]

	mu sync.Mutex
	// waiting holds the unproven request of each (token, VIN) that is waiting for or holding
	// the gate; its channel is closed when that request is answered.
	waiting map[admitKey]chan struct{}
	gates   map[string]*gate
}

// admitKey is a (token, VIN) pair.
type admitKey struct {
	tok forward.TokenHash
	vin string
}

// gate lets one unproven command at a time wait for a VIN's turn.
type gate struct {
	ch   chan struct{}
	refs int // guarded by admission.mu
}

// Bounds and lifetimes of what admission remembers.
const (
	admitEntries = 100_000
	admitBytes   = 32 << 20
	provenTTL    = time.Hour
	refusedTTL   = time.Minute
)

func newAdmission() *admission {
	return &admission{
		proven: bounded.New[admitKey, struct{}](admitEntries, admitBytes, provenTTL,
			func(k admitKey, _ struct{}) int64 { return int64(len(k.tok) + len(k.vin)) }),
		refused: bounded.New[admitKey, int](admitEntries, admitBytes, refusedTTL,
			func(k admitKey, _ int) int64 { return int64(len(k.tok) + len(k.vin)) }),
		waiting: make(map[admitKey]chan struct{}),
		gates:   make(map[string]*gate),
	}
}

var (
	errUnproven = apierr.New(http.StatusServiceUnavailable, "vehicle_busy",
		"Other commands to this vehicle are still running; try again shortly.")
)

// errRefused is the local answer to a token the Fleet API refused moments ago.
func errRefused(status int) error {
	word := "unauthorized"
	if status == http.StatusForbidden {
		word = "forbidden"
	}
	return apierr.New(status, word, "The Fleet API refused this access token for this vehicle moments ago; get a new token or check its access to the vehicle.")
}

// admit returns a done func to call with the final HTTP status once the command is answered, or
// an error to answer at once. tok nil (a handler used without the token middleware) is admitted
// as before. A second request of an unproven token for the same VIN waits for the first one's
// verdict outside the car's queue, then goes on as proven or is refused.
func (a *admission) admit(ctx context.Context, tok *forward.Token, vin string, timeout time.Duration) (func(status int), error) {
	if tok == nil {
		return func(int) {}, nil
	}
	k := admitKey{tok: tok.Hash, vin: vin}
	// Most commands come with a token already proven for the VIN: they need no timer to wait
	// with (a timer and a cancelable context were most of what admitting allocated).
	if ok, f, err := a.known(k); ok {
		return f, err
	}
	wait, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var g *gate
	for g == nil {
		if ok, f, err := a.known(k); ok {
			return f, err
		}
		a.mu.Lock()
		if first, busy := a.waiting[k]; busy {
			a.mu.Unlock()
			select {
			case <-first:
				continue
			case <-wait.Done():
				return nil, a.gaveUp(ctx)
			}
		}
		a.waiting[k] = make(chan struct{})
		g = a.gates[vin]
		if g == nil {
			g = &gate{ch: make(chan struct{}, 1)}
			a.gates[vin] = g
		}
		g.refs++
		a.mu.Unlock()
	}
	select {
	case g.ch <- struct{}{}:
		if wait.Err() == nil {
			return a.judge(k, g), nil
		}
		<-g.ch
	case <-wait.Done():
	}
	a.leave(k, g)
	return nil, a.gaveUp(ctx)
}

// known answers for a token whose verdict for the VIN is remembered: ok with the done func of a
// proven one, or ok with the error of a refused one.
func (a *admission) known(k admitKey) (ok bool, done func(status int), err error) {
	if status, refused := a.refused.Get(k); refused {
		return true, nil, errRefused(status)
	}
	if _, proven := a.proven.Get(k); proven {
		return true, a.judge(k, nil), nil
	}
	return false, nil, nil
}

// gaveUp is the error of a request that stopped waiting: the client's, or vehicle_busy.
func (a *admission) gaveUp(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return errUnproven
}

// judge returns the done func of an admitted command: it remembers the Fleet API's verdict on
// the token, then lets the next unproven command through the gate (g nil for a proven token).
func (a *admission) judge(k admitKey, g *gate) func(status int) {
	return func(status int) {
		switch {
		case status >= 200 && status < 300:
			a.proven.Add(k, struct{}{})
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			a.proven.Remove(k)
			a.refused.Add(k, status)
		}
		if g != nil {
			<-g.ch
			a.leave(k, g)
		}
	}
}

func (a *admission) leave(k admitKey, g *gate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	close(a.waiting[k])
	delete(a.waiting, k)
	g.refs--
	if g.refs == 0 {
		delete(a.gates, k.vin)
	}
}
