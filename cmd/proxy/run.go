package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/config"
	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/budget"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/metrics"
	"github.com/teslaproxy/proxy/internal/server"
	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/signer"
)

// run starts the proxy with cfg and serves until ctx ends. Every error it returns is fatal and
// reads as one sentence.
func run(ctx context.Context, cfg config.Config, log *zap.Logger, stdout io.Writer) error {
	var printReady func(url string, w io.Writer)
	if cfg.Dev {
		var err error
		if cfg, printReady, err = prepareDev(ctx, cfg, log); err != nil {
			return err
		}
	}
	// Runtime validates cfg and parses its settings once.
	rt, err := cfg.Runtime()
	if err != nil {
		return invalidConfig(err)
	}

	key, err := loadCommandKey(cfg, log)
	if err != nil {
		return err
	}
	if len(cfg.Domains) > 0 {
		log.Info("ignoring -domain: the proxy chooses domains per command", zap.Strings("domain", cfg.Domains))
	}
	if cfg.DisableSessionCache && cfg.SessionCache != "" {
		log.Info("-disable-session-cache is set: vehicle sessions are kept in memory only, not in -session-cache", zap.String("session_cache", cfg.SessionCache))
		cfg.SessionCache = ""
	}
	tlsConfig, reloader, err := serverTLS(cfg, key)
	if err != nil {
		return err
	}
	m := metrics.New()
	upstreamRT, err := upstreamTransport(cfg, m)
	if err != nil {
		return err
	}
	st, err := openStores(cfg, key, m, log)
	// Closed last, after the server has finished every command, so the final writes hold every
	// session and the month's spend.
	defer st.close()
	if err != nil {
		return err
	}
	var metricsOnMain http.Handler
	if cfg.MetricsAddr == "" {
		metricsOnMain = m.Handler()
	}
	a, err := app.New(appOptions(cfg, rt, key, upstreamRT, st, m, metricsOnMain, log))
	if err != nil {
		return err
	}
	defer a.Close()
	if cfg.MetricsAddr != "" {
		var budgetH http.Handler
		if st.budget != nil {
			budgetH = server.AllowOnly(rt.Allow, st.budget.Handler())
		}
		if err := serveMetrics(ctx, cfg.MetricsAddr, server.AllowOnly(rt.Allow, m.Handler()), budgetH, log); err != nil {
			return err
		}
	}
	// Catch SIGHUP before the listen line is logged: a reload sent as soon as the proxy says it
	// is up must not meet the default action, which ends the process.
	if reloader != nil {
		defer reloadOnHUP(ctx, reloader, log)()
	}
	return serve(ctx, cfg, a.Handler, tlsConfig, describeUpstream(rt.Upstream), log, func(url string) {
		if printReady != nil {
			printReady(url, stdout)
		}
	})
}

// appOptions are the settings app.New assembles the proxy from, taken from the configuration,
// the upstream transport, the stores and the metrics.
func appOptions(cfg config.Config, rt config.Runtime, key protocol.ECDHPrivateKey, upstreamRT http.RoundTripper, st *stores,
	m *metrics.Metrics, metricsOnMain http.Handler, log *zap.Logger) app.Options {
	return app.Options{
		Key:              key,
		Upstream:         rt.Upstream,
		Transport:        upstreamRT,
		Timeout:          cfg.Timeout,
		MaxBodyBytes:     cfg.MaxBodyBytes,
		MaxResponseBytes: cfg.MaxResponseBytes,
		IdleTimeout:      cfg.IdleTimeout,
		Sessions:         st.local,
		Shared:           st.shared,
		OnUpstream:       st.onUpstream,
		OnHandshake:      m.Handshake,
		OnSession:        m.Session,
		AllowNets:        rt.Allow,
		Metrics:          metricsOnMain,
		Observe:          m.Observe,
		InFlight:         m.InFlight,
		Logger:           log,

		MaxClientInFlight: clientShare(cfg),
		OnClientLimited:   m.ClientLimited,

		AutoWake:          cfg.AutoWake,
		WakeTimeout:       cfg.WakeTimeout,
		OnWake:            m.WakeSent,
		OnWakeAvoided:     m.WakeAvoided,
		OnWakePoll:        m.WakePoll,
		OnVehicleIDLookup: m.VehicleIDLookup,
		CoalesceReads:     cfg.CoalesceReads,
		ReadCacheTTL:      cfg.ReadCacheTTL,
		OnReadSaved:       m.ReadSaved,
		OnLegacyLearned:   m.LegacyCallSaved,
		Budget:            st.budget,
	}
}

