package forward

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// Fleet API base hosts (fleet-api.md §6).
const (
	HostNA = "fleet-api.prd.na.vn.cloud.tesla.com"
	HostEU = "fleet-api.prd.eu.vn.cloud.tesla.com"
	HostCN = "fleet-api.prd.cn.vn.cloud.tesla.cn"
)

// DefaultHost is the Fleet API host used when a token names no usable region (the reference
// proxy's default too).
const DefaultHost = HostNA

// maxTokenLen bounds the bearer token we are willing to decode. Tesla's tokens are a few KiB.
const maxTokenLen = 16 << 10

// Token is what the proxy reads from a caller's bearer token. The token is never verified here
// (the Fleet API does that); the claims only choose a region.
type Token struct {
	// Raw is the token as sent. It must never be logged.
	Raw string
	// Subject is the "sub" claim, the key under which hosts learned from 421 answers are kept.
	// Empty if the token has none.
	Subject string
	// Host is the Fleet API host chosen from the token's "aud" and "ou_code" claims, or
	// DefaultHost.
	Host string
}

// errNoToken and friends are the 401 answers for requests without a usable bearer token.
var (
	errNoToken = apierr.New(http.StatusUnauthorized, "missing_token",
		"This request needs an 'Authorization: Bearer <token>' header with a Fleet API access token.")
	errNotBearer = apierr.New(http.StatusUnauthorized, "invalid_token",
		"The Authorization header must have the form 'Bearer <token>'.")
	errNotJWT = apierr.New(http.StatusUnauthorized, "invalid_token",
		"The bearer token is not a Fleet API access token (a JWT of three base64url parts with a JSON payload); get a new one from Tesla's OAuth server.")
)

// tokenCache remembers parsed tokens: an app sends the same token with every request for as long
// as it lives, and decoding its JSON payload each time was a tenth of the pass-through cost.
var tokenCache struct {
	m sync.Map // raw token → *Token (never modified once stored)
	n atomic.Int64
}

// maxCachedTokens bounds tokenCache; when it is full it starts over.
const maxCachedTokens = 10_000

// ParseToken reads the bearer token of an Authorization header value. Every error is an
// *apierr.Error with status 401 that says what is wrong. The *Token returned may be shared with
// other requests that sent the same token: it must not be modified.
func ParseToken(authorization string) (*Token, error) {
	if raw, ok := strings.CutPrefix(authorization, "Bearer "); ok {
		if t, ok := tokenCache.m.Load(raw); ok {
			return t.(*Token), nil
		}
	}
	tok, err := parseToken(authorization)
	if err != nil {
		return nil, err
	}
	if tokenCache.n.Add(1) > maxCachedTokens {
		tokenCache.m.Clear()
		tokenCache.n.Store(1)
	}
	tokenCache.m.Store(tok.Raw, tok)
	return tok, nil
}

func parseToken(authorization string) (*Token, error) {
	if authorization == "" {
		return nil, errNoToken
	}
	scheme, raw, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, errNotBearer
	}
	raw = strings.TrimSpace(raw)
	if raw == "" || len(raw) > maxTokenLen {
		return nil, errNotJWT
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return nil, errNotJWT
	}
	payload, ok := decodeSegment(parts[1])
	if !ok {
		return nil, errNotJWT
	}
	var claims struct {
		Subject any `json:"sub"`
		Aud     any `json:"aud"`
		OUCode  any `json:"ou_code"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, errNotJWT
	}
	sub, _ := claims.Subject.(string)
	ou, _ := claims.OUCode.(string)
	return &Token{Raw: raw, Subject: sub, Host: chooseHost(audiences(claims.Aud), ou)}, nil
}

// decodeSegment decodes a JWT segment. JWTs use unpadded base64url (RFC 7515), but the reference
// proxy decoded standard base64; accept both, padded or not, so no valid token is refused.
func decodeSegment(s string) ([]byte, bool) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}

// audiences returns the "aud" claim as a list: JWT allows a string or an array of strings.
func audiences(v any) []string {
	switch a := v.(type) {
	case string:
		return []string{a}
	case []any:
		out := make([]string, 0, len(a))
		for _, x := range a {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// chooseHost picks the Fleet API host from a token's audiences: the one that names the token's
// region (ou_code) if any, else the last Fleet API host listed, else DefaultHost. Anything that is
// not a fleet-api host under a Tesla domain is ignored, so a token cannot send traffic elsewhere.
func chooseHost(auds []string, ouCode string) string {
	region := ""
	if ouCode != "" {
		region = "." + strings.ToLower(ouCode) + "."
	}
	last := ""
	for _, a := range auds {
		h, ok := FleetHost(a)
		if !ok {
			continue
		}
		if region != "" && strings.Contains(h, region) {
			return h
		}
		last = h
	}
	if last != "" {
		return last
	}
	return DefaultHost
}

// teslaSuffixes are the only domains the proxy will send a caller's token to (fleet-api.md §5, the
// same rule the reference applies to 421 hints).
var teslaSuffixes = []string{".tesla.com", ".tesla.cn", ".teslamotors.com"}

// FleetHost reports whether s names a Fleet API host, given as a bare host or as an https URL
// with nothing after the host but an optional slash, and returns the host in lower case. Only
// hosts that start with "fleet-api." and end in a Tesla domain qualify; a port other than 443, user
// information, a path or any character outside [a-z0-9.-] disqualifies.
func FleetHost(s string) (string, bool) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, "https://")
	h = strings.TrimSuffix(h, "/")
	h = strings.TrimSuffix(h, ":443")
	if len(h) > 253 || !strings.HasPrefix(h, "fleet-api.") {
		return "", false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return "", false
		}
	}
	if strings.Contains(h, "..") {
		return "", false
	}
	for _, suf := range teslaSuffixes {
		if strings.HasSuffix(h, suf) {
			return h, true
		}
	}
	return "", false
}
