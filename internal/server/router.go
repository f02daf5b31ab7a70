package server

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/forward"
)

// Route classes, as they appear in logs and metrics.
const (
	RouteHealth      = "health"
	RoutePublicKey   = "public_key"
	RouteMetrics     = "metrics"
	RouteTelemetry   = "telemetry_config"
	RouteCommand     = "command"
	RoutePassThrough = "pass_through"
	RouteRejected    = "rejected"
	RouteBudget      = "budget"
)

// Paths of the signed routes and of the proxy's own endpoints.
const (
	PathHealth    = "/health"
	PathPublicKey = "/.well-known/appspecific/com.tesla.3p.public-key.pem"
	PathMetrics   = "/metrics"
	PathTelemetry = "/api/1/vehicles/fleet_telemetry_config"
	PathCommand   = "/api/1/vehicles/{vin}/command/{name}"
	PathBudget    = "/budget"
)

// Deps are what the router serves. Nil handlers leave their route to pass-through (Commands,
// Telemetry) or unregistered (PublicKeyPEM, Metrics).
type Deps struct {
	Logger  *zap.Logger
	Forward *forward.Forwarder
	// Commands serves POST /api/1/vehicles/{vin}/command/{name}.
	Commands http.Handler
	// Telemetry serves POST /api/1/vehicles/fleet_telemetry_config.
	Telemetry http.Handler
	// PublicKeyPEM is the command key's public half, served where Tesla looks for it.
	PublicKeyPEM []byte
	// Metrics serves /metrics on the main listener; nil when metrics live elsewhere or are off.
	Metrics http.Handler
	// AllowNets, when not empty, are the only client networks served; others get 403. Clients on
	// a unix socket are always served.
	AllowNets []netip.Prefix
	// Observe, when not nil, is told about every finished request (for metrics).
	Observe func(route string, status int, seconds float64)
	// InFlight, when not nil, is told when a request starts (+1) and ends (-1).
	InFlight func(delta float64)
	// Budget serves GET /budget (the -monthly-budget figures) on the main listener; nil when
	// there is no budget or the figures live on the metrics listener.
	Budget http.Handler
	// PassThrough, when not nil, serves the pass-through routes (after the token check) in
	// place of Forward, which it wraps: -coalesce-reads, say. Nil means Forward.
	PassThrough http.Handler
	// Degraded, when not nil, reports whether the proxy serves with reduced guarantees (the
	// shared session store unreachable); /health then says so, still with 200, since the proxy
	// does serve. Nil means never.
	Degraded func() bool
}

// NewRouter builds the proxy's one routing table. Order matters and is written here only:
//
//  1. access log and panic recovery around everything (outermost);
//  2. odd requests (CONNECT, dot-segments) refused before routing;
//  3. the proxy's own endpoints, which need no token;
//  4. the signed routes, each behind the bearer-token check;
//  5. everything else, behind the token check, passed through (last).
func NewRouter(d Deps) http.Handler {
	log := d.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := mux.NewRouter()
	// Match on the escaped path so an encoded slash stays inside one segment, and do not let mux
	// "clean" paths with redirects: pass-through must keep the path byte for byte.
	r.UseEncodedPath()
	r.SkipClean(true)

	r.Handle(PathHealth, routeClass(RouteHealth, methods(health(d.Degraded), http.MethodGet, http.MethodHead)))
	if d.PublicKeyPEM != nil {
		pem := d.PublicKeyPEM
		r.Handle(PathPublicKey, routeClass(RoutePublicKey, methods(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/x-pem-file")
			w.Header().Set("Cache-Control", "public, max-age=300")
			_, _ = w.Write(pem)
		}), http.MethodGet, http.MethodHead)))
	}
	if d.Metrics != nil {
		r.Handle(PathMetrics, routeClass(RouteMetrics, methods(d.Metrics, http.MethodGet)))
	}
	if d.Budget != nil {
		r.Handle(PathBudget, routeClass(RouteBudget, d.Budget))
	}
	if d.Telemetry != nil {
		r.Handle(PathTelemetry, routeClass(RouteTelemetry, requireToken(d.Forward, methods(d.Telemetry, http.MethodPost))))
	}
	if d.Commands != nil {
		r.Handle(PathCommand, routeClass(RouteCommand, requireToken(d.Forward, methods(built(d.Commands), http.MethodPost))))
	}
	var through http.Handler = d.Forward
	if d.PassThrough != nil {
		through = d.PassThrough
	}
	passThrough := routeClass(RoutePassThrough, requireToken(d.Forward, through))
	catchAll := r.PathPrefix("/").Handler(passThrough)

	h := refuseOdd(dispatch(r, catchAll))
	if len(d.AllowNets) > 0 {
		h = allowOnly(d.AllowNets, h)
	}
	return accessLog(log, d.Observe, d.InFlight, recoverPanics(log, h))
}

// built marks every request that h sends through the Forwarder as one the proxy builds on the
// client's behalf (see forward.MarkBuilt): the command route passes nothing through unchanged;
// what it forwards (a REST fallback, a wake-up) is its own request.
func built(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ctx := forward.MarkBuilt(r.Context()); ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		h.ServeHTTP(w, r)
	})
}

// health answers "OK", or, while degraded() reports true, 200 with a line saying what is
// degraded: a load balancer keeps sending to a replica that serves from local state, and a
// person or a probe reading the body sees why.
func health(degraded func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if degraded != nil && degraded() {
			w.Header().Set("X-Proxy-Degraded", "session-store")
			_, _ = w.Write([]byte("DEGRADED: the shared session store is unreachable; serving from this replica's local state"))
			return
		}
		_, _ = w.Write([]byte("OK"))
	})
}