// serverTLS returns the listener's TLS settings and the certificate reloader, or nil and nil
// with -plaintext.
func serverTLS(cfg config.Config, key protocol.ECDHPrivateKey) (*tls.Config, *server.CertReloader, error) {
	if cfg.Plaintext {
		return nil, nil, nil
	}
	if same, err := server.SameKey(cfg.TLSKeyFile, key.PublicBytes()); err != nil {
		return nil, nil, err
	} else if same {
		return nil, nil, fmt.Errorf("the TLS key %s is the command-signing key: use a separate key for TLS (scripts/gen-certs.sh makes one)", cfg.TLSKeyFile)
	}
	reloader, err := server.NewCertReloader(cfg.CertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, nil, err
	}
	tlsConfig := server.TLSConfig(reloader.GetCertificate)
	if cfg.ClientCA != "" {
		pool, err := loadCertPool(cfg.ClientCA)
		if err != nil {
			return nil, nil, fmt.Errorf("client CA: %w", err)
		}
		tlsConfig.ClientCAs = pool
		tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tlsConfig, reloader, nil
}

// upstreamTransport returns what carries every Fleet API call: HTTP/1.1 for the first requests in
// flight to a host and HTTP/2 streams beyond them, unless -upstream-http2 or
// -upstream-http1-requests 0 asks for one protocol only.
func upstreamTransport(cfg config.Config, m *metrics.Metrics) (http.RoundTripper, error) {
	opts := forward.TransportOptions{ResponseHeaderTimeout: cfg.Timeout, ExtraCAFile: cfg.UpstreamCA, MaxConnsPerHost: cfg.UpstreamMaxConns,
		HTTP2: cfg.UpstreamHTTP2, MaxDialsPerHost: cfg.UpstreamMaxDials, OnDialHeld: m.UpstreamDialHeld}
	transport, err := forward.NewTransport(opts)
	if err != nil {
		return nil, err
	}
	// Without a dial bound there is no held dial to drop, and the tracking would only cost a
	// trace per request.
	skipRedundant := func(rt http.RoundTripper) http.RoundTripper {
		if cfg.UpstreamMaxDials > 0 {
			return forward.SkipRedundantDials(rt)
		}
		return rt
	}
	var rt http.RoundTripper = transport
	if cfg.UpstreamHTTP2 {
		rt = skipRedundant(transport)
	}
	if !cfg.UpstreamHTTP2 && cfg.UpstreamHTTP1Requests > 0 {
		opts.HTTP2 = true
		h2, err := forward.NewTransport(opts)
		if err != nil {
			return nil, err
		}
		rt = forward.Overflow(transport, skipRedundant(h2), cfg.UpstreamHTTP1Requests)
	}
	// With a bound on upstream connections, count the requests waiting for one (without a
	// bound no request waits, and the wrapper would only cost).
	if cfg.UpstreamMaxConns > 0 {
		rt = forward.CountConnWaits(rt, m.UpstreamConnWait)
	}
	return rt, nil
}

// stores are where the proxy keeps what outlives a request: the cars' sessions (this replica's
// copy, and Redis with -session-store) and the month's spend (-monthly-budget).
type stores struct {
	local      *sessions.Store
	shared     signer.SharedStore
	budget     *budget.Budget
	onUpstream func(method, path string, status int)
	closers    []func()
}

// close closes what openStores opened, newest first: the budget saves its figure into the
// store before that closes, and the local store is written last.
func (s *stores) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// openStores opens the session store (reading what an earlier run saved), Redis with
// -session-store, and the budget with -monthly-budget, which is kept where the sessions are: the
// session file, or Redis, where the replicas add up their spend. What it opened is closed by the
// result's close, also when it fails.
func openStores(cfg config.Config, key protocol.ECDHPrivateKey, m *metrics.Metrics, log *zap.Logger) (*stores, error) {
	st := &stores{onUpstream: m.Upstream}
	local, err := sessions.Open(sessions.Options{Path: cfg.SessionCache, Size: cfg.CacheSize, Logger: log.Named("sessions")})
	if err != nil {
		return st, err
	}
	st.local = local
	st.closers = append(st.closers, func() {
		if err := local.Close(); err != nil {
			log.Warn("could not save sessions at shutdown", zap.String("file", cfg.SessionCache), zap.Error(err))
		}
	})
	var budgetStore budget.Store = local
	if cfg.SessionStore != "" {
		rs, err := sessions.OpenRedis(sessions.RedisOptions{
			URL:      cfg.SessionStore,
			Prefix:   sessions.KeyPrefix(key.PublicBytes()),
			Local:    local,
			LeaseTTL: leaseTTL(cfg.Timeout),
			Hooks: sessions.RedisHooks{
				Call: m.StoreCall, LockWait: m.StoreLockWait, LeaseLost: m.StoreLeaseLost,
				Degraded: m.StoreDegraded, LocalCommand: m.StoreLocalCommand,
			},
			Logger: log.Named("session-store"),
		})
		if err != nil {
			return st, err
		}
		st.closers = append(st.closers, func() { _ = rs.Close() })
		st.shared, budgetStore = rs, rs
		log.Info("sharing vehicle sessions with other replicas", zap.String("session_store", storeHost(cfg.SessionStore)), zap.Bool("reachable", !rs.Degraded()))
	}
	if cfg.MonthlyBudget > 0 {
		bud := budget.New(budget.Options{Limit: cfg.MonthlyBudget, WarnOnly: cfg.BudgetMode == "warn", Store: budgetStore,
			OnChange: m.Budget, OnRefused: m.BudgetRefused, Logger: log})
		st.closers = append(st.closers, bud.Close)
		st.budget = bud
		st.onUpstream = func(method, path string, status int) {
			m.Upstream(method, path, status)
			bud.Record(method, path, status)
		}
		f := bud.Figures()
		log.Info("monthly budget", zap.Float64("budget_dollars", f.BudgetDollars), zap.Float64("spent_dollars", f.SpentDollars),
			zap.String("mode", f.Mode), zap.Bool("kept_across_restarts", cfg.SessionCache != "" || cfg.SessionStore != ""))
	}
	return st, nil
}

// reloadOnHUP reloads the TLS certificate on every SIGHUP until ctx ends, and returns the function
// that stops catching the signal.
func reloadOnHUP(ctx context.Context, reloader *server.CertReloader, log *zap.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := reloader.Reload(); err != nil {
					log.Error("TLS certificate reload failed; still serving the old one", zap.Error(err))
				} else {
					log.Info("TLS certificate reloaded")
				}
			}
		}
	}()
	return func() { signal.Stop(hup) }
}

