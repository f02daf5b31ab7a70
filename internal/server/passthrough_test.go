package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// recordingUpstream remembers the last request it got, byte for byte, and answers with whatever
// the test set in reply.
type recordingUpstream struct {
	mu    sync.Mutex
	last  *seenRequest
	calls int
	reply cannedReply
}

type seenRequest struct {
	Method     string
	RequestURI string
	Host       string
	ServerName string
	Header     http.Header
	Body       []byte
}

type cannedReply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.last = &seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: body}
	if r.TLS != nil {
		u.last.ServerName = r.TLS.ServerName
	}
	u.calls++
	reply := u.reply
	u.mu.Unlock()
	for k, vs := range reply.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(reply.Status)
	_, _ = w.Write(reply.Body)
}

func (u *recordingUpstream) set(r cannedReply) {
	u.mu.Lock()
	u.reply, u.last, u.calls = r, nil, 0
	u.mu.Unlock()
}

func (u *recordingUpstream) got() (*seenRequest, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last, u.calls
}

const testVIN = "5YJ30123456789ABC"

// TestPassThroughIsByteExact sends every unsigned Fleet API route the issue lists through the
// proxy, over TLS both ways, and checks that what arrives upstream and what comes back are exactly
// what was sent.
func TestPassThroughIsByteExact(t *testing.T) {
	up := &recordingUpstream{}
	upstream, pool := testenv.StartTLS(t, up)
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool})
	token := testenv.Token(t, map[string]any{"sub": "user-1", "aud": []any{"https://fleet-api.prd.na.vn.cloud.tesla.com"}})

	routes := []struct {
		name, method, target string
		body                 string
	}{
		{"drivers GET", "GET", "/api/1/vehicles/" + testVIN + "/drivers", ""},
		{"drivers DELETE", "DELETE", "/api/1/vehicles/" + testVIN + "/drivers?share_user_id=123", ""},
		{"subscriptions eligibility", "GET", "/api/1/dx/vehicles/subscriptions/eligibility?vin=" + testVIN, ""},
		{"upgrades eligibility", "GET", "/api/1/dx/vehicles/upgrades/eligibility?vin=" + testVIN, ""},
		{"fleet_status", "POST", "/api/1/vehicles/fleet_status", `{"vins":["` + testVIN + `"]}`},
		{"telemetry config GET", "GET", "/api/1/vehicles/" + testVIN + "/fleet_telemetry_config", ""},
		{"telemetry config DELETE", "DELETE", "/api/1/vehicles/" + testVIN + "/fleet_telemetry_config", ""},
		{"telemetry errors", "GET", "/api/1/vehicles/" + testVIN + "/fleet_telemetry_errors", ""},
		{"vehicle list with paging", "GET", "/api/1/vehicles?page=2&per_page=25", ""},
		{"mobile_enabled", "GET", "/api/1/vehicles/" + testVIN + "/mobile_enabled", ""},
		{"nearby_charging_sites", "GET", "/api/1/vehicles/" + testVIN + "/nearby_charging_sites?count=5&radius=20&detail=true", ""},
		{"service_data", "GET", "/api/1/vehicles/" + testVIN + "/service_data", ""},
		{"invitations GET", "GET", "/api/1/vehicles/" + testVIN + "/invitations", ""},
		{"invitations POST", "POST", "/api/1/vehicles/" + testVIN + "/invitations", ""},
		{"invitation redeem", "POST", "/api/1/invitations/redeem", `{"invitation_code":"aBcD-123_=="}`},
		{"invitation revoke", "POST", "/api/1/vehicles/" + testVIN + "/invitations/42/revoke", ""},
		{"vehicle_data with semicolons", "GET", "/api/1/vehicles/" + testVIN + "/vehicle_data?endpoints=location_data;charge_state", ""},
		{"wake_up", "POST", "/api/1/vehicles/" + testVIN + "/wake_up", ""},
		{"already-signed signed_command", "POST", "/api/1/vehicles/" + testVIN + "/signed_command", `{"routable_message":"Egh0ZXN0aW5nIQ=="}`},
		{"escaped path and odd query", "GET", "/api/1/vehicles/a%2Fb%20c/vehicle_data?x=%41%2f&y=&z", ""},
		{"binary body", "PUT", "/api/1/partner_accounts", "\x00\x01\xff\xfe{\"not\":json"},
	}
	replies := []cannedReply{
		{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "X-Txid": {"abc"}}, Body: []byte(`{"response":{"result":true}}` + "\n")},
		{Status: 429, Header: http.Header{"Retry-After": {"17"}, "Ratelimit-Limit": {"60"}, "Ratelimit-Remaining": {"0"}, "Ratelimit-Reset": {"17"}, "Content-Type": {"application/json"}}, Body: []byte(`{"response":null,"error":"rate limited"}`)},
		{Status: 408, Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}, Body: []byte(`{"response":null,"error":"vehicle unavailable: vehicle is offline or asleep","error_description":""}`)},
		{Status: 540, Header: http.Header{"X-Odd": {"a", "b"}}, Body: []byte("\x00\xffbinary")},
	}
	for i, rt := range routes {
		reply := replies[i%len(replies)]
		t.Run(rt.name, func(t *testing.T) {
			up.set(reply)
			var body io.Reader
			if rt.body != "" {
				body = strings.NewReader(rt.body)
			}
			req, err := http.NewRequestWithContext(t.Context(), rt.method, env.URL+rt.target, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-App-Trace", "trace-1")
			req.Header.Add("X-Multi", "one")
			req.Header.Add("X-Multi", "two")
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			req.Header.Set("User-Agent", "my-app/1.0")
			resp, err := env.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()

			seen, calls := up.got()
			if calls != 1 || seen == nil {
				t.Fatalf("upstream calls = %d, want 1", calls)
			}
			if seen.Method != rt.method || seen.RequestURI != rt.target {
				t.Errorf("upstream got %s %s, want %s %s", seen.Method, seen.RequestURI, rt.method, rt.target)
			}
			if seen.Host != fixed.Host {
				t.Errorf("upstream Host = %q, want %q", seen.Host, fixed.Host)
			}
			if !bytes.Equal(seen.Body, []byte(rt.body)) {
				t.Errorf("upstream body = %q, want %q", seen.Body, rt.body)
			}
			for _, h := range []string{"Authorization", "Content-Type", "X-App-Trace", "User-Agent"} {
				if seen.Header.Get(h) != req.Header.Get(h) {
					t.Errorf("upstream header %s = %q, want %q", h, seen.Header.Get(h), req.Header.Get(h))
				}
			}
			if diff := cmp.Diff([]string{"one", "two"}, seen.Header.Values("X-Multi")); diff != "" {
				t.Errorf("X-Multi (-want +got):\n%s", diff)
			}
			if ae, ok := seen.Header["Accept-Encoding"]; ok {
				t.Errorf("upstream got Accept-Encoding %q the client never sent", ae)
			}
			if xff := seen.Header.Get("X-Forwarded-For"); xff != "203.0.113.9, 127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q, want the client's value with 127.0.0.1 appended", xff)
			}

			if resp.StatusCode != reply.Status {
				t.Errorf("status = %d, want %d", resp.StatusCode, reply.Status)
			}
			if !bytes.Equal(got, reply.Body) {
				t.Errorf("body = %q, want %q", got, reply.Body)
			}
			for k, vs := range reply.Header {
				if diff := cmp.Diff(vs, resp.Header.Values(k)); diff != "" {
					t.Errorf("response header %s (-want +got):\n%s", k, diff)
				}
			}
		})
	}
}

