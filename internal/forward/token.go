package forward

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/bounded"
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
	// Raw is the token as sent. It must never be logged, and nothing that outlives the request
	// keeps it: caches key by Hash.
	Raw string
	// Hash is the SHA-256 of Raw: the key under which the proxy remembers anything about the
	// token (its parsed claims, hosts learned from 421 answers, the Fleet API's verdicts). Claims
	// are never keys: the proxy cannot verify them, so anyone can forge them.
	Hash TokenHash
	// Host is the Fleet API host chosen from the token's "aud" and "ou_code" claims, or
	// DefaultHost.
	Host string
	// header is "Bearer " followed by Raw, when the parse had it at hand (the client's own
	// header value): what each call the proxy makes with the token sends, without building a
	// copy of a 2 KB token for every one.
	header string
}

// authorization returns the Authorization value that carries the token: "Bearer " and Raw.
func (t *Token) authorization() string {
	if t.header != "" {
		return t.header
	}
	return bearerPrefix + t.Raw
}

const bearerPrefix = "Bearer "

// errNoToken and friends are the 401 answers for requests without a usable bearer token.
var (
	errNoToken = apierr.New(http.StatusUnauthorized, "missing_token",
		"This request needs an 'Authorization: Bearer <token>' header with a Fleet API access token.")
	errNotBearer = apierr.New(http.StatusUnauthorized, "invalid_token",
		"The Authorization header must have the form 'Bearer <token>'.")
	errNotJWT = apierr.New(http.StatusUnauthorized, "invalid_token",
		"The bearer token is not a Fleet API access token (a JWT of three base64url parts with a JSON payload); get a new one from Tesla's OAuth server.")
)

// TokenHash is the SHA-256 of a bearer token.
type TokenHash [sha256.Size]byte

// hashToken returns the SHA-256 of a bearer token. It feeds the hash through a buffer on the stack:
// sha256.Sum256([]byte(raw)) copied the whole token to the heap on every request (Fleet API tokens
// run to 2 KB), and took 2.7 times as long as this for tokens of 300 bytes and of 2 KB alike
// (go test -bench on this machine).
func hashToken(raw string) TokenHash {
	d := sha256.New()
	var buf [256]byte
	for len(raw) > 0 {
		n := copy(buf[:], raw)
		_, _ = d.Write(buf[:n])
		raw = raw[n:]
	}
	var h TokenHash
	d.Sum(h[:0])
	return h
}

// tokenCache remembers the host chosen for each token, by the token's hash: an app sends the same
// token with every request for as long as it lives, and decoding its JSON payload each time was a
// tenth of the pass-through cost. It holds no token, and its bounds and expiry keep a flood of
// distinct tokens from growing memory (issue 18: 10,000 tokens of 16 KiB once cost 224 MiB).
var tokenCache = bounded.New[TokenHash, string](maxCachedTokens, maxCachedTokenBytes, tokenCacheTTL,
	func(_ TokenHash, host string) int64 { return sha256.Size + int64(len(host)) })

// Bounds of tokenCache. An access token lives 8 hours; an app that keeps using one after an hour
// pays one more decode.
const (
	maxCachedTokens     = 10_000
	maxCachedTokenBytes = 4 << 20
	tokenCacheTTL       = time.Hour
)

// ParseToken reads the bearer token of an Authorization header value. Every error is an
// *apierr.Error with status 401 that says what is wrong.
func ParseToken(authorization string) (*Token, error) {
	if raw, ok := strings.CutPrefix(authorization, bearerPrefix); ok && len(raw) <= maxTokenLen {
		h := hashToken(raw)
		if host, ok := tokenCache.Get(h); ok {
			return &Token{Raw: raw, Hash: h, Host: host, header: authorization}, nil
		}
	}
	tok, err := parseToken(authorization)
	if err != nil {
		return nil, err
	}
	tokenCache.Add(tok.Hash, tok.Host)
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
		Aud    any `json:"aud"`
		OUCode any `json:"ou_code"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, errNotJWT
	}
	ou, _ := claims.OUCode.(string)
	header := bearerPrefix + raw
	return &Token{Raw: header[len(bearerPrefix):], Hash: hashToken(raw), Host: chooseHost(audiences(claims.Aud), ou), header: header}, nil
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
