// Package metrics exposes the proxy's Prometheus metrics: requests by route class and status,
// latency, requests in flight, upstream calls by Tesla billing category with an estimated cost,
// handshakes and session reuse.
//
// Each Metrics has its own registry, so tests and several proxies in one process never share or
// collide on global state.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Billing categories, as in Tesla's price list (fleet-api.md §7).
const (
	CategoryCommands = "commands"
	CategoryData     = "data"
	CategoryWakes    = "wakes"
)

// prices are Tesla's published per-request prices in US dollars, by category (fleet-api.md §7).
// Only answers below 500 are billed.
var prices = map[string]float64{
	CategoryCommands: 0.001,
	CategoryData:     0.002,
	CategoryWakes:    0.02,
	CategoryFree:     0,
}

// Price returns Tesla's published price of one billed call in a category (CategoryCommands,
// CategoryData, CategoryWakes), in US dollars; 0 for another category.
func Price(category string) float64 { return prices[category] }

// Metrics holds the proxy's collectors.
type Metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inFlight   prometheus.Gauge
	upstream   *prometheus.CounterVec
	cost       prometheus.Counter
	handshakes prometheus.Counter
	sessions   *prometheus.CounterVec
	connWait   prometheus.Gauge
	dialsHeld  prometheus.Gauge
	// clientLimited counts pass-through requests refused by -client-max-inflight.
	clientLimited prometheus.Counter

	// The children of the per-request vectors, by label values: WithLabelValues hashes the
	// values and takes the vector's lock on every call (three a request), a map lookup does not.
	requestsBy sync.Map // requestKey → prometheus.Counter
	durationBy sync.Map // route → prometheus.Observer
	upstreamBy sync.Map // upstreamKey → prometheus.Counter

	// The shared session store (-session-store), registered by New and zero without it.
	storeCall     *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec
	storeLockWait prometheus.Histogram
	storeLost     prometheus.Counter
	storeDegraded prometheus.Gauge
	storeLocal    prometheus.Counter

	// savings are the issue-15 features' counters (savings.go).
	savings savings
	budget  budgetGauges
}

