package fleetsim

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/httpstatus"
)

// maxCommandBody bounds what the simulator reads of a signed_command or REST command body.
const maxCommandBody = 1 << 20

// Server is the simulated Fleet API with its vehicles. It implements http.Handler; serve it with
// httptest.NewServer / NewTLSServer or any http.Server. All methods are safe for concurrent use.
type Server struct {
	log     *zap.Logger
	now     func() time.Time
	trusted []*ecdh.PublicKey
	router  *mux.Router
	seed    []byte
	boot    time.Time

	mu         sync.Mutex
	vehicles   map[string]*Vehicle
	ids        map[string]string // numeric id (id_s) → VIN
	order      []string
	fault      Fault
	faults     map[string]Fault
	executions []Execution
	telemetry  map[string]map[string]any

	statsMu sync.Mutex
	stats   Stats

	// latency is the answer time per route class; nil answers at once.
	latency atomic.Pointer[Latency]

	// life is how cars sleep and wake (Options.SleepAfter, Options.WakeTime); echo is
	// Options.Echo.
	life lifecycle
	echo bool
	// recent holds the last commands per VIN, newest last, for the dashboard (s.mu).
	recent map[string][]Execution
	// invitations are the driver invitations per VIN, and nextInvitation numbers them (s.mu).
	invitations    map[string][]invitation
	nextInvitation int64
	// changes wakes the dashboard's event streams when something changed; stopEvents ends them
	// (StopEvents).
	changes    broadcast
	stopEvents chan struct{}
	stopOnce   sync.Once

	// refused maps the SHA-256 of a bearer token to how the Fleet API refuses it (RefuseToken),
	// and tokenCalls counts the Fleet API requests seen per token hash.
	tokensMu   sync.Mutex
	refused    map[[32]byte]refusal
	tokenCalls map[[32]byte]int
}

// refusal is how RefuseToken answers one token.
type refusal struct {
	status int
	delay  time.Duration
}

// RefuseToken makes the Fleet API answer every request that carries token (the bearer token
// itself, without "Bearer ") with status (401 or 403) after delay, as Tesla answers an expired or
// revoked token, or one without access to the vehicle. The token is kept only as a hash.
func (s *Server) RefuseToken(token string, status int, delay time.Duration) {
	s.tokensMu.Lock()
	defer s.tokensMu.Unlock()
	if s.refused == nil {
		s.refused = make(map[[32]byte]refusal)
	}
	s.refused[sha256.Sum256([]byte(token))] = refusal{status: status, delay: delay}
}

// TokenCalls returns how many Fleet API requests (control endpoints aside) carried token.
func (s *Server) TokenCalls(token string) int {
	s.tokensMu.Lock()
	defer s.tokensMu.Unlock()
	return s.tokenCalls[sha256.Sum256([]byte(token))]
}

// tokenRefusal counts a request for its token and reports how to refuse it, if it is refused.
func (s *Server) tokenRefusal(r *http.Request) (refusal, bool) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return refusal{}, false
	}
	h := sha256.Sum256([]byte(raw))
	s.tokensMu.Lock()
	defer s.tokensMu.Unlock()
	if s.tokenCalls == nil {
		s.tokenCalls = make(map[[32]byte]int)
	}
	s.tokenCalls[h]++
	ref, ok := s.refused[h]
	return ref, ok
}

