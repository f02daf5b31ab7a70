package jws

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"

	"github.com/golang-jwt/jwt/v5"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
)

// Alg is the JWS "alg" header value of Tesla's Schnorr/P-256/SHA-256 signatures.
const Alg = "Tesla.SS256"

// TelemetryAudience is the "aud" claim of a fleet-wide telemetry configuration: the prefix
// "com.tesla.fleet." followed by the application name "TelemetryClient" (vehicle-command
// pkg/proxy signs configs for this audience).
const TelemetryAudience = "com.tesla.fleet.TelemetryClient"

// SignatureSize is the length in bytes of a decoded Tesla.SS256 signature: the public nonce's
// X and Y coordinates and the scalar r, 32 big-endian bytes each.
const SignatureSize = 3 * scalarSize

// Errors returned by Sign and Verify. They are wrapped with details; match them with errors.Is.
var (
	// ErrMalformedToken reports a token that is not three base64url segments holding a JSON
	// object header and a JSON object payload.
	ErrMalformedToken = errors.New("jws: malformed token")
	// ErrUnsupportedAlg reports a header whose "alg" is not Alg.
	ErrUnsupportedAlg = errors.New("jws: unsupported signature algorithm")
	// ErrInvalidIssuer reports an "iss" claim that is missing or is not the standard base64 of an
	// uncompressed P-256 public key.
	ErrInvalidIssuer = errors.New("jws: invalid issuer")
	// ErrIssuerMismatch reports a token whose "iss" names a key other than the one it was checked
	// against.
	ErrIssuerMismatch = errors.New("jws: issuer does not match the verification key")
	// ErrInvalidSignature reports a signature that is not 96 bytes or does not verify.
	ErrInvalidSignature = errors.New("jws: invalid signature")
	// ErrInvalidKey reports a missing key or a key that is not on P-256.
	ErrInvalidKey = errors.New("jws: invalid key")
	// ErrEmptyAudience reports a call to Sign with an empty audience.
	ErrEmptyAudience = errors.New("jws: empty audience")
)

// segment is the encoding of each of the token's three parts: base64url without padding
// (RFC 7515 §2). Strict decoding refuses non-zero padding bits, so each token has exactly one
// spelling.
var segment = base64.RawURLEncoding.Strict()

// SigningMethod is golang-jwt v5's jwt.SigningMethod for Tesla.SS256.
//
// Sign takes a protocol.ECDHPrivateKey and delegates to its SchnorrSignature method, so the
// private key never leaves vehicle-command's key type. Verify takes a *ecdh.PublicKey on P-256
// and runs this package's own verifier. The zero value is ready to use; [Method] is the instance
// this package uses.
type SigningMethod struct{}

// Method is the SigningMethod instance that Sign uses and Register installs.
var Method = &SigningMethod{}

// Register installs Method in golang-jwt's global table under Alg, replacing the entry
// vehicle-command adds when it is imported. Call it once from run; it is not called from init
// because which init runs last is not something code should depend on. Nothing in this package
// needs it: Sign and Verify never consult that table.
func Register() {
	jwt.RegisterSigningMethod(Alg, func() jwt.SigningMethod { return Method })
}

// Alg returns Alg.
func (*SigningMethod) Alg() string { return Alg }

// schnorrMu serializes calls into vehicle-command's Schnorr signer (see Sign).
var schnorrMu sync.Mutex

// Sign signs signingString with key, which must be a protocol.ECDHPrivateKey. The signature is
// deterministic (RFC 6979 nonce), 96 bytes long.
func (*SigningMethod) Sign(signingString string, key any) ([]byte, error) {
	k, ok := key.(protocol.ECDHPrivateKey)
	if !ok || k == nil {
		return nil, fmt.Errorf("%w: signing needs a protocol.ECDHPrivateKey, not %T", jwt.ErrInvalidKeyType, key)
	}
	// vehicle-command v0.4.1's Schnorr code shares a package-level big number that its math
	// library writes to while comparing, so two signatures at once are a data race (found by the
	// load test under -race). Signing takes well under a millisecond: take turns.
	schnorrMu.Lock()
	sig, err := k.SchnorrSignature([]byte(signingString))
	schnorrMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("jws: schnorr signature: %w", err)
	}
	if len(sig) != SignatureSize {
		// A key implementation outside vehicle-command could get this wrong; a short signature
		// would be refused by every vehicle, so fail here rather than upstream.
		return nil, fmt.Errorf("%w: signer returned %d bytes, want %d", ErrInvalidSignature, len(sig), SignatureSize)
	}
	return sig, nil
}

// Verify reports (as a nil error) whether sig is a valid signature of signingString under key,
// which must be a *ecdh.PublicKey on P-256.
func (*SigningMethod) Verify(signingString string, sig []byte, key any) error {
	pub, ok := key.(*ecdh.PublicKey)
	if !ok || pub == nil {
		return fmt.Errorf("%w: verification needs a *ecdh.PublicKey, not %T", jwt.ErrInvalidKeyType, key)
	}
	return verifySchnorr(pub, []byte(signingString), sig)
}

// Issuer returns the "iss" claim that names pub: the standard, padded base64 of its 65-byte
// uncompressed encoding.
func Issuer(pub *ecdh.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub.Bytes())
}

