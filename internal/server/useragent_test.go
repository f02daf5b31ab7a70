package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// TestUserAgentOfRequests checks the User-Agent that reaches the Fleet API: byte for byte the
// client's on pass-through (none when it sent none), and the client's followed by the proxy's
// product token on requests the proxy builds (Call, as signed commands, handshakes and telemetry
// configs use it; and what the command route forwards, as REST fallbacks and wake-ups do).
func TestUserAgentOfRequests(t *testing.T) {
	up := &recordingUpstream{}
	ts, pool := testenv.StartTLS(t, up)
	fixed, _ := url.Parse(ts.URL)
	// The command route stands in for the signer: "call" builds a request with Call, "rest"
	// forwards the REST form with another path, as the signer's fallbacks and wake-ups do.
	commands := func(f *forward.Forwarder) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			vin := strings.Split(r.URL.Path, "/")[4]
			if strings.HasSuffix(r.URL.Path, "/call") {
				reply, err := f.Call(r.Context(), http.MethodPost, "/api/1/vehicles/"+vin+"/signed_command", []byte(`{}`), nil)
				if err != nil {
					http.Error(w, "call failed", http.StatusBadGateway)
					return
				}
				reply.Write(w)
				return
			}
			out := r.Clone(r.Context())
			out.URL.Path, out.URL.RawPath = "/api/1/vehicles/"+vin+"/wake_up", ""
			f.ServeHTTP(w, out)
		})
	}
	env := startProxy(t, envOptions{fixed: fixed, pool: pool, commands: commands})
	token := testenv.Token(t, map[string]any{"sub": "u1"})
	product := forward.UserAgent("")
	if !strings.HasPrefix(product, "tesla-proxy/") || strings.ContainsAny(product, " \t") {
		t.Fatalf("product token %q is not tesla-proxy/VERSION", product)
	}

	for _, tc := range []struct {
		name     string
		method   string
		path     string
		clientUA *string // nil: the client sends no User-Agent
		want     *string // nil: none reaches the upstream
	}{
		{"pass-through keeps the client's", http.MethodGet, "/api/1/vehicles/" + testVIN + "/vehicle_data", ptr("my-app/1.0 (build 7;  two  spaces)"), ptr("my-app/1.0 (build 7;  two  spaces)")},
		{"pass-through adds none", http.MethodGet, "/api/1/vehicles/" + testVIN + "/vehicle_data", nil, nil},
		{"pass-through POST keeps the client's", http.MethodPost, "/api/1/vehicles/" + testVIN + "/wake_up", ptr("my-app/2"), ptr("my-app/2")},
		{"built by Call", http.MethodPost, "/api/1/vehicles/" + testVIN + "/command/call", ptr("my-app/1.0"), ptr("my-app/1.0 " + product)},
		{"built by Call, client sent none", http.MethodPost, "/api/1/vehicles/" + testVIN + "/command/call", nil, ptr(product)},
		{"forwarded by the command route", http.MethodPost, "/api/1/vehicles/" + testVIN + "/command/rest", ptr("my-app/1.0"), ptr("my-app/1.0 " + product)},
		{"forwarded by the command route, client sent none", http.MethodPost, "/api/1/vehicles/" + testVIN + "/command/rest", nil, ptr(product)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up.set(cannedReply{Status: http.StatusOK, Body: []byte(`{"response":{"result":true,"reason":""}}`)})
			req, err := http.NewRequestWithContext(t.Context(), tc.method, env.URL+tc.path, strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			if tc.clientUA != nil {
				req.Header.Set("User-Agent", *tc.clientUA)
			} else {
				req.Header["User-Agent"] = nil // Go's client then sends none
			}
			resp, _ := env.do(t, req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			seen, calls := up.got()
			if calls != 1 {
				t.Fatalf("upstream calls = %d, want 1", calls)
			}
			got, ok := seen.Header["User-Agent"]
			switch {
			case tc.want == nil && ok:
				t.Errorf("upstream User-Agent = %q, want none", got)
			case tc.want != nil && (len(got) != 1 || got[0] != *tc.want):
				t.Errorf("upstream User-Agent = %q, want %q", got, *tc.want)
			}
		})
	}

	// A request the proxy builds carries the token as "Bearer <token>", however the client
	// spelled the scheme, and whether the token was parsed now or remembered from before.
	for _, authorization := range []string{"Bearer " + token, "Bearer " + token, "bearer   " + token + "  ", "BEARER " + token} {
		up.set(cannedReply{Status: http.StatusOK, Body: []byte(`{"response":{"result":true,"reason":""}}`)})
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, env.URL+"/api/1/vehicles/"+testVIN+"/command/call", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", authorization)
		if resp, _ := env.do(t, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, want 200", resp.StatusCode)
		}
		seen, _ := up.got()
		if got := seen.Header.Get("Authorization"); got != "Bearer "+token {
			// Never print the token itself: say how the two differ.
			t.Errorf("client's scheme %q: the upstream's Authorization is %d bytes with prefix %q, want \"Bearer \" and the token (%d bytes)",
				strings.Fields(authorization)[0], len(got), strings.SplitN(got, " ", 2)[0], len("Bearer "+token))
		}
	}
}

func ptr(s string) *string { return &s }