// New returns a Server with no vehicles.
func New(opts Options) *Server {
	s := &Server{
		log:       opts.Logger,
		now:       opts.Now,
		seed:      opts.Seed,
		boot:      opts.BootTime,
		trusted:   append([]*ecdh.PublicKey(nil), opts.TrustedKeys...),
		vehicles:  make(map[string]*Vehicle),
		ids:       make(map[string]string),
		faults:    make(map[string]Fault),
		telemetry: make(map[string]map[string]any),
		stats:     emptyStats(),
		life:      lifecycle{sleepAfter: opts.SleepAfter, wakeTime: opts.WakeTime},
		echo:      opts.Echo,
		recent:    make(map[string][]Execution),

		stopEvents: make(chan struct{}),

		invitations: make(map[string][]invitation),
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.log = s.log.Named("fleetsim")
	if s.now == nil {
		s.now = time.Now
	}
	s.router = s.newRouter()
	s.SetLatency(opts.Latency)
	return s
}

// SetLatency sets how long Fleet API answers take from now on, per route class. The zero
// Latency answers at once.
func (s *Server) SetLatency(l Latency) {
	if l.IsZero() {
		s.latency.Store(nil)
		return
	}
	s.latency.Store(&l)
}

// Latency returns the answer times set by Options.Latency or SetLatency.
func (s *Server) Latency() Latency {
	if l := s.latency.Load(); l != nil {
		return *l
	}
	return Latency{}
}

// newRouter is the one routing table. UseEncodedPath and SkipClean keep escaped and unclean paths
// exactly as they arrived, so the echo can report them; the catch-all is registered last.
func (s *Server) newRouter() *mux.Router {
	r := mux.NewRouter().UseEncodedPath().SkipClean(true)

	// Control endpoints and the dashboard, outside the simulated Fleet API and not counted in
	// Stats. Browsers may not change anything here from another site's page.
	cop := http.NewCrossOriginProtection()
	sim := func(path string, h http.HandlerFunc, methods ...string) {
		r.Handle(path, cop.Handler(h)).Methods(methods...)
	}
	sim("/sim/stats", s.handleSimStats, http.MethodGet)
	sim("/sim/stats", s.handleSimResetStats, http.MethodDelete)
	sim("/sim/stats/reset", s.handleSimResetStats, http.MethodPost)
	sim("/sim/executions", s.handleSimExecutions, http.MethodGet)
	sim("/sim/faults", s.handleSimGetFaults, http.MethodGet)
	sim("/sim/faults", s.handleSimSetFault, http.MethodPost)
	sim("/sim/reboot", s.handleSimReboot, http.MethodPost)
	sim("/sim/vehicles", s.handleSimVehicles, http.MethodGet)
	sim("/sim/vehicles/{vin}/asleep", s.handleSimAsleep, http.MethodPost)
	sim("/sim/vehicles/{vin}/wake", s.handleSimWake, http.MethodPost)
	sim("/sim/state", s.handleSimState, http.MethodGet)
	sim("/sim/events", s.handleSimEvents, http.MethodGet)
	r.Handle("/sim/", dashboardHandler()).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/sim/assets/").Handler(dashboardHandler()).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/sim/").Handler(cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		apierr.Write(w, apierr.New(http.StatusNotFound, "not_found", "Unknown simulator control endpoint."))
	})))

	// The simulated Fleet API: what signing needs, always.
	r.Handle("/api/1/vehicles", s.api("vehicles", s.handleVehicles)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/fleet_telemetry_config_jws", s.api("fleet_telemetry_config_jws", s.handleTelemetryJWS)).Methods(http.MethodPost)
	r.Handle("/api/1/vehicles/{vin}/signed_command", s.api("signed_command", s.handleSignedCommand)).Methods(http.MethodPost)
	r.Handle("/api/1/vehicles/{vin}/command/{name}", s.api("command", s.handleRESTCommand)).Methods(http.MethodPost)
	r.Handle("/api/1/vehicles/{vin}/wake_up", s.api("wake_up", s.handleWakeUp)).Methods(http.MethodPost)
	r.Handle("/api/1/vehicles/{vin}/fleet_telemetry_config", s.api("fleet_telemetry_config", s.handleTelemetryGet)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/fleet_telemetry_config", s.api("fleet_telemetry_config", s.handleTelemetryDelete)).Methods(http.MethodDelete)
	if s.echo {
		r.PathPrefix("/").Handler(s.api("echo", s.handleEcho))
		return r
	}

	// The read routes apps call, unless Options.Echo answers them with echoes.
	r.Handle("/api/1/vehicles/fleet_status", s.api("fleet_status", s.handleFleetStatus)).Methods(http.MethodPost)
	r.Handle("/api/1/vehicles/{vin}", s.api("vehicle", s.handleVehicle)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/vehicle_data", s.api("vehicle_data", s.handleVehicleData)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/data_request/{section}", s.api("data_request", s.handleDataRequest)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/nearby_charging_sites", s.api("nearby_charging_sites", s.handleNearbyChargingSites)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/service_data", s.api("service_data", s.handleServiceData)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/mobile_enabled", s.api("mobile_enabled", s.handleMobileEnabled)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/release_notes", s.api("release_notes", s.handleReleaseNotes)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/drivers", s.api("drivers", s.handleDrivers)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/drivers", s.api("drivers", s.handleDriversDelete)).Methods(http.MethodDelete)
	r.Handle("/api/1/vehicles/{vin}/invitations", s.api("invitations", s.handleInvitations)).Methods(http.MethodGet)
	r.Handle("/api/1/vehicles/{vin}/invitations", s.api("invitations", s.handleInvitationCreate)).Methods(http.MethodPost)
	r.Handle("/api/1/vehicles/{vin}/invitations/{invitation}/revoke", s.api("invitations", s.handleInvitationRevoke)).Methods(http.MethodPost)
	r.Handle("/api/1/products", s.api("products", s.handleProducts)).Methods(http.MethodGet)
	r.Handle("/api/1/users/me", s.api("users", s.handleUserMe)).Methods(http.MethodGet)
	r.Handle("/api/1/users/region", s.api("users", s.handleUserRegion)).Methods(http.MethodGet)
	r.PathPrefix("/").Handler(s.api("not_found", s.handleNotFound))
	return r
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// AddVehicle adds a vehicle with a fresh key, fresh epochs and the default car state, awake, with
// the given client keys enrolled, and returns it. Adding a VIN that exists returns the existing
// vehicle with the keys added.
func (s *Server) AddVehicle(vin string, enrolled ...*ecdh.PublicKey) *Vehicle {
	s.mu.Lock()
	v, ok := s.vehicles[vin]
	if !ok {
		var err error
		v, err = newVehicle(vin, s.now, s.seed, s.boot, s.life)
		if err != nil {
			s.mu.Unlock()
			// Only key generation or the system RNG can fail here.
			panic("fleetsim: new vehicle: " + err.Error())
		}
		v.changed = s.changes.notify
		s.vehicles[vin] = v
		s.ids[strconv.FormatInt(vehicleID(vin), 10)] = vin
		s.order = append(s.order, vin)
	}
	s.mu.Unlock()
	v.Enroll(enrolled...)
	return v
}

// Vehicle returns the vehicle with that VIN, or nil.
func (s *Server) Vehicle(vin string) *Vehicle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vehicles[vin]
}

// VINs returns the VINs of all vehicles in the order they were added.
func (s *Server) VINs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

// SetFault sets the fault for one vehicle, or for the whole server when vin is "". The zero Fault
// clears it.
func (s *Server) SetFault(vin string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case vin == "":
		s.fault = f
	case f.IsZero():
		delete(s.faults, vin)
	default:
		s.faults[vin] = f
	}
	s.changes.notify()
}

