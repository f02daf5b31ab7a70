package forward

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/bounded"
)

// makeToken builds an unsigned JWT-shaped token with the given claims, its payload encoded with
// enc (JWTs use unpadded base64url; some tools write standard base64).
func makeToken(t testing.TB, claims map[string]any, enc *base64.Encoding) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	return header + "." + enc.EncodeToString(payload) + ".c2lnbmF0dXJl"
}

func TestParseTokenChoosesRegion(t *testing.T) {
	tests := []struct {
		name   string
		claims map[string]any
		enc    *base64.Encoding
		want   string
	}{
		{"no aud", map[string]any{"sub": "u1"}, base64.RawURLEncoding, HostNA},
		{"eu aud", map[string]any{"aud": []any{"https://fleet-api.prd.eu.vn.cloud.tesla.com"}}, base64.RawURLEncoding, HostEU},
		{"aud as a single string", map[string]any{"aud": "https://fleet-api.prd.eu.vn.cloud.tesla.com/"}, base64.RawURLEncoding, HostEU},
		{"ou_code picks among several", map[string]any{
			"aud":     []any{"https://fleet-api.prd.na.vn.cloud.tesla.com", "https://fleet-api.prd.eu.vn.cloud.tesla.com", "https://auth.tesla.com/oauth2/v3/nts"},
			"ou_code": "NA",
		}, base64.RawURLEncoding, HostNA},
		{"ou_code EU", map[string]any{
			"aud":     []any{"https://fleet-api.prd.na.vn.cloud.tesla.com", "https://fleet-api.prd.eu.vn.cloud.tesla.com"},
			"ou_code": "EU",
		}, base64.RawURLEncoding, HostEU},
		{"no ou_code: the last fleet host", map[string]any{
			"aud": []any{"https://fleet-api.prd.eu.vn.cloud.tesla.com", "https://fleet-api.prd.na.vn.cloud.tesla.com", "https://auth.tesla.com/"},
		}, base64.RawURLEncoding, HostNA},
		{"china", map[string]any{"aud": []any{"https://fleet-api.prd.cn.vn.cloud.tesla.cn"}, "ou_code": "CN"}, base64.RawURLEncoding, HostCN},
		{"standard base64 payload", map[string]any{"aud": []any{"https://fleet-api.prd.eu.vn.cloud.tesla.com"}}, base64.RawStdEncoding, HostEU},
		{"padded base64url payload", map[string]any{"aud": []any{"https://fleet-api.prd.eu.vn.cloud.tesla.com"}, "x": "?>?"}, base64.URLEncoding, HostEU},
		{"hostile aud is ignored", map[string]any{"aud": []any{"https://evil.example.com", "https://fleet-api.evil.com"}}, base64.RawURLEncoding, HostNA},
		{"look-alike suffix is ignored", map[string]any{"aud": []any{"https://fleet-api.tesla.com.evil.com", "https://fleet-api.prd.eu.vn.cloud.tesla.com.attacker.net"}}, base64.RawURLEncoding, HostNA},
		{"port, path and userinfo are ignored", map[string]any{"aud": []any{"https://fleet-api.prd.eu.vn.cloud.tesla.com:8443", "https://fleet-api.prd.eu.vn.cloud.tesla.com/x", "https://u@fleet-api.prd.eu.vn.cloud.tesla.com"}}, base64.RawURLEncoding, HostNA},
		{"auth host is not a fleet host", map[string]any{"aud": []any{"https://auth.tesla.com/oauth2/v3/nts"}}, base64.RawURLEncoding, HostNA},
		{"teslamotors.com accepted", map[string]any{"aud": []any{"fleet-api.prd.na.vn.cloud.teslamotors.com"}}, base64.RawURLEncoding, "fleet-api.prd.na.vn.cloud.teslamotors.com"},
		{"aud of wrong type", map[string]any{"aud": 42}, base64.RawURLEncoding, HostNA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseToken("Bearer " + makeToken(t, tc.claims, tc.enc))
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if tok.Host != tc.want {
				t.Errorf("host = %q, want %q", tok.Host, tc.want)
			}
		})
	}
}

