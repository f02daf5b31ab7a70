package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/testenv"
)

var fleetNames = []string{forward.HostNA, forward.HostEU, forward.HostCN}

// regionUpstream plays every regional Fleet API host at once. It tells them apart by the Host
// header and TLS server name, and answers per host as the test scripts it.
type regionUpstream struct {
	mu     sync.Mutex
	byHost map[string]func(w http.ResponseWriter, r *http.Request)
	seen   []seenRequest
}

func (u *regionUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.seen = append(u.seen, seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, ServerName: r.TLS.ServerName, Body: body})
	h := u.byHost[r.Host]
	u.mu.Unlock()
	if h == nil {
		w.WriteHeader(200)
		fmt.Fprintf(w, `{"host":%q}`, r.Host) //nolint:gosec // G705: a test upstream echoing the Host it saw as JSON
		return
	}
	h(w, r)
}

func (u *regionUpstream) calls() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

func startRegionEnv(t *testing.T, byHost map[string]func(http.ResponseWriter, *http.Request)) (*proxyEnv, *regionUpstream, *testenv.DialRecorder) {
	t.Helper()
	up := &regionUpstream{byHost: byHost}
	ts, pool := testenv.StartTLS(t, up, fleetNames...)
	dial := &testenv.DialRecorder{Target: ts.Listener.Addr().String()}
	env := startProxy(t, envOptions{pool: pool, dial: dial})
	return env, up, dial
}

func TestRegionFromToken(t *testing.T) {
	env, up, dial := startRegionEnv(t, nil)
	tests := []struct {
		name   string
		claims map[string]any
		want   string
	}{
		{"EU token", map[string]any{"sub": "a", "aud": []any{"https://fleet-api.prd.eu.vn.cloud.tesla.com", "https://auth.tesla.com/oauth2/v3/nts"}, "ou_code": "EU"}, forward.HostEU},
		{"CN token", map[string]any{"sub": "b", "aud": []any{"https://fleet-api.prd.cn.vn.cloud.tesla.cn"}}, forward.HostCN},
		{"hostile aud falls back to NA", map[string]any{"sub": "c", "aud": []any{"https://127.0.0.1", "https://evil.example"}}, forward.HostNA},
		{"no aud", map[string]any{"sub": "d"}, forward.HostNA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.calls())
			resp, _ := doGet(t, env, t.Context(), "/api/1/vehicles", testenv.Token(t, tc.claims))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			calls := up.calls()[before:]
			if len(calls) != 1 || calls[0].Host != tc.want || calls[0].ServerName != tc.want {
				t.Fatalf("upstream saw %+v, want one call to %s (Host and SNI)", calls, tc.want)
			}
		})
	}
	for _, h := range dial.Hosts() {
		if !strings.HasSuffix(h, ".tesla.com") && !strings.HasSuffix(h, ".tesla.cn") {
			t.Errorf("the proxy dialed %q", h)
		}
	}
}

// TestHostileHostHeaderDoesNotMoveUpstream: neither the Host header nor an absolute-form target
// can change where the proxy sends a request.
func TestHostileHostHeaderDoesNotMoveUpstream(t *testing.T) {
	env, up, dial := startRegionEnv(t, nil)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", env.URL+"/api/1/vehicles", nil)
	req.Host = "evil.example.com"
	req.Header.Set("Authorization", "Bearer "+testenv.Token(t, map[string]any{"sub": "s"}))
	resp, err := env.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	calls := up.calls()
	if len(calls) != 1 || calls[0].Host != forward.HostNA {
		t.Fatalf("upstream calls %+v", calls)
	}
	if diff := cmp.Diff([]string{forward.HostNA}, dial.Hosts()); diff != "" {
		t.Errorf("dialed (-want +got):\n%s", diff)
	}
}

func misdirect(to string, altSvc bool) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if altSvc {
			w.Header().Set("Alt-Svc", "h2=https://"+to)
		}
		w.WriteHeader(http.StatusMisdirectedRequest)
		fmt.Fprintf(w, `{"response":null,"error":"user out of region, use base URL: https://%s, see https://developer.tesla.com/docs/fleet-api#regional-requirements","error_description":""}`, to)
	}
}

