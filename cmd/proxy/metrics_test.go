package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetricsListenerObeysAllow: the -metrics-addr listener answers only the clients -allow
// admits, as the main listener does (issue 18).
func TestMetricsListenerObeysAllow(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	for _, tc := range []struct {
		allow string
		want  int
	}{
		{"10.0.0.0/8", http.StatusForbidden},
		{"127.0.0.1", http.StatusOK},
	} {
		t.Run("allow "+tc.allow, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := startProc(t, f.args("-metrics-addr", addr, "-allow", tc.allow))
			p.waitListening(t)
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("GET /metrics from 127.0.0.1 with -allow %s: status %d, want %d", tc.allow, resp.StatusCode, tc.want)
			}
			if served := strings.Contains(string(body), "# HELP"); served != (tc.want == http.StatusOK) {
				t.Errorf("metrics served = %v with status %d", served, resp.StatusCode)
			}
			p.stop(t)
		})
	}
}

// TestCheckConfigRefusesOpenMetrics: -check-config calls a -metrics-addr reachable from the
// network invalid unless -allow limits it, and always when -client-ca is set.
func TestCheckConfigRefusesOpenMetrics(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	for _, tc := range []struct {
		name  string
		extra []string
		code  int
	}{
		{"every interface", []string{"-metrics-addr", "0.0.0.0:9090"}, 1},
		{"every interface with allow", []string{"-metrics-addr", ":9090", "-allow", "10.0.0.0/8"}, 0},
		{"loopback", []string{"-metrics-addr", "127.0.0.1:9090"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runProxy(t, f.args(append([]string{"-check-config"}, tc.extra...)...))
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if tc.code != 0 && !strings.Contains(stderr, "-metrics-addr:") {
				t.Errorf("stderr does not name -metrics-addr:\n%s", stderr)
			}
		})
	}
}
