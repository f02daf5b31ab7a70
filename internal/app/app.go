// Package app assembles the proxy's parts (forwarder, signer, telemetry signing, router) from
// settings, the same way for the real binary, the dev mode and the tests.
package app

import (
	"crypto/ecdh"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/budget"
	"github.com/teslaproxy/proxy/internal/coalesce"
	"github.com/teslaproxy/proxy/internal/fleetstatus"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/jws"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/signer"
	"github.com/teslaproxy/proxy/internal/vehicleid"
	"github.com/teslaproxy/proxy/internal/wake"
)

// Options are the settings the parts need.
type Options struct {
	// Key is the command-signing key.
	Key protocol.ECDHPrivateKey
	// Upstream, when not nil, fixes the Fleet API base URL; nil chooses by token region.
	Upstream *url.URL
	// Transport carries every upstream call; nil means forward.NewTransport's default.
	Transport http.RoundTripper
	// Timeout is the per-request upstream deadline (the -timeout flag).
	Timeout time.Duration
	// MaxBodyBytes bounds bodies the proxy reads itself.
	MaxBodyBytes int64
	// MaxResponseBytes bounds upstream answers the proxy reads itself.
	MaxResponseBytes int64
	// IdleTimeout cuts a stalled pass-through transfer off; zero means forward's default.
	IdleTimeout time.Duration
	// MaxClientInFlight bounds one token's pass-through requests in flight; zero means none.
	// OnClientLimited, when not nil, counts the requests refused by it.
	MaxClientInFlight int
	OnClientLimited   func()
	// Sessions holds the cars' session records; nil means a memory store of CacheSize cars,
	// closed by Close.
	Sessions *sessions.Store
	// Shared, when not nil, is a session store shared with other replicas (see
	// signer.Options.Shared); Sessions is then unused. The caller closes it.
	Shared signer.SharedStore
	// CacheSize bounds the vehicles whose sessions are kept when Sessions is nil; zero means
	// sessions.DefaultSize.
	CacheSize int
	// Metrics, when not nil, serves /metrics on the main listener.
	Metrics http.Handler
	// OnHandshake is told about every session handshake; OnSession whether each signed command
	// found its session ready. Either may be nil.
	OnHandshake func()
	OnSession   func(ready bool)
	// OnUpstream is told about every Fleet API call; nil means nobody is.
	OnUpstream func(method, path string, status int)
	// AllowNets, when not empty, limits which client addresses are served.
	AllowNets []netip.Prefix
	// Observe and InFlight feed request metrics; either may be nil.
	Observe  func(route string, status int, seconds float64)
	InFlight func(delta float64)
	// Logger receives every part's logs.
	Logger *zap.Logger

	// AutoWake, when set, wakes a car that is asleep when a command reaches it, waiting up to
	// WakeTimeout (zero means wake.DefaultTimeout) for it to come online (-auto-wake).
	AutoWake    bool
	WakeTimeout time.Duration
	// OnWake, OnWakeAvoided and OnWakePoll are told about each wake_up sent, each command that
	// shared another's wake, and each vehicle-list poll; any may be nil.
	OnWake, OnWakeAvoided, OnWakePoll func()
	// OnVehicleIDLookup is told about each numeric vehicle id resolved to a VIN, and whether
	// from the cache; nil means nobody is.
	OnVehicleIDLookup func(cached bool)

	// CoalesceReads, when set, lets identical concurrent GETs share one upstream call
	// (-coalesce-reads), and reuses a 200 answer for ReadCacheTTL (-read-cache-ttl; zero reuses
	// nothing). OnReadSaved is told about each read answered without a call; it may be nil.
	CoalesceReads bool
	ReadCacheTTL  time.Duration
	OnReadSaved   func(path string, cached bool)
	// OnLegacyLearned is told about each car a fleet_status answer showed to lack the protocol
	// (its first command then skips a signed_command the Fleet API would refuse); may be nil.
	OnLegacyLearned func()
	// Budget, when not nil, refuses billed calls once the month's budget is spent
	// (-monthly-budget); with Metrics on the main listener, its figures are served at /budget.
	Budget *budget.Budget
}

// App is an assembled proxy.
type App struct {
	// Handler serves every request (see server.NewRouter).
	Handler http.Handler
	Forward *forward.Forwarder
	Signer  *signer.Signer
	// PublicKeyPEM is the command key's public half in PEM.
	PublicKeyPEM []byte

	ownStore *sessions.Store
}