// Test421ResendsToTheNamedRegionOnce covers the whole 421 flow: the body is sent again to the
// host the Fleet API named, the host is remembered for the token (by hash), and the proxy never
// loops or follows a host outside Tesla's domains.
func Test421ResendsToTheNamedRegionOnce(t *testing.T) {
	body := `{"vins":["` + testVIN + `"]}`
	for _, altSvc := range []bool{false, true} {
		t.Run(fmt.Sprintf("altsvc=%v", altSvc), func(t *testing.T) {
			env, up, dial := startRegionEnv(t, map[string]func(http.ResponseWriter, *http.Request){
				forward.HostNA: misdirect(forward.HostEU, altSvc),
			})
			token := testenv.Token(t, map[string]any{"sub": "user-eu", "aud": []any{"https://fleet-api.prd.na.vn.cloud.tesla.com"}})
			post := func() (*http.Response, []byte) {
				req, _ := http.NewRequestWithContext(t.Context(), "POST", env.URL+"/api/1/vehicles/fleet_status", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				return env.do(t, req)
			}
			resp, got := post()
			if resp.StatusCode != 200 || !bytes.Contains(got, []byte(forward.HostEU)) {
				t.Fatalf("first request: %d %s", resp.StatusCode, got)
			}
			calls := up.calls()
			if len(calls) != 2 || calls[0].Host != forward.HostNA || calls[1].Host != forward.HostEU {
				t.Fatalf("upstream calls %+v, want NA then EU", calls)
			}
			if string(calls[1].Body) != body {
				t.Errorf("resent body %q, want %q", calls[1].Body, body)
			}
			// The token's region is remembered: the next request goes straight to EU.
			post()
			calls = up.calls()
			if len(calls) != 3 || calls[2].Host != forward.HostEU {
				t.Fatalf("after learning, calls %+v", calls)
			}
			for _, h := range dial.Hosts() {
				if h != forward.HostNA && h != forward.HostEU {
					t.Errorf("dialed %q", h)
				}
			}
		})
	}
}

func Test421NeverLoopsOrLeavesTesla(t *testing.T) {
	tests := []struct {
		name   string
		byHost map[string]func(http.ResponseWriter, *http.Request)
		calls  int
	}{
		{"bouncing between regions", map[string]func(http.ResponseWriter, *http.Request){
			forward.HostNA: misdirect(forward.HostEU, true),
			forward.HostEU: misdirect(forward.HostNA, true),
		}, 2},
		{"pointing at a non-Tesla host", map[string]func(http.ResponseWriter, *http.Request){
			forward.HostNA: misdirect("fleet-api.evil.example.com", true),
		}, 1},
		{"pointing at loopback", map[string]func(http.ResponseWriter, *http.Request){
			forward.HostNA: misdirect("127.0.0.1", false),
		}, 1},
		{"no hint at all", map[string]func(http.ResponseWriter, *http.Request){
			forward.HostNA: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(421) },
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, up, dial := startRegionEnv(t, tc.byHost)
			resp, body := doGet(t, env, t.Context(), "/api/1/vehicles", testenv.Token(t, map[string]any{"sub": "s"}))
			if resp.StatusCode != 421 {
				t.Errorf("status %d, want the 421 passed back", resp.StatusCode)
			}
			if n := len(up.calls()); n != tc.calls {
				t.Errorf("upstream calls = %d, want %d", n, tc.calls)
			}
			if bytes.Count(body, []byte(`"error"`)) > 1 {
				t.Errorf("body holds more than one answer: %s", body)
			}
			for _, h := range dial.Hosts() {
				if h != forward.HostNA && h != forward.HostEU {
					t.Errorf("dialed %q", h)
				}
			}
		})
	}
}

// TestForgedSubjectDoesNotMoveAnotherToken: hosts learned from a 421 belong to the token that drew
// it (by hash), not to its unverified "sub" (issue 18). A forged token that carries the victim's
// subject and is misdirected must not change where the victim's requests go.
func TestForgedSubjectDoesNotMoveAnotherToken(t *testing.T) {
	env, up, dial := startRegionEnv(t, map[string]func(http.ResponseWriter, *http.Request){
		forward.HostEU: misdirect(forward.HostCN, false),
	})
	victim := testenv.Token(t, map[string]any{"sub": "victim", "aud": []any{"https://" + forward.HostNA}})
	forged := testenv.Token(t, map[string]any{"sub": "victim", "aud": []any{"https://" + forward.HostEU}, "ou_code": "EU"})
	hosts := func(token string) []string {
		t.Helper()
		before := len(up.calls())
		resp, _ := doGet(t, env, t.Context(), "/api/1/vehicles", token)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		var out []string
		for _, c := range up.calls()[before:] {
			out = append(out, c.Host)
		}
		return out
	}
	if diff := cmp.Diff([]string{forward.HostNA}, hosts(victim)); diff != "" {
		t.Fatalf("victim before (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{forward.HostEU, forward.HostCN}, hosts(forged)); diff != "" {
		t.Fatalf("forged token's 421 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{forward.HostCN}, hosts(forged)); diff != "" {
		t.Fatalf("forged token did not keep the host it learned (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{forward.HostNA}, hosts(victim)); diff != "" {
		t.Fatalf("victim after the forged 421 (-want +got):\n%s", diff)
	}
	for _, h := range dial.Hosts() {
		if !strings.HasSuffix(h, ".tesla.com") && !strings.HasSuffix(h, ".tesla.cn") {
			t.Errorf("the proxy dialed %q", h)
		}
	}
}