// serve listens, logs the listen line (how callers of -port 0 find the proxy), tells ready the
// URL, and serves handler until ctx ends.
func serve(ctx context.Context, cfg config.Config, handler http.Handler, tlsConfig *tls.Config, upstream string, log *zap.Logger, ready func(url string)) error {
	ln, err := listen(cfg)
	if err != nil {
		return err
	}
	scheme := "https"
	if tlsConfig == nil {
		scheme = "http"
	}
	addr := listenURL(scheme, ln.Addr())
	log.Info("listening on "+addr, zap.String("upstream", upstream))
	warnExposure(cfg, log)
	_ = log.Sync() // the listen line is how callers of -port 0 find the proxy: now, not in a second
	ready(addr)
	err = server.Serve(ctx, ln, server.Options{
		Handler:         handler,
		TLSConfig:       tlsConfig,
		Logger:          log,
		UpstreamTimeout: cfg.Timeout,
		ShutdownTimeout: cfg.ShutdownTimeout,
	})
	log.Info("stopped")
	return err
}

// leaseTTL is how long a vehicle's lease in the shared store lives unless renewed: shorter than
// a command's timeout, so that the lease of a replica that died frees the car well before the
// commands waiting for it give up; renewed every third of it while a command runs.
func leaseTTL(timeout time.Duration) time.Duration {
	return min(3*time.Second, max(timeout/2, 300*time.Millisecond))
}

