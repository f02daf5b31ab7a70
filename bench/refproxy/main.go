// Command refproxy runs the reference proxy, Tesla's tesla-http-proxy v0.4.1 (vehicle-command's
// pkg/proxy), for the benchmark in ../: the same handler cmd/tesla-http-proxy serves, behind an
// http.Server with TLS, with every upstream connection sent to the Fleet API simulator on
// loopback.
//
// The reference insists on https:// Tesla hosts chosen from the bearer token (pkg/account), so the
// URL cannot be pointed at the simulator. Instead http.DefaultTransport, which pkg/proxy's
// forwarder, pkg/account and pkg/connector/inet all use (each builds a zero http.Client), is
// replaced by a clone whose DialContext connects to -sim whatever address it is asked for. The
// TLS server name stays the Tesla host from the URL, so the simulator's certificate must be valid
// for it, and only -sim-ca is trusted. Nothing here can dial anything but -sim, which must be a
// loopback address.
//
// It prints "listening on https://127.0.0.1:PORT" on stderr once it accepts connections.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"github.com/teslamotors/vehicle-command/pkg/proxy"
)

// cacheSize is the session cache size cmd/tesla-http-proxy v0.4.1 uses.
const cacheSize = 10000

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "refproxy: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	keyFile := flag.String("key-file", "", "command-signing key, PEM")
	certFile := flag.String("cert", "", "TLS certificate, PEM")
	tlsKeyFile := flag.String("tls-key", "", "TLS key, PEM")
	sim := flag.String("sim", "", "host:port of the Fleet API simulator (loopback only)")
	simCA := flag.String("sim-ca", "", "CA bundle (PEM) that signed the simulator's certificate")
	timeout := flag.Duration("timeout", proxy.DefaultTimeout, "the reference's -timeout")
	flag.Parse()

	host, _, err := net.SplitHostPort(*sim)
	if err != nil {
		return fmt.Errorf("-sim: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-sim must be a loopback IP address and port, not %q", *sim)
	}
	pemBytes, err := os.ReadFile(*simCA)
	if err != nil {
		return fmt.Errorf("-sim-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return fmt.Errorf("-sim-ca %s holds no certificate", *simCA)
	}

	// Replace the default transport before the proxy exists: every client the reference builds
	// uses it. Keep the rest of the default's settings (HTTP/2, two idle connections per host),
	// since that is what the reference runs with.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialer.DialContext(ctx, "tcp", *sim)
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	http.DefaultTransport = tr

	key, err := protocol.LoadPrivateKey(*keyFile)
	if err != nil {
		return fmt.Errorf("-key-file: %w", err)
	}
	p, err := proxy.New(context.Background(), key, cacheSize)
	if err != nil {
		return err
	}
	p.Timeout = *timeout

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// Like cmd/tesla-http-proxy's http.ListenAndServeTLS: no server timeouts, HTTP/2 on.
	srv := &http.Server{Handler: p} //nolint:gosec // G112: the reference has no timeouts, and this replica measures it as it is
	fmt.Fprintf(os.Stderr, "listening on https://%s\n", ln.Addr())
	err = srv.ServeTLS(ln, *certFile, *tlsKeyFile)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
