package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// envInt reads a positive integer from the environment, or returns def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// procStatus returns a field of /proc/self/status in KiB (VmRSS, VmHWM), or 0 off Linux.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// loadKinds are the kinds of request the load test sends, in the order of its summary.
var loadKinds = []string{"pass_get", "pass_list", "pass_post", "command", "telemetry"}

// TestLoadMixedTraffic runs E2E_LOAD_CONNS (default 1,000) client connections, each its own
// http.Transport and so its own TCP+TLS connection, against the proxy and the simulator for
// E2E_LOAD_SECONDS (default 30) of mixed traffic: pass-through reads and posts, commands to 100
// vehicles and telemetry configs. It wants zero errors, a bounded heap (E2E_LOAD_MAX_HEAP_MB,
// default 1024) and every command that was answered 200 executed exactly once. Run it with
// scripts/load.sh; it is skipped unless E2E_LOAD=1.
func TestLoadMixedTraffic(t *testing.T) {
	if os.Getenv("E2E_LOAD") != "1" {
		t.Skip("load test: set E2E_LOAD=1 (scripts/load.sh)")
	}
	conns := envInt("E2E_LOAD_CONNS", 1000)
	duration := time.Duration(envInt("E2E_LOAD_SECONDS", 30)) * time.Second
	maxHeap := uint64(max(envInt("E2E_LOAD_MAX_HEAP_MB", 1024), 0)) << 20 //nolint:gosec // G115: not negative
	const vehicles = 100

	withoutLeaks(t, "load", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: vehicles, Logger: zap.NewNop(), Timeout: 30 * time.Second})
		roots := rootsOf(env.Client)

		var (
			dials    atomic.Int64
			requests [5]atomic.Int64
			latency  [5]atomic.Int64 // summed nanoseconds
			slowest  [5]atomic.Int64
			errs     atomic.Int64
			refused  atomic.Int64 // 200 result:false
			mu       sync.Mutex
			samples  []string
			okByVIN  = make(map[string]int, vehicles)
		)
		fail := func(format string, args ...any) {
			errs.Add(1)
			mu.Lock()
			if len(samples) < 10 {
				samples = append(samples, fmt.Sprintf(format, args...))
			}
			mu.Unlock()
		}

		// Memory: the heap in use (sampled) and the process's peak RSS. Clients, proxy and
		// simulator share this process, so these bound the proxy's own use from above.
		var peakHeap atomic.Uint64
		stopSampling := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peakHeap.Load() {
					peakHeap.Store(ms.HeapInuse)
				}
				select {
				case <-stopSampling:
					return
				case <-tick.C:
				}
			}
		}()

		commands := []struct {
			name string
			body func(r *rand.Rand) []byte
		}{
			{"set_charge_limit", func(r *rand.Rand) []byte { return fmt.Appendf(nil, `{"percent":%d}`, 50+r.IntN(50)) }},
			{"flash_lights", func(*rand.Rand) []byte { return nil }},
			{"door_lock", func(*rand.Rand) []byte { return nil }},
			{"door_unlock", func(*rand.Rand) []byte { return nil }},
			{"set_charging_amps", func(r *rand.Rand) []byte { return fmt.Appendf(nil, `{"charging_amps":%d}`, 5+r.IntN(27)) }},
		}
		config := goodConfigJSON()

		start := time.Now()
		deadline := start.Add(duration)
		var wg sync.WaitGroup
		transports := make([]*http.Transport, conns)
		for i := range conns {
			tr := &http.Transport{
				TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
				ForceAttemptHTTP2:   false, // HTTP/1.1: one request at a time on one connection
				MaxConnsPerHost:     1,
				MaxIdleConnsPerHost: 1,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					dials.Add(1)
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				},
			}
			transports[i] = tr
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &http.Client{Transport: tr, Timeout: 60 * time.Second}
				r := rand.New(rand.NewPCG(uint64(i), 7)) //nolint:gosec // G115: i counts up from 0
				for time.Now().Before(deadline) {
					vin := env.VINs[r.IntN(vehicles)]
					var kind int
					switch x := r.IntN(100); {
					case x < 30:
						kind = 0
					case x < 40:
						kind = 1
					case x < 50:
						kind = 2
					case x < 85:
						kind = 3
					default:
						kind = 4
					}
					var method, path string
					var body []byte
					switch kind {
					case 0:
						method, path = "GET", "/api/1/vehicles/"+vin+"/vehicle_data?endpoints=charge_state;climate_state"
					case 1:
						method, path = "GET", "/api/1/vehicles"
					case 2:
						method, path, body = "POST", "/api/1/vehicles/fleet_status", []byte(`{"vins":["`+vin+`"]}`)
					case 3:
						cmd := commands[r.IntN(len(commands))]
						method, path, body = "POST", "/api/1/vehicles/"+vin+"/command/"+cmd.name, cmd.body(r)
					case 4:
						other := env.VINs[r.IntN(vehicles)]
						method, path, body = "POST", "/api/1/vehicles/fleet_telemetry_config", telemetryBody(`["`+vin+`","`+other+`"]`, config)
					}
					requests[kind].Add(1)
					var rd io.Reader
					if body != nil {
						rd = bytes.NewReader(body)
					}
					req, _ := http.NewRequest(method, env.URL+path, rd)
					req.Header.Set("Authorization", "Bearer "+env.Token)
					began := time.Now()
					resp, err := c.Do(req)
					if err != nil {
						fail("%s %s: %v", method, path, err)
						continue
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					d := int64(time.Since(began))
					latency[kind].Add(d)
					for {
						old := slowest[kind].Load()
						if d <= old || slowest[kind].CompareAndSwap(old, d) {
							break
						}
					}
					if err != nil || resp.StatusCode != http.StatusOK {
						fail("%s %s: %d %.200s %v", method, path, resp.StatusCode, got, err)
						continue
					}
					if kind == 3 {
						mu.Lock()
						okByVIN[vin]++
						mu.Unlock()
						if !commandOK(got) {
							refused.Add(1)
						}
					}
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		close(stopSampling)
		<-sampled
		for _, tr := range transports {
			tr.CloseIdleConnections()
		}
		hwm := procStatus("VmHWM")

		var total int64
		byKind := make([]string, len(loadKinds))
		for i, k := range loadKinds {
			n := requests[i].Load()
			total += n
			byKind[i] = fmt.Sprintf("%s=%d", k, n)
			if n > 0 {
				t.Logf("%-10s %6d requests, mean %v, slowest %v", k, n,
					time.Duration(latency[i].Load()/n).Round(time.Microsecond), time.Duration(slowest[i].Load()).Round(time.Millisecond))
			}
		}
		executed, mismatched := 0, 0
		for _, vin := range env.VINs {
			n := len(env.Sim.Executions(vin))
			executed += n
			if n != okByVIN[vin] {
				mismatched++
				t.Errorf("%s: %d commands answered 200, %d executed; want exactly once each", vin, okByVIN[vin], n)
			}
		}
		t.Logf("LOAD SUMMARY: connections=%d dials=%d requests=%d (%s) rate=%.0f/s errors=%d refusals=%d executed=%d mismatched_vins=%d peak_heap_inuse=%.1fMiB peak_rss(VmHWM)=%.1fMiB duration=%v",
			conns, dials.Load(), total, strings.Join(byKind, " "), float64(total)/took.Seconds(), errs.Load(), refused.Load(),
			executed, mismatched, float64(peakHeap.Load())/(1<<20), float64(hwm)/1024, took.Round(time.Millisecond))
		for _, s := range samples {
			t.Errorf("error: %s", s)
		}
		if errs.Load() != 0 {
			t.Errorf("%d errors, want none", errs.Load())
		}
		if dials.Load() < int64(conns) {
			t.Errorf("only %d client connections were made, want %d", dials.Load(), conns)
		}
		if peakHeap.Load() > maxHeap {
			t.Errorf("peak heap in use %d MiB, over the %d MiB bound", peakHeap.Load()>>20, maxHeap>>20)
		}
	})
}
