package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/teslaproxy/proxy/config"
)

// runHealth implements "proxy health": GET the proxy's /health and exit 0 on 200, 1 otherwise,
// 2 on a usage error. It exists for container health checks in images that have no curl. Without
// -url it finds the proxy from the same settings the proxy reads (defaults, -config's file via
// TESLA_HTTP_PROXY_CONFIG, TESLA_HTTP_PROXY_* variables), since a health check sees the
// container's environment but not the proxy's arguments. It never reads key files.
func runHealth(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "health URL of the proxy; empty derives it from the proxy's settings (https://127.0.0.1:4443/health by default)")
	caFile := fs.String("ca", "", "CA bundle (PEM) to verify the proxy's certificate with; empty skips verification (the check talks to the local proxy and sends no token)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "proxy health: usage: proxy health [-url URL] [-ca FILE] [-timeout 5s]")
		return 2
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	if *url == "" {
		cfg, err := config.Load(nil, getenv, io.Discard)
		if err != nil {
			fmt.Fprintf(stderr, "proxy health: %v\n", err)
			return 2
		}
		var socket string
		*url, socket = healthURL(cfg)
		if socket != "" {
			transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			}
		}
	}
	if *caFile != "" {
		pool, err := loadCertPool(*caFile)
		if err != nil {
			fmt.Fprintf(stderr, "proxy health: %v\n", err)
			return 1
		}
		transport.TLSClientConfig.RootCAs = pool
	} else {
		transport.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // a liveness probe of the local proxy; no secret is sent
	}
	client := &http.Client{Timeout: *timeout, Transport: transport}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "proxy health: %v\n", err)
		return 2
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "proxy health: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "proxy health: GET %s: %s\n", *url, resp.Status)
		return 1
	}
	return 0
}

// healthURL is where a local health check finds the proxy that cfg describes, and the unix
// socket to dial instead of TCP ("" for TCP).
func healthURL(cfg config.Config) (url, socket string) {
	scheme := "https"
	if cfg.Plaintext {
		scheme = "http"
	}
	if path, ok := strings.CutPrefix(cfg.Host, "unix:"); ok {
		return scheme + "://localhost/health", path
	}
	host := cfg.Host
	switch host {
	case "", "localhost", "0.0.0.0", "::":
		host = "127.0.0.1"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(cfg.Port)) + "/health", ""
}