// PublicKeyFromIssuer decodes an "iss" claim into the P-256 public key it names. It accepts only
// what Issuer produces: standard padded base64 of a 65-byte uncompressed point on the curve.
func PublicKeyFromIssuer(iss string) (*ecdh.PublicKey, error) {
	raw, err := base64.StdEncoding.Strict().DecodeString(iss)
	if err != nil {
		return nil, fmt.Errorf("%w: not standard base64: %w", ErrInvalidIssuer, err)
	}
	pub, err := ecdh.P256().NewPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not an uncompressed P-256 public key (%d bytes): %w", ErrInvalidIssuer, len(raw), err)
	}
	return pub, nil
}

// Sign returns a compact JWS of claims signed by key, with "iss" set to key's public key (see
// Issuer) and "aud" set to audience, overwriting any values claims had for them. claims itself
// is not modified.
//
// Claims are encoded by encoding/json with map keys sorted, exactly as golang-jwt and
// vehicle-command encode them; json.Number values are written as they are, so numbers decoded
// with UseNumber keep every digit.
func Sign(key protocol.ECDHPrivateKey, claims map[string]any, audience string) (string, error) {
	if key == nil {
		return "", fmt.Errorf("%w: no private key", ErrInvalidKey)
	}
	if audience == "" {
		return "", ErrEmptyAudience
	}
	mc := make(jwt.MapClaims, len(claims)+2)
	maps.Copy(mc, claims)
	mc["iss"] = base64.StdEncoding.EncodeToString(key.PublicBytes())
	mc["aud"] = audience
	token, err := jwt.NewWithClaims(Method, mc).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("jws: sign: %w", err)
	}
	return token, nil
}

// SignTelemetryConfig signs config for TelemetryAudience, as the Fleet API's
// fleet_telemetry_config_jws endpoint expects. overwritten lists, in sorted order, which of "aud"
// and "iss" config had set: Sign replaces them, and the caller may want to warn about it.
//
// It does not check config; call CheckTelemetryConfig (or ParseTelemetryRequest) first.
func SignTelemetryConfig(key protocol.ECDHPrivateKey, config map[string]any) (token string, overwritten []string, err error) {
	for _, k := range []string{"aud", "iss"} {
		if _, ok := config[k]; ok {
			overwritten = append(overwritten, k)
		}
	}
	token, err = Sign(key, config, TelemetryAudience)
	if err != nil {
		return "", nil, err
	}
	return token, overwritten, nil
}

// Verify checks a compact JWS and returns its claims, with numbers as json.Number so that none
// loses precision.
//
// The header's "alg" must be Alg, a "crit" header is refused (we understand no extensions,
// RFC 7515 §4.1.11), and the signature must be exactly 96 bytes and verify.
//
// With pub set, the signature is checked against pub and "iss" must name pub. With pub nil, the
// key is taken from "iss" itself: that proves only that the token is intact, not who made it,
// since anyone can sign with their own key and name it in "iss". The caller decides whether the
// issuer is trusted.
//
// Verify does not look at "exp", "nbf", "aud" or any other claim's meaning; a telemetry config's
// "exp" is the config's own expiry, which is for the vehicle to enforce. Verify also never
// consults golang-jwt's table of signing methods.
func Verify(token string, pub *ecdh.PublicKey) (map[string]any, error) {
	if pub != nil && pub.Curve() != ecdh.P256() {
		return nil, fmt.Errorf("%w: verification key is not on P-256", ErrInvalidKey)
	}
	headerB64, rest, ok1 := strings.Cut(token, ".")
	payloadB64, sigB64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sigB64, ".") {
		return nil, fmt.Errorf("%w: want three dot-separated segments", ErrMalformedToken)
	}

	header, err := decodeSegment(headerB64, "header")
	if err != nil {
		return nil, err
	}
	if alg, _ := header["alg"].(string); alg != Alg {
		return nil, fmt.Errorf("%w: alg %s, want %q", ErrUnsupportedAlg, describe(header["alg"]), Alg)
	}
	if _, ok := header["crit"]; ok {
		return nil, fmt.Errorf("%w: header has a crit parameter, which is not supported", ErrMalformedToken)
	}

	claims, err := decodeSegment(payloadB64, "payload")
	if err != nil {
		return nil, err
	}

	sig, err := segment.DecodeString(sigB64)
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64url: %w", ErrMalformedToken, err)
	}

	iss, ok := claims["iss"].(string)
	if !ok {
		return nil, fmt.Errorf("%w: iss is %s, want a string", ErrInvalidIssuer, describe(claims["iss"]))
	}
	key := pub
	if key == nil {
		if key, err = PublicKeyFromIssuer(iss); err != nil {
			return nil, err
		}
	} else if iss != Issuer(pub) {
		// The vehicle checks the signature against the key named in iss, so a token whose iss
		// names another key would be refused there even though it verifies here.
		return nil, ErrIssuerMismatch
	}

	if err := verifySchnorr(key, []byte(token[:len(headerB64)+1+len(payloadB64)]), sig); err != nil {
		return nil, err
	}
	return claims, nil
}

// decodeSegment decodes the token's header or payload segment, which what names in errors, into
// its JSON object.
func decodeSegment(seg, what string) (map[string]any, error) {
	b, err := segment.DecodeString(seg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not base64url: %w", ErrMalformedToken, what, err)
	}
	m, err := decodeObject(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformedToken, what, err)
	}
	return m, nil
}

// decodeObject decodes exactly one JSON object, keeping numbers as json.Number.
func decodeObject(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want a JSON object, got %s", describe(v))
	}
	return m, nil
}

// Interface guard.
var _ jwt.SigningMethod = (*SigningMethod)(nil)