// Fault returns the effective fault for a vehicle (its own merged with the server-wide one), or
// the server-wide fault when vin is "".
func (s *Server) Fault(vin string) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vin == "" {
		return s.fault
	}
	return s.faults[vin].merge(s.fault)
}

// Reboot reboots one vehicle, or every vehicle when vin is "" (see Vehicle.Reboot).
func (s *Server) Reboot(vin string) {
	for _, v := range s.pick(vin) {
		v.Reboot()
	}
}

// Executions returns a copy of the commands recorded for one vehicle, or for all when vin is "",
// in the order they ran.
func (s *Server) Executions(vin string) []Execution {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Execution
	for _, e := range s.executions {
		if vin == "" || e.VIN == vin {
			e.Body = append([]byte(nil), e.Body...) // nil when empty
			out = append(out, e)
		}
	}
	return out
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	out := s.stats
	out.Vehicles = make(map[string]VehicleStats, len(s.stats.Vehicles))
	for vin, vs := range s.stats.Vehicles {
		vs.Rejections = maps.Clone(vs.Rejections)
		out.Vehicles[vin] = vs
	}
	out.Rejections = maps.Clone(s.stats.Rejections)
	out.Injected = maps.Clone(s.stats.Injected)
	out.Routes = maps.Clone(s.stats.Routes)
	out.Billing = maps.Clone(s.stats.Billing)
	return out
}

