package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/coalesce"
	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/metrics"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// readEnv starts a proxy whose simulator takes 300 ms to answer reads, with -coalesce-reads
// when coalesce is set, and -read-cache-ttl ttl.
func readEnv(t *testing.T, m *metrics.Metrics, coalesceReads bool, ttl time.Duration) *testenv.Env {
	env := testenv.Start(t, testenv.Options{Vehicles: 1, Logger: zap.NewNop(), Metrics: m, Echo: true, App: func(o *app.Options) {
		o.CoalesceReads, o.ReadCacheTTL = coalesceReads, ttl
	}})
	env.Sim.SetLatency(fleetsim.Latency{Data: fleetsim.Delay{Base: 300 * time.Millisecond}})
	env.Sim.ResetStats()
	return env
}

// readResult is one answer to a concurrent GET.
type readResult struct {
	status int
	// authHash is the hash of the Authorization header the simulator saw for the call that
	// produced this answer.
	authHash  string
	coalesced string
}

// concurrentGETs sends one GET of path per token in tokens, all at once, and returns the answers
// in the same order.
func concurrentGETs(t *testing.T, env *testenv.Env, path string, tokens []string) []readResult {
	t.Helper()
	out := make([]readResult, len(tokens))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest(http.MethodGet, env.URL+path, nil)
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			<-start
			resp, err := env.Client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var echo struct {
				Response fleetsim.Echo `json:"response"`
			}
			if err := json.Unmarshal(body, &echo); err != nil {
				t.Errorf("answer %d is not the echo: %q", i, body)
			}
			out[i] = readResult{status: resp.StatusCode, authHash: echo.Response.AuthorizationSHA256, coalesced: resp.Header.Get(coalesce.HeaderCoalesced)}
		}()
	}
	close(start)
	wg.Wait()
	return out
}

func authHash(tok string) string {
	h := sha256.Sum256([]byte("Bearer " + tok))
	return hex.EncodeToString(h[:])
}

// TestCoalesceReads checks the issue-15 targets against the simulator's counters: 50 identical
// concurrent GETs cost at most 2 upstream calls with -coalesce-reads; with two tokens no answer
// reaches the other token; without the flag nothing changes.
func TestCoalesceReads(t *testing.T) {
	const n = 50
	withoutLeaks(t, "one token", func(t *testing.T) {
		m := metrics.New()
		env := readEnv(t, m, true, 0)
		path := "/api/1/vehicles/" + env.VINs[0] + "/vehicle_data?endpoints=location_data;charge_state"
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = env.Token
		}
		res := concurrentGETs(t, env, path, tokens)
		shared := 0
		for i, r := range res {
			if r.status != http.StatusOK || r.authHash != authHash(env.Token) {
				t.Errorf("answer %d: status %d, token hash %q", i, r.status, r.authHash)
			}
			if r.coalesced == "shared" {
				shared++
			}
		}
		calls := env.Sim.Stats().Routes["echo"]
		if calls > 2 {
			t.Errorf("%d identical concurrent GETs made %d upstream calls, want at most 2", n, calls)
		}
		if shared != n-calls {
			t.Errorf("%d answers marked shared, want %d", shared, n-calls)
		}
		text := scrape(t, env, "/metrics")
		if !strings.Contains(text, `tesla_proxy_coalesced_reads_total{how="shared"} `+itoa(n-calls)) {
			t.Errorf("/metrics does not count %d shared reads", n-calls)
		}
		if !strings.Contains(text, `tesla_proxy_estimated_savings_dollars_total{feature="coalesce_reads"}`) {
			t.Errorf("/metrics does not estimate the savings")
		}
		t.Logf("%d identical concurrent GETs with -coalesce-reads: %d upstream calls", n, calls)
	})

	withoutLeaks(t, "two tokens", func(t *testing.T) {
		env := readEnv(t, nil, true, 0)
		other := testenv.Token(t, map[string]any{"sub": "test-user", "aud": []any{"https://fleet-api.prd.na.vn.cloud.tesla.com"}, "ou_code": "NA", "n": 2})
		path := "/api/1/vehicles/" + env.VINs[0] + "/vehicle_data"
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = env.Token
			if i%2 == 1 {
				tokens[i] = other
			}
		}
		res := concurrentGETs(t, env, path, tokens)
		for i, r := range res {
			if r.status != http.StatusOK || r.authHash != authHash(tokens[i]) {
				t.Errorf("answer %d reached the wrong token (or failed): status %d", i, r.status)
			}
		}
		calls := env.Sim.Stats().Routes["echo"]
		if calls < 2 || calls > 4 {
			t.Errorf("%d GETs by two tokens made %d upstream calls, want 2 to 4", n, calls)
		}
		if env.Sim.TokenCalls(env.Token) == 0 || env.Sim.TokenCalls(other) == 0 {
			t.Errorf("each token must make its own call")
		}
		t.Logf("%d concurrent GETs by two tokens: %d upstream calls", n, calls)
	})

	withoutLeaks(t, "off by default", func(t *testing.T) {
		env := readEnv(t, nil, false, 0)
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = env.Token
		}
		res := concurrentGETs(t, env, "/api/1/vehicles/"+env.VINs[0]+"/vehicle_data", tokens)
		for i, r := range res {
			if r.status != http.StatusOK || r.coalesced != "" {
				t.Errorf("answer %d: status %d, %s %q", i, r.status, coalesce.HeaderCoalesced, r.coalesced)
			}
		}
		if calls := env.Sim.Stats().Routes["echo"]; calls != n {
			t.Errorf("without -coalesce-reads %d GETs made %d upstream calls, want %d", n, calls, n)
		}
	})

	withoutLeaks(t, "answer cache", func(t *testing.T) {
		env := readEnv(t, nil, true, time.Minute)
		path := "/api/1/vehicles/" + env.VINs[0] + "/vehicle_data"
		for i := 0; i < 3; i++ {
			resp, _ := env.Do(t, http.MethodGet, path, nil)
			want := "cached"
			if i == 0 {
				want = ""
			}
			if got := resp.Header.Get(coalesce.HeaderCoalesced); resp.StatusCode != http.StatusOK || got != want {
				t.Errorf("GET %d: status %d, %s %q, want %q", i, resp.StatusCode, coalesce.HeaderCoalesced, got, want)
			}
		}
		if calls := env.Sim.Stats().Routes["echo"]; calls != 1 {
			t.Errorf("3 GETs within the TTL made %d upstream calls, want 1", calls)
		}
		// Another token never gets the cached answer.
		other := testenv.Token(t, map[string]any{"sub": "test-user", "n": 3})
		res := concurrentGETs(t, env, path, []string{other})
		if res[0].authHash != authHash(other) || res[0].coalesced != "" {
			t.Errorf("another token got %+v", res[0])
		}
		// A different query is a different read.
		if resp, _ := env.Do(t, http.MethodGet, path+"?endpoints=charge_state", nil); resp.Header.Get(coalesce.HeaderCoalesced) != "" {
			t.Errorf("a different query was answered from the cache")
		}
	})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