// TestPassThroughDropsHopByHopHeaders checks that connection-scoped headers do not cross the
// proxy in either direction.
func TestPassThroughDropsHopByHopHeaders(t *testing.T) {
	up := &recordingUpstream{}
	up.set(cannedReply{Status: 200, Header: http.Header{"Keep-Alive": {"timeout=5"}, "X-Kept": {"1"}}, Body: []byte("{}")})
	upstream, pool := testenv.StartTLS(t, up)
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool})
	req, _ := http.NewRequestWithContext(t.Context(), "GET", env.URL+"/api/1/vehicles", nil)
	req.Header.Set("Authorization", "Bearer "+testenv.Token(t, map[string]any{"sub": "s"}))
	req.Header.Set("Connection", "X-Secret-Hop")
	req.Header.Set("X-Secret-Hop", "must not pass")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Keep-Alive", "timeout=5")
	// HTTP/2 forbids connection-specific headers outright; send them over HTTP/1.1.
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: env.Client.Transport.(*http.Transport).TLSClientConfig.Clone(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	defer h1.CloseIdleConnections()
	resp, err := h1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	seen, _ := up.got()
	for _, h := range []string{"X-Secret-Hop", "Proxy-Authorization", "Keep-Alive"} {
		if v := seen.Header.Get(h); v != "" {
			t.Errorf("hop-by-hop header %s reached upstream: %q", h, v)
		}
	}
	if resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Kept") != "1" {
		t.Errorf("response headers = %v", resp.Header)
	}
}

// TestTokenRequired checks the 401 answers, and that nothing goes upstream without a token.
func TestTokenRequired(t *testing.T) {
	up := &recordingUpstream{}
	upstream, pool := testenv.StartTLS(t, up)
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool})
	for _, tc := range []struct{ name, auth, word string }{
		{"missing", "", "missing_token"},
		{"not bearer", "Basic dXNlcjpwYXNz", "invalid_token"},
		{"not a JWT", "Bearer opaque-token", "invalid_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up.set(cannedReply{Status: 200})
			req, _ := http.NewRequestWithContext(t.Context(), "GET", env.URL+"/api/1/vehicles", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, body := env.do(t, req)
			// decodeErr checks that the body is JSON with a description and no response.
			if word, _ := decodeErr(t, body); resp.StatusCode != 401 || word != tc.word {
				t.Errorf("got %d %s, want 401 %s with a description", resp.StatusCode, body, tc.word)
			}
			if _, calls := up.got(); calls != 0 {
				t.Errorf("upstream called %d times without a usable token", calls)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	env := startProxy(t, envOptions{fixed: &url.URL{Scheme: "https", Host: "127.0.0.1:1"}})
	req, _ := http.NewRequestWithContext(t.Context(), "GET", env.URL+"/health", nil)
	resp, b := env.do(t, req)
	if resp.StatusCode != 200 || string(b) != "OK" {
		t.Fatalf("GET /health = %d %q", resp.StatusCode, b)
	}
}

func doGet(t *testing.T, env *proxyEnv, ctx context.Context, path, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return env.do(t, req)
}
