package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Options configures Serve.
type Options struct {
	// Handler is what every request goes to (see NewRouter).
	Handler http.Handler
	// TLSConfig, when not nil, makes the listener serve TLS with it. Nil means plain HTTP, which
	// the caller allows only on loopback or a unix socket.
	TLSConfig *tls.Config
	// Logger receives the server's own errors.
	Logger *zap.Logger
	// UpstreamTimeout is the proxy's per-request upstream deadline; the write timeout is set above
	// it so an answer that took the whole deadline can still be written.
	UpstreamTimeout time.Duration
	// ShutdownTimeout bounds how long in-flight requests may run after shutdown starts. Zero
	// means 15 s.
	ShutdownTimeout time.Duration
}

// MaxHeaderBytes bounds request headers. Fleet API tokens are a few KiB; 64 KiB leaves room for
// any real client and turns away header floods with 431.
const MaxHeaderBytes = 64 << 10

// TLSConfig returns the server's TLS settings: TLS 1.2 or newer, the certificate from
// getCertificate on every handshake (so a renewed certificate is served without a restart).
func TLSConfig(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: getCertificate,
	}
}

// NewHTTPServer returns the hardened http.Server the proxy runs.
func NewHTTPServer(o Options) *http.Server {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	upstream := o.UpstreamTimeout
	if upstream <= 0 {
		upstream = 10 * time.Second
	}
	return &http.Server{
		Handler:   o.Handler,
		TLSConfig: o.TLSConfig,
		// Headers are small; a client that dribbles them out (slowloris) is cut off after 10 s.
		ReadHeaderTimeout: 10 * time.Second,
		// Signed routes read at most a bounded body. Pass-through bodies may be large: the
		// forwarder pushes this deadline back while bytes keep moving, so only a stalled upload
		// hits it.
		ReadTimeout: 60 * time.Second,
		// A command may wait for the upstream deadline twice (handshake, then the command), plus
		// the time to write the answer; pass-through pushes this back while bytes move.
		WriteTimeout: 2*upstream + 30*time.Second,
		// Keep-alive connections from apps are cheap to keep and costly to re-handshake, but an
		// idle one should not be held forever.
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: MaxHeaderBytes,
		ErrorLog:       zap.NewStdLog(log.Named("http").WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
}

// Serve answers requests on ln until ctx ends, then stops accepting, lets in-flight requests
// finish for at most the shutdown timeout, and returns. It returns nil after a clean shutdown.
func Serve(ctx context.Context, ln net.Listener, o Options) error {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	srv := NewHTTPServer(o)
	errc := make(chan error, 1)
	if o.TLSConfig != nil {
		// The listener shakes hands (see handshakeListener); http.Server serves HTTP/2 on the
		// connections whose ALPN chose it once its own TLSConfig offers h2, as ServeTLS would
		// arrange. Each gets its own copy: the server's HTTP/2 setup may write to its.
		cfg := o.TLSConfig.Clone()
		if len(cfg.NextProtos) == 0 {
			cfg.NextProtos = []string{"h2", "http/1.1"}
		}
		srv.TLSConfig = cfg
		hs := newHandshakeListener(ln, cfg.Clone(), srv.ReadHeaderTimeout, o.Logger.Named("tls"))
		defer func() { _ = hs.Close() }()
		ln = hs
	}
	go func() {
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	grace := o.ShutdownTimeout
	if grace <= 0 {
		grace = 15 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Requests still running past the grace period are cut off.
		_ = srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