func TestParseTokenRejects(t *testing.T) {
	good := makeToken(t, map[string]any{"sub": "x"}, base64.RawURLEncoding)
	tests := []struct {
		name, header, wantWord string
	}{
		{"missing", "", "missing_token"},
		{"basic auth", "Basic dXNlcjpwYXNz", "invalid_token"},
		{"bearer without token", "Bearer ", "invalid_token"},
		{"no scheme", good, "invalid_token"},
		{"two parts", "Bearer a.b", "invalid_token"},
		{"payload not base64", "Bearer a.!!!.c", "invalid_token"},
		{"payload not JSON", "Bearer a." + base64.RawURLEncoding.EncodeToString([]byte("hello")) + ".c", "invalid_token"},
		{"payload a JSON array", "Bearer a." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".c", "invalid_token"},
		{"too long", "Bearer " + strings.Repeat("a", maxTokenLen) + ".b.c", "invalid_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseToken(tc.header)
			e := apierr.From(err)
			if err == nil || e.Code != http.StatusUnauthorized || e.Word != tc.wantWord {
				t.Fatalf("ParseToken(%q) = %v, want 401 %s", tc.name, err, tc.wantWord)
			}
			if strings.Contains(e.Msg, "dXNlcjpwYXNz") || (tc.header != "" && strings.Contains(e.Msg, tc.header)) {
				t.Errorf("error text repeats the credential: %q", e.Msg)
			}
		})
	}
}

func TestParseTokenAcceptsLowercaseScheme(t *testing.T) {
	tok, err := ParseToken("bearer " + makeToken(t, map[string]any{"sub": "s", "ou_code": "EU", "aud": "https://" + HostEU}, base64.RawURLEncoding))
	if err != nil || tok.Host != HostEU {
		t.Fatalf("ParseToken: host %v, err %v", tok.Host, err)
	}
}

// TestTokenCacheHoldsNoTokenAndStaysBounded sends many distinct large tokens, as a flood would
// (issue 18), and checks the cache keeps only hashes and hosts, within its byte bound.
func TestTokenCacheHoldsNoTokenAndStaysBounded(t *testing.T) {
	pad := strings.Repeat("x", 11<<10) // ~15 KB once base64-encoded
	for i := range 3000 {
		tok, err := ParseToken("Bearer " + makeToken(t, map[string]any{"sub": i, "pad": pad, "ou_code": "EU", "aud": "https://" + HostEU}, base64.RawURLEncoding))
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		if len(tok.Raw) < 14<<10 {
			t.Fatalf("token %d is only %d bytes", i, len(tok.Raw))
		}
		if b := tokenCache.Bytes(); b > maxCachedTokenBytes {
			t.Fatalf("after %d tokens the cache holds %d bytes, bound %d", i+1, b, maxCachedTokenBytes)
		}
		host, ok := tokenCache.Get(tok.Hash)
		if !ok || host != HostEU {
			t.Fatalf("token %d: cached %q, %v; want its host", i, host, ok)
		}
	}
	// What is cached per token is its 32-byte hash and a host name: far less than the tokens.
	if b, n := tokenCache.Bytes(), tokenCache.Len(); b > int64(n)*(bounded.EntryOverhead+sha256.Size+253) || n > maxCachedTokens {
		t.Fatalf("cache holds %d entries in %d bytes: more than hashes and hosts", n, b)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("Bearer " + makeToken(f, map[string]any{"aud": []any{"https://fleet-api.prd.eu.vn.cloud.tesla.com"}, "ou_code": "EU", "sub": "s"}, base64.RawURLEncoding))
	f.Add("Bearer " + makeToken(f, map[string]any{"aud": "https://fleet-api.evil.com"}, base64.RawStdEncoding))
	f.Add("Bearer a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := ParseToken(header)
		if err != nil {
			if e := apierr.From(err); e.Code != http.StatusUnauthorized {
				t.Fatalf("error status %d, want 401", e.Code)
			}
			return
		}
		if _, ok := FleetHost(tok.Host); !ok {
			t.Fatalf("token chose host %q, which is not a Fleet API host", tok.Host)
		}
	})
}

func FuzzFleetHost(f *testing.F) {
	for _, s := range []string{HostNA, "https://" + HostEU + "/", "fleet-api.x.tesla.com.evil.com", "fleet-api.a..tesla.com", "FLEET-API.PRD.NA.VN.CLOUD.TESLA.COM"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, ok := FleetHost(s)
		if !ok {
			return
		}
		if !strings.HasPrefix(h, "fleet-api.") || !(strings.HasSuffix(h, ".tesla.com") || strings.HasSuffix(h, ".tesla.cn") || strings.HasSuffix(h, ".teslamotors.com")) {
			t.Fatalf("FleetHost(%q) accepted %q", s, h)
		}
		if strings.ContainsAny(h, "/:@?#% ") {
			t.Fatalf("FleetHost(%q) = %q contains URL syntax", s, h)
		}
	})
}
