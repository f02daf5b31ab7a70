package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// productionLogger encodes like the binary's logger (JSON, info level, so one access-log line per
// request) but writes nowhere, so a profile shows the cost of logging without the disk.
func productionLogger() *zap.Logger { return productionLoggerTo(io.Discard) }

// productionLoggerTo is the binary's logger (app.NewLogger) writing to w.
func productionLoggerTo(w io.Writer) *zap.Logger {
	log, _ := app.NewLogger(false, w)
	return log
}

// stubBody is about the size of the simulator's echo of a vehicle_data request.
var stubBody = []byte(`{"response":{"method":"GET","path":"/api/1/vehicles/5YJ3E1EA8AF000000/vehicle_data","request_uri":"/api/1/vehicles/5YJ3E1EA8AF000000/vehicle_data","raw_query":"","body_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","body_length":0,"header":{"Accept-Encoding":["gzip"],"User-Agent":["Go-http-client/1.1"],"X-Forwarded-For":["127.0.0.1"]},"host":"127.0.0.1:1","authorization_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","x_forwarded_for":"127.0.0.1"}}` + "\n")

// stubTransport answers every request with stubBody, as the simulator's echo would.
type stubTransport struct{}

func (stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/2.0", ProtoMajor: 2,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(stubBody)),
		ContentLength: int64(len(stubBody)),
		Request:       r,
	}, nil
}

// BenchmarkPassThrough measures a small pass-through request (GET vehicle_data, answered by the
// simulator's echo) through the proxy assembled by internal/app, in-process and on loopback, for
// profiling the hot path:
//
//	go test ./bench -run '^$' -bench PassThrough -cpuprofile /tmp/cpu.out
//	go tool pprof -top -focus teslaproxy /tmp/cpu.out
//
// "stub" is the proxy's own work alone: the router with a stub upstream transport, so a profile of
// it is not mixed with the simulator's. "handler" calls the router directly (the upstream call to the simulator over loopback TLS
// included); "e2e" adds the client side: HTTP/1.1 keep-alive connections over TLS to the proxy's
// own http.Server, in parallel.
func BenchmarkPassThrough(b *testing.B) {
	env := testenv.Start(b, testenv.Options{Vehicles: 1, Logger: productionLogger()})
	path := "/api/1/vehicles/" + env.VINs[0] + "/vehicle_data"
	auth := "Bearer " + env.Token

	for _, logTo := range []string{"discard", "file"} {
		b.Run("stub/log="+logTo, func(b *testing.B) {
			// The proxy's own work only: the same app, with a transport that answers every
			// upstream call at once with a canned echo-sized JSON body. log=file writes the access
			// log to a file as the binary does to its stderr (one write per line).
			log := productionLogger()
			if logTo == "file" {
				f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = f.Close() })
				log = productionLoggerTo(f)
			}
			up, _ := url.Parse("https://127.0.0.1:1") // never dialed: the stub answers
			a, err := app.New(app.Options{Key: env.Key, Upstream: up, Transport: stubTransport{}, Timeout: 5 * time.Second, Logger: log})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(a.Close)
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				req.Header.Set("Authorization", auth)
				rec := httptest.NewRecorder()
				a.Handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}

	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.Header.Set("Authorization", auth)
			rec := httptest.NewRecorder()
			env.App.Handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})

	b.Run("e2e", func(b *testing.B) {
		pool := env.Client.Transport.(*http.Transport).TLSClientConfig.RootCAs
		tr := &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1, as bench/ loads
			MaxIdleConnsPerHost: 64,
		}
		client := &http.Client{Transport: tr}
		b.Cleanup(tr.CloseIdleConnections)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, err := http.NewRequest(http.MethodGet, env.URL+path, nil)
				if err != nil {
					b.Error(err)
					return
				}
				req.Header.Set("Authorization", auth)
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	})
}
