package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/teslaproxy/proxy/config"
)

func TestHealthURLFromSettings(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		url, sock string
	}{
		{"defaults", nil, "https://127.0.0.1:4443/health", ""},
		{"port and plaintext from env", map[string]string{"TESLA_HTTP_PROXY_PORT": "8080", "TESLA_HTTP_PROXY_PLAINTEXT": "true", "TESLA_HTTP_PROXY_HOST": "127.0.0.1"}, "http://127.0.0.1:8080/health", ""},
		{"every interface", map[string]string{"TESLA_HTTP_PROXY_HOST": "0.0.0.0"}, "https://127.0.0.1:4443/health", ""},
		{"ipv6 loopback", map[string]string{"TESLA_HTTP_PROXY_HOST": "::1"}, "https://[::1]:4443/health", ""},
		{"unix socket", map[string]string{"TESLA_HTTP_PROXY_HOST": "unix:/run/p.sock", "TESLA_HTTP_PROXY_PLAINTEXT": "1"}, "http://localhost/health", "/run/p.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Load(nil, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			url, sock := healthURL(cfg)
			if url != tc.url || sock != tc.sock {
				t.Errorf("healthURL = %q, %q; want %q, %q", url, sock, tc.url, tc.sock)
			}
		})
	}
}

func TestHealthExitCodes(t *testing.T) {
	ok := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			_, _ = w.Write([]byte("OK")) // a failed write shows as a failed probe
			return
		}
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer ok.Close()
	noenv := func(string) string { return "" }
	var out, errb bytes.Buffer
	if code := runHealth(context.Background(), []string{"-url", ok.URL + "/health"}, noenv, &out, &errb); code != 0 {
		t.Errorf("healthy proxy: exit %d (%s)", code, errb.String())
	}
	errb.Reset()
	if code := runHealth(context.Background(), []string{"-url", ok.URL + "/other"}, noenv, &out, &errb); code != 1 || !strings.Contains(errb.String(), "503") {
		t.Errorf("503: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := runHealth(context.Background(), []string{"extra"}, noenv, &out, &errb); code != 2 {
		t.Errorf("usage error: exit %d", code)
	}
}