// New returns a Metrics with its own registry, including Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tesla_proxy_requests_total",
			Help: "Requests answered, by route class and status code.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tesla_proxy_request_duration_seconds",
			Help:    "Time from request to the end of the answer, by route class.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tesla_proxy_in_flight_requests",
			Help: "Requests being served right now.",
		}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tesla_proxy_upstream_calls_total",
			Help: "Calls to the Fleet API, by Tesla billing category and whether Tesla bills them (status below 500).",
		}, []string{"category", "billed"}),
		cost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tesla_proxy_upstream_estimated_cost_dollars_total",
			Help: "Estimated Fleet API cost of the billed upstream calls, at Tesla's published per-request prices.",
		}),
		handshakes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tesla_proxy_handshakes_total",
			Help: "Vehicle session handshakes sent (each is a billed signed_command call).",
		}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tesla_proxy_session_cache_total",
			Help: "Signed commands by whether their vehicle session was already established (hit) or needed a handshake (miss).",
		}, []string{"result"}),
		connWait: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tesla_proxy_upstream_conn_waiting",
			Help: "Requests waiting for an upstream connection (a dial in progress, or -upstream-max-conns reached). Counted only when -upstream-max-conns is set.",
		}),
		dialsHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tesla_proxy_upstream_dials_held",
			Help: "Dials to a Fleet API host held back by -upstream-max-dials (HTTP/2), waiting for a place or for their request to find a connection.",
		}),
	}
	m.clientLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tesla_proxy_client_limited_total",
		Help: "Pass-through requests answered 429 because their token already had -client-max-inflight requests waiting on the Fleet API.",
	})
	m.reg.MustRegister(m.clientLimited)
	m.storeCall = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tesla_proxy_session_store_seconds",
		Help:    "Time of each call to the shared session store (Redis), by operation: acquire, commit, release, renew, reconcile, ping.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
	}, []string{"op"})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tesla_proxy_session_store_errors_total",
		Help: "Calls to the shared session store that failed or timed out, by operation.",
	}, []string{"op"})
	m.storeLockWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tesla_proxy_session_store_lock_wait_seconds",
		Help:    "Time a command waited for its vehicle's lease in the shared store (another replica's command to the same car).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.storeLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tesla_proxy_session_store_lease_lost_total",
		Help: "Vehicle leases that ran out or were taken over while their command ran; the command's state write was refused.",
	})
	m.storeDegraded = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tesla_proxy_session_store_degraded",
		Help: "1 while the shared session store is unreachable and this replica serves from its local state, 0 otherwise.",
	})
	m.storeLocal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tesla_proxy_session_store_degraded_commands_total",
		Help: "Commands served from local state alone because the shared session store was unreachable.",
	})
	m.reg.MustRegister(m.storeCall, m.storeErrors, m.storeLockWait, m.storeLost, m.storeDegraded, m.storeLocal)
	m.savings = newSavings(m.reg)
	m.budget = newBudgetGauges(m.reg)
	m.reg.MustRegister(m.requests, m.duration, m.inFlight, m.upstream, m.cost, m.handshakes, m.sessions, m.connWait, m.dialsHeld,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Observe records one finished request.
func (m *Metrics) Observe(route string, status int, seconds float64) {
	child(&m.requestsBy, requestKey{route, status}, func() prometheus.Counter {
		return m.requests.WithLabelValues(route, strconv.Itoa(status))
	}).Inc()
	child(&m.durationBy, route, func() prometheus.Observer { return m.duration.WithLabelValues(route) }).Observe(seconds)
}

// child returns the vector child cached under k in cache, made by newChild the first time.
func child[K comparable, V any](cache *sync.Map, k K, newChild func() V) V {
	v, ok := cache.Load(k)
	if !ok {
		v, _ = cache.LoadOrStore(k, newChild())
	}
	return v.(V)
}

// requestKey and upstreamKey are the label values of the per-request vectors. Routes, statuses
// and categories are few, so the maps stay small.
type (
	requestKey struct {
		route  string
		status int
	}
	upstreamKey struct {
		category string
		billed   bool
	}
)

// InFlight adds delta to the requests in flight.
func (m *Metrics) InFlight(delta float64) { m.inFlight.Add(delta) }

// Upstream records one call to the Fleet API.
func (m *Metrics) Upstream(method, path string, status int) {
	cat := Category(path)
	billed := status > 0 && status < 500
	child(&m.upstreamBy, upstreamKey{cat, billed}, func() prometheus.Counter {
		return m.upstream.WithLabelValues(cat, strconv.FormatBool(billed))
	}).Inc()
	if billed {
		m.cost.Add(prices[cat])
	}
}

// UpstreamConnWait adds delta to the requests waiting for an upstream connection; pass it to
// forward.CountConnWaits.
func (m *Metrics) UpstreamConnWait(delta float64) { m.connWait.Add(delta) }

// UpstreamDialHeld adds delta to the dials held back; pass it to
// forward.TransportOptions.OnDialHeld.
func (m *Metrics) UpstreamDialHeld(delta float64) { m.dialsHeld.Add(delta) }

// ClientLimited records one pass-through request refused for its token's share; pass it to
// forward.Options.OnClientLimited.
func (m *Metrics) ClientLimited() { m.clientLimited.Inc() }

// Handshake records one session handshake.
func (m *Metrics) Handshake() { m.handshakes.Inc() }

// Session records whether a command found its vehicle session ready.
func (m *Metrics) Session(hit bool) {
	if hit {
		m.sessions.WithLabelValues("hit").Inc()
	} else {
		m.sessions.WithLabelValues("miss").Inc()
	}
}

// Category returns the Tesla billing category of a Fleet API path: signed_command and REST
// commands are commands, wake_up is a wake, the vehicle list is free, everything else is data.
func Category(path string) string {
	switch {
	case path == "/api/1/vehicles":
		return CategoryFree
	case strings.HasSuffix(path, "/signed_command") || strings.Contains(path, "/command/"):
		return CategoryCommands
	case strings.HasSuffix(path, "/wake_up"):
		return CategoryWakes
	default:
		return CategoryData
	}
}

// StoreCall records one call to the shared session store.
func (m *Metrics) StoreCall(op string, seconds float64, failed bool) {
	m.storeCall.WithLabelValues(op).Observe(seconds)
	if failed {
		m.storeErrors.WithLabelValues(op).Inc()
	}
}

// StoreLockWait records how long a command waited for its vehicle's lease.
func (m *Metrics) StoreLockWait(seconds float64) { m.storeLockWait.Observe(seconds) }

// StoreLeaseLost records a lease that ran out while its command ran.
func (m *Metrics) StoreLeaseLost() { m.storeLost.Inc() }

// StoreDegraded records that the shared session store became unreachable (true) or reachable
// again (false).
func (m *Metrics) StoreDegraded(on bool) {
	if on {
		m.storeDegraded.Set(1)
	} else {
		m.storeDegraded.Set(0)
	}
}

// StoreLocalCommand records a command served from local state while the store was unreachable.
func (m *Metrics) StoreLocalCommand() { m.storeLocal.Inc() }