// methods answers 405 with an Allow header for any method not listed.
func methods(h http.Handler, allowed ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range allowed {
			if r.Method == m {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		apierr.Write(w, apierr.New(http.StatusMethodNotAllowed, "method_not_allowed",
			"This endpoint accepts "+strings.Join(allowed, " or ")+" only."))
	})
}

// dispatch serves a request through the router's table. mux.Router.ServeHTTP copies the request
// twice to attach route variables; the catch-all has none, so a pass-through request, the most
// common kind, goes to its handler without those copies. The table itself stays the one in
// NewRouter: dispatch only asks it which route matched.
func dispatch(r *mux.Router, catchAll *mux.Route) http.Handler {
	passThrough := catchAll.GetHandler()
	mightBeOwn := ownPaths(r, catchAll)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !mightBeOwn(req.URL.EscapedPath()) {
			// No route but the catch-all can match: skip mux's regular expressions, which cost
			// about 5% of a small pass-through request's CPU when every route is tried.
			passThrough.ServeHTTP(w, req)
			return
		}
		var m mux.RouteMatch
		if r.Match(req, &m) && m.Route == catchAll {
			passThrough.ServeHTTP(w, req)
			return
		}
		r.ServeHTTP(w, req)
	})
}

// ownPaths returns a quick test that is true for every path some route other than catchAll could
// match (and for some others). It is built from the routes' own path templates, so it cannot
// drift from them: a template's literal parts, in order, are necessary for a match, the first
// one as a prefix. A route without a path template makes it always true.
func ownPaths(r *mux.Router, catchAll *mux.Route) func(path string) bool {
	var templates [][]string
	always := false
	_ = r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		if route == catchAll {
			return nil
		}
		tpl, err := route.GetPathTemplate()
		if err != nil {
			// A route matched by something other than a path: the quick test cannot rule it
			// out, so it answers true for every path. The walk itself goes on.
			always = true
			return nil //nolint:nilerr // the error only says this route has no path template
		}
		templates = append(templates, templateLiterals(tpl))
		return nil
	})
	if always {
		return func(string) bool { return true }
	}
	return func(path string) bool {
		for _, lits := range templates {
			if literalsMatch(path, lits) {
				return true
			}
		}
		return false
	}
}

// templateLiterals splits a mux path template such as /api/1/vehicles/{vin}/command/{name} into
// its literal parts: ["/api/1/vehicles/", "/command/"].
func templateLiterals(tpl string) []string {
	var lits []string
	for {
		open := strings.IndexByte(tpl, '{')
		if open < 0 {
			break
		}
		closing := strings.IndexByte(tpl[open:], '}')
		if closing < 0 {
			break
		}
		lits = append(lits, tpl[:open])
		tpl = tpl[open+closing+1:]
	}
	return append(lits, tpl)
}

// literalsMatch reports whether path starts with lits[0] and holds the others after it, in order.
func literalsMatch(path string, lits []string) bool {
	rest, ok := strings.CutPrefix(path, lits[0])
	if !ok {
		return false
	}
	for _, lit := range lits[1:] {
		i := strings.Index(rest, lit)
		if i < 0 {
			return false
		}
		rest = rest[i+len(lit):]
	}
	return true
}

// AllowOnly answers 403 to clients outside nets and passes the others to next, as the main
// listener does with -allow: for other listeners (the -metrics-addr one), so that every listener
// obeys the same rules. Empty nets allow every client.
func AllowOnly(nets []netip.Prefix, next http.Handler) http.Handler {
	if len(nets) == 0 {
		return next
	}
	return allowOnly(nets, next)
}

func allowOnly(nets []netip.Prefix, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allowed(nets, r.RemoteAddr) {
			next.ServeHTTP(w, r)
			return
		}
		setRoute(r, RouteRejected)
		apierr.Write(w, apierr.New(http.StatusForbidden, "client_not_allowed",
			"This proxy does not serve your network address; ask its operator to add it to -allow."))
	})
}

func allowed(nets []netip.Prefix, remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		// Not host:port: a unix socket peer (or a test recorder), local by construction.
		return remote == "" || remote == "@" || !strings.Contains(remote, ":")
	}
	ip := ap.Addr().Unmap()
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// refuseOdd turns away requests no Fleet API client sends: CONNECT (the proxy is not a tunnel)
// and paths with dot-segments, which a server behind us might resolve into a different route than
// the one we matched.
func refuseOdd(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			setRoute(r, RouteRejected)
			w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
			apierr.Write(w, apierr.New(http.StatusMethodNotAllowed, "method_not_allowed",
				"CONNECT is not supported: this is a Fleet API proxy, not a tunnel."))
			return
		}
		if p := r.URL.EscapedPath(); hasDotSegment(p) || !strings.HasPrefix(p, "/") {
			setRoute(r, RouteRejected)
			apierr.Write(w, apierr.New(http.StatusBadRequest, "invalid_path",
				"The path must be absolute and must not contain '.' or '..' segments; send the resolved path."))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hasDotSegment reports whether an escaped path has a "." or ".." segment, written plainly or
// percent-encoded.
func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		// Every request passes here: skip the long segments (a VIN, a word) before copying one
		// to lower case.
		if len(seg) > len("%2e%2e") {
			continue
		}
		s := strings.ReplaceAll(strings.ToLower(seg), "%2e", ".")
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}