// storeHost is the host:port of a -session-store URL, for logs: never its user or password.
func storeHost(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// serveMetrics serves /metrics on its own plain-HTTP listener until ctx ends. h comes wrapped
// in -allow (server.AllowOnly); Validate keeps the listener on loopback when -allow is empty or
// -client-ca is set.
func serveMetrics(ctx context.Context, addr string, h, budgetH http.Handler, log *zap.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	if budgetH != nil {
		mux.Handle("/budget", budgetH)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.Info("metrics on http://" + ln.Addr().String() + "/metrics")
	return nil
}

// invalidConfig words a Validate error: one problem on one line, several as a list below a
// heading, one per line.
func invalidConfig(err error) error {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) && len(joined.Unwrap()) > 1 {
		return fmt.Errorf("configuration is not valid:\n%w", err)
	}
	return fmt.Errorf("configuration is not valid: %w", err)
}

// loadSigningKey loads the command-signing key and warns when the file is readable by others.
func loadSigningKey(path string, log *zap.Logger) (protocol.ECDHPrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("command-signing key: %w", err)
	}
	// Group read is how Kubernetes and systemd hand a non-root process its secrets (0440);
	// access for everyone else is never needed.
	if st.Mode().Perm()&0o007 != 0 {
		log.Warn("the command-signing key file can be read by other users; run chmod 600 on it",
			zap.String("key_file", path), zap.String("mode", st.Mode().Perm().String()))
	}
	key, err := protocol.LoadPrivateKey(path)
	if err != nil {
		return nil, fmt.Errorf("command-signing key %s: %w (want a P-256 private key in PEM, SEC1 or PKCS8; proxy keygen makes one)", path, err)
	}
	return key, nil
}

func loadCertPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// listen opens the listener: TCP on host:port, or a unix socket for a "unix:PATH" host.
func listen(cfg config.Config) (net.Listener, error) {
	network, addr := cfg.ListenNetwork(), cfg.ListenAddr()
	what := addr
	if network == "unix" {
		_ = os.Remove(addr) //nolint:gosec // G703: the operator's own -listen socket path; a stale socket from a previous run is removed
		what = "unix socket " + addr
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", what, err)
	}
	return ln, nil
}

func listenURL(scheme string, addr net.Addr) string {
	if addr.Network() == "unix" {
		return "unix:" + addr.String()
	}
	return scheme + "://" + addr.String()
}

func describeUpstream(u *url.URL) string {
	if u == nil {
		return "by token region"
	}
	return u.String()
}

// warnExposure warns when the proxy listens beyond loopback with nothing limiting who may use it:
// anyone who can reach it can have commands signed with the fleet's key.
func warnExposure(cfg config.Config, log *zap.Logger) {
	if cfg.ClientCA != "" || len(cfg.AllowNets) > 0 || isLoopbackHost(cfg.Host) {
		return
	}
	log.Warn("listening beyond loopback with neither -client-ca nor -allow set: anyone who can reach this port can have commands signed with your key")
}

func isLoopbackHost(host string) bool {
	if host == "localhost" || strings.HasPrefix(host, "unix:") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// clientShare is the most pass-through requests one token may have in flight: -client-max-inflight,
// or by default half of a bounded upstream pool, so one client can never hold all of it. Without
// a bound on the pool no client waits for another's connection, and there is no default share.
func clientShare(cfg config.Config) int {
	if cfg.ClientMaxInFlight > 0 || cfg.UpstreamMaxConns <= 0 {
		return cfg.ClientMaxInFlight
	}
	return max(1, cfg.UpstreamMaxConns/2)
}
