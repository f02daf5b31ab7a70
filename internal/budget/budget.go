// Package budget holds the proxy's monthly Fleet API budget (-monthly-budget, -budget-mode): the
// estimated spend of the calendar month (UTC) at Tesla's published prices, kept across restarts
// in the session file; a warning at 80 %; and, at 100 % in enforce mode, a 429 for every request
// that would be billed, until the month rolls over.
package budget

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
	"github.com/teslaproxy/proxy/internal/metrics"
	"github.com/teslaproxy/proxy/internal/sessions"
)

// WarnAt is the fraction of the budget at which the proxy warns.
const WarnAt = 0.8

// syncEvery is how often, at most, the spend is added to the store while calls keep coming (and
// once more at Close), and read back with what other replicas added: a crash loses at most this
// much of the count, and a replica sees the others' spend this late.
const syncEvery = 5 * time.Second

// Store keeps the month's spend across restarts: the session file (sessions.Store), or Redis
// shared by the replicas (sessions.Redis), which adds every replica's spend.
type Store interface {
	// AddFloat adds delta to the number under key and returns the new total; zero reads it.
	AddFloat(ctx context.Context, key string, delta float64) (float64, error)
}

// Options configures a Budget.
type Options struct {
	// Limit is the budget in US dollars per calendar month (UTC); it must be above zero.
	Limit float64
	// WarnOnly, when set, never refuses a call: the budget only logs and counts
	// (-budget-mode warn).
	WarnOnly bool
	// Store keeps the spend across restarts; nil keeps it in memory only.
	Store Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Price returns the estimated price of a billed call to path; nil means metrics.PathPrice.
	Price func(path string) float64
	// OnChange, when not nil, is told the month's spend and limit after each change, and
	// whether the warning level and the limit are reached (for gauges).
	OnChange func(spent, limit float64, warning, exceeded bool)
	// OnRefused, when not nil, is told about each request refused for the budget.
	OnRefused func()
	// Logger receives the warnings; nil means none.
	Logger *zap.Logger
}

// Budget is safe for concurrent use.
type Budget struct {
	o   Options
	log *zap.Logger

	mu    sync.Mutex
	month string // "2006-01", UTC
	// spent is the month's spend: base, the store's total when last synced, plus pending, what
	// this process spent since.
	spent, base, pending float64
	warned, exceeded     bool
	synced               time.Time
}

// New returns a Budget, with the spend of the current month read from o.Store.
func New(o Options) *Budget {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Price == nil {
		o.Price = metrics.PathPrice
	}
	b := &Budget{o: o, log: zap.NewNop()}
	if o.Logger != nil {
		b.log = o.Logger.Named("budget")
	}
	if o.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		if _, err := o.Store.AddFloat(ctx, "budget/probe", 0); errors.Is(err, sessions.ErrNoFile) {
			b.o.Store = nil // a memory-only session store: nothing to keep
		}
		cancel()
	}
	b.mu.Lock()
	b.roll(o.Now())
	b.mu.Unlock()
	return b
}

func monthOf(t time.Time) string { return t.UTC().Format("2006-01") }

func storeKey(month string) string { return "budget/" + month }

// nextMonth returns when the month of t (UTC) ends.
func nextMonth(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

// roll starts the month of now if it is not the current one: its spend is read from the store
// (a restart within the month, other replicas) or zero. b.mu is held.
func (b *Budget) roll(now time.Time) {
	m := monthOf(now)
	if m == b.month {
		return
	}
	if b.month != "" {
		b.syncLocked(now)
	}
	b.month, b.spent, b.base, b.pending, b.warned, b.exceeded = m, 0, 0, 0, false, false
	b.syncLocked(now)
	b.check()
}

// syncLocked adds this process's pending spend to the store and reads back the total. b.mu is
// held; a store that fails keeps the spend pending for the next try.
func (b *Budget) syncLocked(now time.Time) {
	if b.o.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	total, err := b.o.Store.AddFloat(ctx, storeKey(b.month), b.pending)
	b.synced = now
	if err != nil {
		b.log.Warn("could not save the month's estimated spend; will try again", zap.Error(err))
		return
	}
	b.base, b.pending = total, 0
	b.spent = b.base
}

// storeTimeout bounds one call to the store.
const storeTimeout = 2 * time.Second

// check updates the warning and limit flags after a change, logging when one is first reached.
// b.mu is held.
func (b *Budget) check() {
	// Sums of prices are not exact in binary: a hundred $0.001 calls reach $0.10.
	const epsilon = 1e-9
	if !b.warned && b.spent+epsilon >= WarnAt*b.o.Limit {
		b.warned = true
		b.log.Warn("estimated Fleet API spend reached 80% of the monthly budget",
			zap.String("month", b.month), zap.Float64("spent_dollars", round(b.spent)), zap.Float64("budget_dollars", b.o.Limit))
	}
	if !b.exceeded && b.spent+epsilon >= b.o.Limit {
		b.exceeded = true
		what := "billed calls are refused with 429 until the month rolls over"
		if b.o.WarnOnly {
			what = "calls go on (-budget-mode warn)"
		}
		b.log.Error("estimated Fleet API spend reached the monthly budget; "+what,
			zap.String("month", b.month), zap.Float64("spent_dollars", round(b.spent)), zap.Float64("budget_dollars", b.o.Limit))
	}
	if b.o.OnChange != nil {
		b.o.OnChange(b.spent, b.o.Limit, b.warned, b.exceeded)
	}
}

// Record counts one call to the Fleet API; pass it what forward.Options.OnUpstream gets. Only
// answers below 500 are billed.
func (b *Budget) Record(_, path string, status int) {
	if status <= 0 || status >= 500 {
		return
	}
	p := b.o.Price(path)
	if p == 0 {
		return
	}
	now := b.o.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.roll(now)
	b.pending += p
	b.spent = b.base + b.pending
	if now.Sub(b.synced) >= syncEvery {
		b.syncLocked(now)
	}
	b.check()
}

// Close saves the month's spend.
func (b *Budget) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending != 0 {
		b.syncLocked(b.o.Now())
	}
}

