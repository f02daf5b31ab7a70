// Package wake wakes a sleeping vehicle for the proxy's -auto-wake: one wake_up call (billed as a
// wake, $0.02), then polls of the vehicle list (free, fleet-api.md §5 and §7) with backoff until
// the car shows "online", within a deadline. It never polls vehicle_data, which is billed as data.
//
// Commands to one car that arrive while it is being woken share that wake: a Waker keeps one wake
// in flight per (token, VIN). Nothing is shared across tokens, so one app's token never decides
// another's outcome.
package wake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/forward"
)

// DefaultTimeout is how long a Waker waits for "online" when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Poll backoff: the first look at the vehicle list comes this long after the wake_up, each next
// one 1.5 times later, never more than maxPoll apart, so an answer comes at most maxPoll after
// the car is online.
const (
	firstPoll = time.Second
	maxPoll   = 3 * time.Second
	// maxPages bounds how many pages of the vehicle list one poll reads looking for the VIN.
	maxPages = 5
)

// Options configures a Waker.
type Options struct {
	// Forward carries the wake_up and vehicle-list calls, with the caller's token.
	Forward *forward.Forwarder
	// Timeout bounds a wake from the wake_up call to "online". Zero means DefaultTimeout.
	Timeout time.Duration
	// OnWake, OnAvoided and OnPoll, when not nil, are told about each wake_up sent, each
	// command that shared a wake another command had sent, and each vehicle-list call.
	OnWake    func()
	OnAvoided func()
	OnPoll    func()
	// Logger receives the Waker's log lines; nil means none.
	Logger *zap.Logger
}

// Waker wakes vehicles. It is safe for concurrent use.
type Waker struct {
	o   Options
	log *zap.Logger

	mu      sync.Mutex
	flights map[key]*flight
}

type key struct {
	tok forward.TokenHash
	vin string
}

// flight is one wake in progress; done is closed when res and err are set.
type flight struct {
	done  chan struct{}
	start time.Time
	polls int
	err   error
}

// Result describes the wake a command waited for.
type Result struct {
	// Sent reports whether this command's request sent the wake_up; false means it shared a
	// wake another command had sent.
	Sent bool
	// Waited is how long the command waited for the car.
	Waited time.Duration
	// Polls is how many vehicle-list calls the wake made.
	Polls int
}

// New returns a Waker.
func New(o Options) *Waker {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Waker{o: o, log: log.Named("wake"), flights: make(map[key]*flight)}
}

// Timeout returns how long a wake may take.
func (w *Waker) Timeout() time.Duration { return w.o.Timeout }

// ReplyError is a Fleet API answer below 500 to the wake_up or to the vehicle list (a token
// refused, a rate limit): the caller relays it as it came.
type ReplyError struct {
	Reply *forward.Reply
}

// Error says what the Fleet API answered.
func (e *ReplyError) Error() string { return "the Fleet API answered " + strconv.Itoa(e.Reply.Status) }

// Wake makes sure vin is online: it sends one wake_up and polls the vehicle list, or joins the
// wake already under way for the same token and car. ctx carries the caller's token (see
// forward.WithToken) and ends the caller's wait, not the wake, which other commands may share.
// A car that does not come online in time gives a 408 *apierr.Error that says how long the
// proxy waited.
func (w *Waker) Wake(ctx context.Context, vin string) (Result, error) {
	t, err := w.Begin(ctx, vin)
	if err != nil {
		return Result{}, err
	}
	return t.Wait(ctx)
}

// Ticket is a command's place in a wake, from Begin.
type Ticket struct {
	f     *flight
	sent  bool
	began time.Time
}

// Begin starts a wake of vin for the caller's token, or joins the one under way, without waiting
// for it: a command calls it while it still holds its car's turn, so that the commands queued
// behind it find the wake under way instead of paying for a 408 each. Then it calls Wait.
func (w *Waker) Begin(ctx context.Context, vin string) (*Ticket, error) {
	tok := w.tokenOf(ctx)
	if tok == nil {
		return nil, apierr.New(http.StatusUnauthorized, "missing_token", "Waking a vehicle needs an 'Authorization: Bearer <token>' header.")
	}
	t, _ := w.ticket(ctx, key{tok: tok.Hash, vin: vin}, true)
	return t, nil
}

// Wait waits for the wake and reports how it went.
func (t *Ticket) Wait(ctx context.Context) (Result, error) {
	select {
	case <-t.f.done:
		return Result{Sent: t.sent, Waited: time.Since(t.began), Polls: t.f.polls}, t.f.err
	case <-ctx.Done():
		return Result{Sent: t.sent, Waited: time.Since(t.began)}, ctx.Err()
	}
}

// Join joins the wake of vin under way for the caller's token, if there is one. Commands call
// it before they queue for the car and once they hold its turn, so that they do not send a
// billed call to a car that is being woken.
func (w *Waker) Join(ctx context.Context, vin string) (*Ticket, bool) {
	tok := w.tokenOf(ctx)
	if tok == nil {
		return nil, false
	}
	return w.ticket(ctx, key{tok: tok.Hash, vin: vin}, false)
}

