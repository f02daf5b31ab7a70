package coalesce_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/coalesce"
	"github.com/teslaproxy/proxy/internal/forward"
)

// start serves a Reads in front of a forwarder to upstream, on loopback, and returns its URL.
func start(t *testing.T, upstream http.Handler, maxBody int64) string {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	fwd, err := forward.New(forward.Options{Upstream: u, Transport: up.Client().Transport})
	if err != nil {
		t.Fatal(err)
	}
	reads := coalesce.New(coalesce.Options{Next: fwd, MaxBodyBytes: maxBody})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := forward.ParseToken(r.Header.Get("Authorization"))
		if err != nil {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		reads.ServeHTTP(w, r.WithContext(forward.WithToken(r.Context(), tok)))
	}))
	t.Cleanup(front.Close)
	return front.URL
}

// token is a JWT-shaped test token, unsigned; nothing verifies it.
const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln" //nolint:gosec // G101: a made-up test token

// getAll sends n identical GETs at once and returns their bodies and Set-Cookie headers.
func getAll(t *testing.T, base, path string, n int) (bodies, cookies []string) {
	t.Helper()
	bodies, cookies = make([]string, n), make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, base+path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			<-start
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			bodies[i], cookies[i] = string(b), resp.Header.Get("Set-Cookie")
		}()
	}
	close(start)
	wg.Wait()
	return bodies, cookies
}

func TestNotShared(t *testing.T) {
	var calls atomic.Int64
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		time.Sleep(200 * time.Millisecond)
		if r.URL.Query().Has("cookie") {
			w.Header().Set("Set-Cookie", "session="+strings.Repeat("c", int(n)))
		}
		if r.URL.Query().Has("big") {
			_, _ = w.Write([]byte(strings.Repeat("b", 4096)))
			return
		}
		_, _ = w.Write([]byte(`{"response":"small"}`))
	})
	base := start(t, upstream, 1024)
	const n = 10

	t.Run("small answers are shared", func(t *testing.T) {
		calls.Store(0)
		bodies, _ := getAll(t, base, "/api/1/vehicles/X/vehicle_data", n)
		for i, b := range bodies {
			if b != `{"response":"small"}` {
				t.Errorf("answer %d: %q", i, b)
			}
		}
		if c := calls.Load(); c > 2 {
			t.Errorf("%d upstream calls for %d identical GETs", c, n)
		}
	})
	t.Run("answers with Set-Cookie are not shared", func(t *testing.T) {
		calls.Store(0)
		_, cookies := getAll(t, base, "/api/1/vehicles/X/vehicle_data?cookie", n)
		seen := map[string]bool{}
		for i, c := range cookies {
			if c == "" || seen[c] {
				t.Errorf("answer %d: Set-Cookie %q (empty or another request's)", i, c)
			}
			seen[c] = true
		}
		if c := calls.Load(); c != n {
			t.Errorf("%d upstream calls, want %d: each request needs its own cookie", c, n)
		}
	})
	t.Run("answers over the bound stream and are not shared", func(t *testing.T) {
		calls.Store(0)
		bodies, _ := getAll(t, base, "/api/1/vehicles/X/vehicle_data?big", n)
		for i, b := range bodies {
			if len(b) != 4096 {
				t.Errorf("answer %d: %d bytes, want 4096", i, len(b))
			}
		}
		if c := calls.Load(); c != n {
			t.Errorf("%d upstream calls, want %d", c, n)
		}
	})
}