// Figures are the budget's state, as GET /budget shows it.
type Figures struct {
	Month          string    `json:"month"`
	BudgetDollars  float64   `json:"budget_dollars"`
	SpentDollars   float64   `json:"spent_dollars"`
	Fraction       float64   `json:"fraction"`
	Mode           string    `json:"mode"`
	Warning        bool      `json:"warning"`
	Exceeded       bool      `json:"exceeded"`
	Refusing       bool      `json:"refusing"`
	MonthEndsAt    time.Time `json:"month_ends_at"`
	EstimateSource string    `json:"estimate"`
}

// Figures returns the budget's state now.
func (b *Budget) Figures() Figures {
	now := b.o.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.roll(now)
	mode := "enforce"
	if b.o.WarnOnly {
		mode = "warn"
	}
	return Figures{
		Month: b.month, BudgetDollars: b.o.Limit, SpentDollars: round(b.spent), Fraction: round(b.spent / b.o.Limit),
		Mode: mode, Warning: b.warned, Exceeded: b.exceeded, Refusing: b.exceeded && !b.o.WarnOnly,
		MonthEndsAt:    nextMonth(now),
		EstimateSource: "calls through this proxy at Tesla's published prices (commands $0.001, data $0.002, wakes $0.02; the vehicle list free), before Tesla's monthly discount",
	}
}

func round(f float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', 6, 64), 64)
	return v
}

// Handler serves GET /budget: the Figures as JSON.
func (b *Budget) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			apierr.Write(w, apierr.New(http.StatusMethodNotAllowed, "method_not_allowed", "This endpoint accepts GET or HEAD only."))
			return
		}
		out, _ := json.Marshal(b.Figures())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(out, '\n'))
	})
}

// Gate refuses, with 429, every request next would send upstream as a billed call while the
// month's budget is spent (enforce mode). Free routes (the vehicle list) go on.
func (b *Budget) Gate(next http.Handler) http.Handler {
	if b.o.WarnOnly {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := b.o.Now()
		b.mu.Lock()
		b.roll(now)
		if now.Sub(b.synced) >= syncEvery {
			b.syncLocked(now)
			b.check()
		}
		refuse, spent := b.exceeded, b.spent
		b.mu.Unlock()
		if !refuse || b.o.Price(r.URL.Path) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if b.o.OnRefused != nil {
			b.o.OnRefused()
		}
		end := nextMonth(now)
		retry := int(end.Sub(now)/time.Second) + 1
		apierr.Write(w, &apierr.Error{
			Code: http.StatusTooManyRequests, Word: "monthly_budget_exceeded",
			Msg: fmt.Sprintf("The proxy's monthly Fleet API budget of $%.2f is spent (an estimated $%.2f so far in %s), so it refuses calls Tesla would bill until the month rolls over at %s. Raise -monthly-budget, or set -budget-mode warn to let calls through.",
				b.o.Limit, spent, b.monthName(now), end.Format("2006-01-02 15:04 MST")),
			Header: http.Header{"Retry-After": {strconv.Itoa(retry)}},
		})
	})
}

func (b *Budget) monthName(now time.Time) string { return now.UTC().Format("January 2006") }