func (w *Waker) tokenOf(ctx context.Context) *forward.Token { return forward.TokenFrom(ctx) }

// ticket joins the flight of k, or starts one when start is set and none is under way. It
// reports false when there was none to join and start was not set.
func (w *Waker) ticket(ctx context.Context, k key, start bool) (*Ticket, bool) {
	began := time.Now()
	w.mu.Lock()
	f, shared := w.flights[k]
	if !shared {
		if !start {
			w.mu.Unlock()
			return nil, false
		}
		f = &flight{done: make(chan struct{}), start: began}
		w.flights[k] = f
		// The wake runs on its own, bounded by Timeout: commands that joined it must not lose
		// it when the command that started it goes away. It keeps ctx's values (the token).
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.o.Timeout)
		go func() {
			defer cancel()
			f.err = w.run(fctx, k.vin, f)
			w.mu.Lock()
			delete(w.flights, k)
			w.mu.Unlock()
			close(f.done)
		}()
	}
	w.mu.Unlock()
	if shared && w.o.OnAvoided != nil {
		w.o.OnAvoided()
	}
	return &Ticket{f: f, sent: !shared, began: began}, true
}

// run sends the wake_up and polls until the car is online or ctx ends.
func (w *Waker) run(ctx context.Context, vin string, f *flight) error {
	if w.o.OnWake != nil {
		w.o.OnWake()
	}
	reply, err := w.o.Forward.Call(ctx, http.MethodPost, "/api/1/vehicles/"+vin+"/wake_up", nil, nil)
	if err != nil {
		return err
	}
	if reply.Status != http.StatusOK {
		return &ReplyError{Reply: reply}
	}
	var woke struct {
		Response struct {
			State string `json:"state"`
		} `json:"response"`
	}
	if json.Unmarshal(reply.Body, &woke) == nil && woke.Response.State == "online" {
		return nil
	}
	wait := firstPoll
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return w.timedOut(f)
		case <-t.C:
		}
		state, err := w.state(ctx, vin, f)
		switch {
		case ctx.Err() != nil:
			return w.timedOut(f)
		case err != nil:
			return err
		case state == "online":
			w.log.Info("vehicle woke", zap.String("vin", vin), zap.Duration("after", time.Since(f.start)), zap.Int("polls", f.polls))
			return nil
		}
		wait = min(wait*3/2, maxPoll)
		t.Reset(wait)
	}
}

// timedOut is the 408 of a wake that did not see the car online in time.
func (w *Waker) timedOut(f *flight) error {
	return apierr.New(http.StatusRequestTimeout, "vehicle_unavailable",
		fmt.Sprintf("The vehicle did not come online within %s after the proxy woke it (one wake_up, then %d checks of the free vehicle list); the command was not sent. Try again later.",
			w.o.Timeout.Round(time.Second), f.polls))
}

// vehicleList is the part of GET /api/1/vehicles a poll reads.
type vehicleList struct {
	Response []struct {
		VIN   string `json:"vin"`
		State string `json:"state"`
	} `json:"response"`
	Pagination struct {
		Next *json.Number `json:"next"`
	} `json:"pagination"`
}

// errNotListed is a vehicle the token's vehicle list does not show.
var errNotListed = apierr.New(http.StatusBadGateway, "vehicle_not_listed",
	"The proxy sent the vehicle a wake_up, but this token's vehicle list does not show the vehicle, so the proxy could not tell when it was online; the command was not sent.")

// state returns vin's state in the vehicle list, reading further pages while it is not found.
func (w *Waker) state(ctx context.Context, vin string, f *flight) (string, error) {
	path := "/api/1/vehicles"
	for page := 0; page < maxPages; page++ {
		f.polls++
		if w.o.OnPoll != nil {
			w.o.OnPoll()
		}
		reply, err := w.o.Forward.Call(ctx, http.MethodGet, path, nil, nil)
		if err != nil {
			return "", err
		}
		if reply.Status != http.StatusOK {
			return "", &ReplyError{Reply: reply}
		}
		var l vehicleList
		if err := json.Unmarshal(reply.Body, &l); err != nil {
			return "", apierr.Wrap(err, http.StatusBadGateway, "invalid_upstream_answer",
				"The Fleet API's vehicle list could not be read while waiting for the vehicle to wake; the command was not sent.")
		}
		for _, v := range l.Response {
			if v.VIN == vin {
				return v.State, nil
			}
		}
		if l.Pagination.Next == nil || l.Pagination.Next.String() == "" {
			break
		}
		path = "/api/1/vehicles?page=" + l.Pagination.Next.String()
	}
	return "", errNotListed
}

// IsReply returns the Fleet API answer carried by err, if it is a *ReplyError.
func IsReply(err error) (*forward.Reply, bool) {
	var re *ReplyError
	if errors.As(err, &re) {
		return re.Reply, true
	}
	return nil, false
}
