package metrics

import "github.com/prometheus/client_golang/prometheus"

// CategoryFree is the billing category of Fleet API routes Tesla does not bill: the vehicle list
// (GET /api/1/vehicles), as third parties report (fleet-api.md §5, §7). The proxy's -auto-wake
// polls it for that reason.
const CategoryFree = "free"

// Features whose savings are counted in tesla_proxy_estimated_savings_dollars_total.
const (
	FeatureAutoWake      = "auto_wake"
	FeatureCoalesceReads = "coalesce_reads"
	FeatureLegacyMarks   = "legacy_from_fleet_status"
)

// savings are the collectors of the features that spend fewer billed calls (issue 15).
type savings struct {
	wakes     *prometheus.CounterVec
	polls     prometheus.Counter
	coalesced *prometheus.CounterVec
	saved     *prometheus.CounterVec
	ids       *prometheus.CounterVec
}

func newSavings(reg *prometheus.Registry) savings {
	s := savings{
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tesla_proxy_wakes_total",
			Help: "-auto-wake: wake_up calls sent (result=sent) and commands that shared a wake another command had sent instead of sending their own (result=avoided).",
		}, []string{"result"}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tesla_proxy_wake_polls_total",
			Help: "-auto-wake: calls to the free vehicle list made while waiting for a car to come online.",
		}),
		coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tesla_proxy_coalesced_reads_total",
			Help: "-coalesce-reads: upstream calls saved, by how: shared (an identical request in flight answered it) or cached (-read-cache-ttl).",
		}, []string{"how"}),
		saved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tesla_proxy_estimated_savings_dollars_total",
			Help: "Estimated Fleet API cost avoided, at Tesla's published per-request prices, by feature.",
		}, []string{"feature"}),
		ids: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tesla_proxy_vehicle_id_lookups_total",
			Help: "Numeric vehicle ids in command paths resolved to a VIN, by source: cache, or the (free) vehicle list.",
		}, []string{"source"}),
	}
	reg.MustRegister(s.wakes, s.polls, s.coalesced, s.saved, s.ids)
	return s
}

// WakeSent records one wake_up sent by -auto-wake.
func (m *Metrics) WakeSent() { m.savings.wakes.WithLabelValues("sent").Inc() }

// WakeAvoided records a command that shared a wake instead of sending one: a wake_up saved.
func (m *Metrics) WakeAvoided() {
	m.savings.wakes.WithLabelValues("avoided").Inc()
	m.savings.saved.WithLabelValues(FeatureAutoWake).Add(prices[CategoryWakes])
}

// WakePoll records one vehicle-list call made while waiting for a car (free).
func (m *Metrics) WakePoll() { m.savings.polls.Inc() }

// ReadSaved records one upstream read that -coalesce-reads answered without a call: shared with
// an identical request in flight, or from the answer cache. path prices the call saved.
func (m *Metrics) ReadSaved(path string, cached bool) {
	how := "shared"
	if cached {
		how = "cached"
	}
	m.savings.coalesced.WithLabelValues(how).Inc()
	m.savings.saved.WithLabelValues(FeatureCoalesceReads).Add(prices[Category(path)])
}

// LegacyCallSaved records a signed_command call saved because the car was known not to support
// the protocol from a fleet_status answer.
func (m *Metrics) LegacyCallSaved() {
	m.savings.saved.WithLabelValues(FeatureLegacyMarks).Add(prices[CategoryCommands])
}

// VehicleIDLookup records a numeric vehicle id resolved to a VIN, from the cache or not.
func (m *Metrics) VehicleIDLookup(cached bool) {
	src := "list"
	if cached {
		src = "cache"
	}
	m.savings.ids.WithLabelValues(src).Inc()
}

// PathPrice returns the estimated price of one billed call to a Fleet API path, at Tesla's
// published prices (zero for a free route).
func PathPrice(path string) float64 { return Price(Category(path)) }

// budgetGauges are the -monthly-budget collectors.
type budgetGauges struct {
	limit, spent, warning, exceeded prometheus.Gauge
	refused                         prometheus.Counter
}

func newBudgetGauges(reg *prometheus.Registry) budgetGauges {
	g := budgetGauges{
		limit:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "tesla_proxy_budget_dollars", Help: "-monthly-budget: the budget in US dollars per calendar month (UTC); 0 without one."}),
		spent:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "tesla_proxy_budget_spent_dollars", Help: "-monthly-budget: estimated Fleet API spend of the current month, kept across restarts in the session file."}),
		warning:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "tesla_proxy_budget_warning", Help: "-monthly-budget: 1 once the month's spend reached 80 % of the budget, 0 otherwise."}),
		exceeded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tesla_proxy_budget_exceeded", Help: "-monthly-budget: 1 once the month's spend reached the budget, 0 otherwise."}),
		refused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tesla_proxy_budget_refused_total", Help: "-monthly-budget: requests refused with 429 because the month's budget was spent."}),
	}
	reg.MustRegister(g.limit, g.spent, g.warning, g.exceeded, g.refused)
	return g
}

// Budget records the month's estimated spend against the budget (pass it as
// budget.Options.OnChange).
func (m *Metrics) Budget(spent, limit float64, warning, exceeded bool) {
	m.budget.limit.Set(limit)
	m.budget.spent.Set(spent)
	m.budget.warning.Set(b2f(warning))
	m.budget.exceeded.Set(b2f(exceeded))
}

// BudgetRefused records a request refused for the budget.
func (m *Metrics) BudgetRefused() { m.budget.refused.Inc() }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