// ResetStats sets every counter back to zero. Executions are kept.
func (s *Server) ResetStats() {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats = emptyStats()
}

func emptyStats() Stats {
	return Stats{
		Vehicles:   map[string]VehicleStats{},
		Rejections: map[string]int{},
		Injected:   map[string]int{},
		Routes:     map[string]int{},
		Billing:    map[string]int{},
	}
}

// pick returns one vehicle, or all when vin is "".
func (s *Server) pick(vin string) []*Vehicle {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vin != "" {
		if v := s.vehicles[vin]; v != nil {
			return []*Vehicle{v}
		}
		return nil
	}
	out := make([]*Vehicle, 0, len(s.order))
	for _, vin := range s.order {
		out = append(out, s.vehicles[vin])
	}
	return out
}

// lookup finds a vehicle by VIN or by its numeric id (the Fleet API's "vehicle_tag").
func (s *Server) lookup(tag string) *Vehicle {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vehicles[tag]; v != nil {
		return v
	}
	return s.vehicles[s.ids[tag]]
}

// recentPerVehicle is how many of a car's last commands the dashboard shows.
const recentPerVehicle = 8

func (s *Server) record(e Execution) {
	s.mu.Lock()
	s.executions = append(s.executions, e)
	r := append(s.recent[e.VIN], e)
	if len(r) > recentPerVehicle {
		r = append(r[:0:0], r[len(r)-recentPerVehicle:]...)
	}
	s.recent[e.VIN] = r
	s.mu.Unlock()
	s.changes.notify()
}

// vehicleID is a stable, positive, Tesla-looking numeric id for a VIN.
func vehicleID(vin string) int64 {
	h := fnv.New64a()
	h.Write([]byte(vin))
	return int64(h.Sum64()%9_000_000_000_000_000) + 1_000_000_000_000_000
}

// --- counting ---

func (s *Server) countVehicle(vin string, f func(*VehicleStats)) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	vs := s.stats.Vehicles[vin]
	f(&vs)
	s.stats.Vehicles[vin] = vs
}

func (s *Server) countRejection(vin, name string) {
	s.countVehicle(vin, func(vs *VehicleStats) {
		if vs.Rejections == nil {
			vs.Rejections = map[string]int{}
		}
		vs.Rejections[name]++
	})
	s.statsMu.Lock()
	s.stats.Rejections[name]++
	s.statsMu.Unlock()
}

func (s *Server) countInjected(name string) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats.Injected[name]++
}

func (s *Server) countJWS(accepted bool) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if accepted {
		s.stats.JWSAccepted++
	} else {
		s.stats.JWSRejected++
	}
}

// billingCategory maps a route to Tesla's price list.
func billingCategory(route string) string {
	switch route {
	case "signed_command", "command":
		return BillingCommands
	case "wake_up":
		return BillingWakes
	default:
		return BillingData
	}
}

func (s *Server) countRequest(route string, status int) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats.Upstream++
	s.stats.Routes[route]++
	// Tesla bills every answer below 500. A request that got no answer at all (the client went
	// away during an injected delay) is not counted as billed.
	if status != 0 && status < 500 {
		s.stats.Billing[billingCategory(route)]++
	}
	s.changes.notify()
}

// broadcast lets any number of watchers wait for the next change. notify is one atomic load
// while nobody watches, so counting a request stays cheap.
type broadcast struct {
	ch atomic.Pointer[chan struct{}] // closed at the next notify; nil while nobody waits
}

// notify wakes every watcher.
func (b *broadcast) notify() {
	if b.ch.Load() == nil {
		return
	}
	if p := b.ch.Swap(nil); p != nil {
		close(*p)
	}
}