// New assembles the proxy. It registers the Tesla.SS256 JWS method with golang-jwt.
func New(o Options) (*App, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	jws.Register()
	fwd, err := forward.New(forward.Options{
		Upstream:         o.Upstream,
		Transport:        o.Transport,
		Timeout:          o.Timeout,
		MaxResponseBytes: o.MaxResponseBytes,
		MaxReplayBytes:   o.MaxBodyBytes,
		Logger:           log,
		OnUpstream:       o.OnUpstream,
		IdleTimeout:      o.IdleTimeout,

		MaxClientInFlight: o.MaxClientInFlight,
		OnClientLimited:   o.OnClientLimited,
	})
	if err != nil {
		return nil, err
	}
	store, ownStore := o.Sessions, false
	if o.Shared != nil {
		store = o.Shared.Local()
	}
	if store == nil {
		if store, err = sessions.Open(sessions.Options{Size: o.CacheSize}); err != nil {
			return nil, err
		}
		ownStore = true
	}
	ids := vehicleid.New(vehicleid.Options{Forward: fwd, OnLookup: o.OnVehicleIDLookup})
	sg, err := signer.New(signer.Options{
		Key:          o.Key,
		Forward:      fwd,
		Timeout:      o.Timeout,
		MaxBodyBytes: o.MaxBodyBytes,
		Store:        store,
		Shared:       o.Shared,
		OnHandshake:  o.OnHandshake,
		OnSession:    o.OnSession,
		Logger:       log,
		Waker:        newWaker(o, fwd, log),
		IDs:          ids,
	})
	if err != nil {
		return nil, err
	}
	pubPEM, err := PublicKeyPEM(o.Key)
	if err != nil {
		return nil, err
	}
	h := server.NewRouter(server.Deps{
		Logger:       log,
		Forward:      fwd,
		Commands:     gate(o.Budget, sg),
		Telemetry:    gate(o.Budget, &server.Telemetry{Key: o.Key, Forward: fwd, MaxBodyBytes: o.MaxBodyBytes, Logger: log.Named("telemetry"), VIN: ids.VIN}),
		PublicKeyPEM: pubPEM,
		Metrics:      o.Metrics,
		AllowNets:    o.AllowNets,
		Observe:      o.Observe,
		InFlight:     o.InFlight,
		Degraded:     degraded(o.Shared),
		PassThrough:  gate(o.Budget, passThrough(o, fwd, sg, log)),
		Budget:       budgetFigures(o),
	})
	a := &App{Handler: h, Forward: fwd, Signer: sg, PublicKeyPEM: pubPEM}
	if ownStore {
		a.ownStore = store
	}
	return a, nil
}

// passThrough returns the handler of the pass-through routes: the forwarder, behind
// -coalesce-reads when it is on, with fleet_status answers read for the cars that lack the
// protocol.
func passThrough(o Options, fwd *forward.Forwarder, sg *signer.Signer, log *zap.Logger) http.Handler {
	var h http.Handler = fwd
	if o.CoalesceReads {
		h = coalesce.New(coalesce.Options{Next: fwd, TTL: o.ReadCacheTTL, MaxBodyBytes: o.MaxResponseBytes, OnSaved: o.OnReadSaved})
	}
	return fleetstatus.Learn(h, sg, o.OnLegacyLearned, log.Named("fleet-status"))
}

// gate puts h behind the budget, if there is one.
func gate(b *budget.Budget, h http.Handler) http.Handler {
	if b == nil {
		return h
	}
	return b.Gate(h)
}

// budgetFigures returns the /budget handler for the main listener: only with a budget and with
// /metrics served there too.
func budgetFigures(o Options) http.Handler {
	if o.Budget == nil || o.Metrics == nil {
		return nil
	}
	return o.Budget.Handler()
}

// newWaker returns the -auto-wake Waker, or nil when it is off.
func newWaker(o Options, fwd *forward.Forwarder, log *zap.Logger) *wake.Waker {
	if !o.AutoWake {
		return nil
	}
	return wake.New(wake.Options{Forward: fwd, Timeout: o.WakeTimeout, OnWake: o.OnWake, OnAvoided: o.OnWakeAvoided, OnPoll: o.OnWakePoll, Logger: log})
}

// degraded returns the shared store's Degraded method, if it has one.
func degraded(s signer.SharedStore) func() bool {
	if d, ok := s.(interface{ Degraded() bool }); ok {
		return d.Degraded
	}
	return nil
}

// Close releases what New made. A store passed in Options.Sessions is the caller's to close.
func (a *App) Close() {
	a.Signer.Close()
	if a.ownStore != nil {
		_ = a.ownStore.Close()
	}
}

// PublicKeyPEM returns the PKIX PEM of a command key's public half, as Tesla expects it at
// /.well-known/appspecific/com.tesla.3p.public-key.pem.
func PublicKeyPEM(key protocol.ECDHPrivateKey) ([]byte, error) {
	pub, err := ecdh.P256().NewPublicKey(key.PublicBytes())
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