// next returns a channel closed at the next notify.
func (b *broadcast) next() <-chan struct{} {
	for {
		if p := b.ch.Load(); p != nil {
			return *p
		}
		c := make(chan struct{})
		if b.ch.CompareAndSwap(nil, &c) {
			return c
		}
	}
}

// call is what api resolved for one Fleet API request, once, before its handler runs.
type call struct {
	// v is the vehicle the path names (/api/1/vehicles/{vin or id}/…), or nil.
	v *Vehicle
	// f is the effective fault for that vehicle (the server-wide one when v is nil), read once
	// before any injected delay.
	f Fault
}

// vehicle returns the vehicle the path names, or writes a 404 and returns nil.
func (c call) vehicle(w http.ResponseWriter) *Vehicle {
	if c.v == nil {
		writeFleetError(w, http.StatusNotFound, "not_found", "", nil)
	}
	return c.v
}

// api wraps a Fleet API handler: it counts the request, resolves its vehicle and fault, and
// applies the faults that hit every route (delay, 421, 429) before the handler runs.
func (s *Server) api(route string, h func(http.ResponseWriter, *http.Request, call)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &httpstatus.Writer{ResponseWriter: w}
		defer func() { s.countRequest(route, rec.Status) }()
		v := s.vehicleOf(r)
		vin := ""
		if v != nil {
			vin = v.vin
		}
		if ref, ok := s.tokenRefusal(r); ok {
			if sleepCtx(r.Context(), ref.delay) != nil {
				return
			}
			s.countInjected("token_refused")
			writeFleetError(rec, ref.status, "unauthorized", "The access token is invalid or expired.", nil)
			return
		}
		f := s.Fault(vin)
		wait := f.Delay
		if l := s.latency.Load(); l != nil {
			wait += l.of(route, r).draw()
		}
		if wait > 0 {
			if err := sleepCtx(r.Context(), wait); err != nil {
				return
			}
		}
		if host := f.MisdirectedHost; host != "" {
			s.countInjected("misdirected")
			writeFleetError(rec, http.StatusMisdirectedRequest,
				fmt.Sprintf("user out of region, use base URL: https://%s, see https://developer.tesla.com/docs/fleet-api#regional-requirements", host),
				"", http.Header{"Alt-Svc": {"h2=https://" + host}})
			return
		}
		if n := f.RateLimitRetryAfter; n > 0 {
			s.countInjected("rate_limited")
			writeFleetError(rec, http.StatusTooManyRequests, "rate limit exceeded",
				fmt.Sprintf("Rate limit exceeded; retry after %d seconds.", n),
				http.Header{"Retry-After": {strconv.Itoa(n)}})
			return
		}
		h(rec, r, call{v: v, f: f})
		if s.log.Core().Enabled(zap.DebugLevel) {
			s.log.Debug("request", zap.String("route", route), zap.String("vin", vin), zap.Int("status", rec.Status))
		}
	})
}

// vehicleOf returns the vehicle a Fleet API path names (/api/1/vehicles/{vin or id}/…), or nil.
func (s *Server) vehicleOf(r *http.Request) *Vehicle {
	parts := strings.Split(r.URL.EscapedPath(), "/")
	if len(parts) < 5 || parts[1] != "api" || parts[2] != "1" || parts[3] != "vehicles" {
		return nil
	}
	tag, err := url.PathUnescape(parts[4])
	if err != nil {
		return nil
	}
	return s.lookup(tag)
}

// writeFleetError writes the Fleet API's error shape {"response":null,"error":…,"error_description":…}.
func writeFleetError(w http.ResponseWriter, code int, errText, desc string, h http.Header) {
	apierr.Write(w, &apierr.Error{Code: code, Word: errText, Msg: desc, Header: h})
}

// writeJSON writes v as a JSON answer. Like the Fleet API's, it does not escape <, > and &
// ("<invalid>" stays as it is).
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		apierr.Write(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ http.Handler = (*Server)(nil)
