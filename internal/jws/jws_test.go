package jws

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"github.com/teslamotors/vehicle-command/pkg/sign"
)

// update rewrites testdata/golden.jws from vehicle-command's signer (not ours), so the golden file
// stays an independent reference. See testdata/README.md.
var update = flag.Bool("update", false, "rewrite testdata/golden.jws from vehicle-command's pkg/sign")

// testNow is the clock of every check in these tests: before the golden vector's exp
// (2026-01-01), so that the published vector stays a valid config.
var testNow = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

// goldenKey loads the test client private key published in vehicle-command's protocol.md.
func goldenKey(tb testing.TB) protocol.ECDHPrivateKey {
	tb.Helper()
	key, err := protocol.LoadPrivateKey(filepath.Join("testdata", "client.key"))
	if err != nil {
		tb.Fatalf("LoadPrivateKey: %v", err)
	}
	return key
}

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// decodeJSON decodes one JSON object keeping numbers exact, as the proxy does.
func decodeJSON(tb testing.TB, b []byte) map[string]any {
	tb.Helper()
	m, err := decodeObject(b)
	if err != nil {
		tb.Fatalf("decode %q: %v", b, err)
	}
	return m
}

// randomKey returns a fresh P-256 key as vehicle-command's key type, and its public half.
func randomKey(tb testing.TB) (protocol.ECDHPrivateKey, *ecdh.PublicKey) {
	tb.Helper()
	sk, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	key := protocol.UnmarshalECDHPrivateKey(sk.Bytes())
	if key == nil {
		tb.Fatal("UnmarshalECDHPrivateKey refused a generated scalar")
	}
	return key, sk.PublicKey()
}

// randomConfig builds a telemetry config that passes CheckTelemetryConfig, with a random mix of
// optional keys, unknown keys and awkward numbers and strings.
func randomConfig(r *mrand.Rand) map[string]any {
	fields := map[string]any{}
	for i := range 1 + r.IntN(5) {
		f := map[string]any{"interval_seconds": json.Number(fmt.Sprint(1 + r.IntN(3600)))}
		if r.IntN(2) == 0 {
			f["minimum_delta"] = json.Number([]string{"0.5", "1", "1e-3", "12345678901234567890.125"}[r.IntN(4)])
		}
		if r.IntN(2) == 0 {
			f["resend_interval_seconds"] = json.Number(fmt.Sprint(1 + r.IntN(86400)))
		}
		fields[fmt.Sprintf("Signal%d_%d", i, r.IntN(1000))] = f
	}
	c := map[string]any{
		"hostname": fmt.Sprintf("t%d.example.com", r.IntN(100)),
		"fields":   fields,
	}
	if r.IntN(2) == 0 {
		c["port"] = json.Number(fmt.Sprint(1 + r.IntN(65535)))
	}
	if r.IntN(2) == 0 {
		c["exp"] = json.Number(fmt.Sprint(testNow.Unix() + 1 + r.Int64N(1<<40)))
	}
	if r.IntN(2) == 0 {
		c["alert_types"] = []any{"service", "customer"}[:r.IntN(3)]
	}
	if r.IntN(2) == 0 {
		c["prefer_typed"] = r.IntN(2) == 0
	}
	if r.IntN(2) == 0 {
		c["delivery_policy"] = "latest"
	}
	if r.IntN(2) == 0 {
		// Unknown keys pass through, including ones json.Marshal escapes and huge integers.
		c["x_note"] = "<tags> & \"quotes\" \u00e9 \u2028"
		c["x_big"] = json.Number("123456789012345678901234567890")
	}
	return c
}

func TestGenerator(t *testing.T) {
	one := make([]byte, 32)
	one[31] = 1
	k, err := ecdh.P256().NewPrivateKey(one)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k.PublicKey().Bytes(), generator[:]); diff != "" {
		t.Errorf("generator is not 1·G (-want +got):\n%s", diff)
	}
}

// TestGolden reproduces the vector of fleet-api.md §2 byte for byte: same key, same claims, same
// payload, same token.
func TestGolden(t *testing.T) {
	key := goldenKey(t)
	claims := decodeJSON(t, readTestdata(t, "golden_claims.json"))

	if *update {
		theirs, err := sign.SignMessageForFleet(key, "TelemetryClient", jwt.MapClaims(decodeJSON(t, readTestdata(t, "golden_claims.json"))))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "golden.jws"), []byte(theirs+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := strings.TrimSpace(string(readTestdata(t, "golden.jws")))

	got, overwritten, err := SignTelemetryConfig(key, claims)
	if err != nil {
		t.Fatalf("SignTelemetryConfig: %v", err)
	}
	if len(overwritten) != 0 {
		t.Errorf("overwritten = %q, want none", overwritten)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("token differs from testdata/golden.jws (-want +got):\n%s", diff)
	}

	_, payloadB64, _ := strings.Cut(got, ".")
	payloadB64, _, _ = strings.Cut(payloadB64, ".")
	payload, err := base64.RawURLEncoding.DecodeString(payloadB64)
	if err != nil {
		t.Fatal(err)
	}
	wantPayload := strings.TrimSpace(string(readTestdata(t, "golden_payload.json")))
	if diff := cmp.Diff(wantPayload, string(payload)); diff != "" {
		t.Errorf("payload differs from testdata/golden_payload.json (-want +got):\n%s", diff)
	}

	pub, err := protocol.LoadPublicKey(filepath.Join("testdata", "client.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pub  *ecdh.PublicKey
	}{{"key from iss", nil}, {"given key", pub}} {
		t.Run(tc.name, func(t *testing.T) {
			gotClaims, err := Verify(want, tc.pub)
			if err != nil {
				t.Fatalf("Verify(golden): %v", err)
			}
			wantClaims := decodeJSON(t, []byte(wantPayload))
			if diff := cmp.Diff(wantClaims, gotClaims); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	r := mrand.New(mrand.NewPCG(seed, 0x7e51a))
	for i := range 40 {
		key, pub := randomKey(t)
		config := randomConfig(r)
		if err := CheckTelemetryConfig(config, testNow); err != nil {
			t.Fatalf("seed %d, case %d: randomConfig made an invalid config: %v", seed, i, err)
		}
		token, _, err := SignTelemetryConfig(key, config)
		if err != nil {
			t.Fatalf("seed %d, case %d: sign: %v", seed, i, err)
		}
		for _, k := range []*ecdh.PublicKey{nil, pub} {
			claims, err := Verify(token, k)
			if err != nil {
				t.Fatalf("seed %d, case %d: Verify(key given: %v): %v", seed, i, k != nil, err)
			}
			want := withIssuer(config, pub, TelemetryAudience)
			if diff := cmp.Diff(want, claims); diff != "" {
				t.Fatalf("seed %d, case %d: claims (-want +got):\n%s", seed, i, diff)
			}
		}
		// Another key must not verify it, neither given directly nor by rewriting iss.
		_, other := randomKey(t)
		if _, err := Verify(token, other); !errors.Is(err, ErrIssuerMismatch) {
			t.Errorf("seed %d, case %d: Verify with another key: err = %v, want ErrIssuerMismatch", seed, i, err)
		}
		if err := Method.Verify(signingInput(token), decodeSig(t, token), other); !errors.Is(err, ErrInvalidSignature) {
			t.Errorf("seed %d, case %d: signature verified under another key: err = %v", seed, i, err)
		}
	}
}

// withIssuer is what a signed config should decode to: config plus iss and aud.
func withIssuer(config map[string]any, pub *ecdh.PublicKey, aud string) map[string]any {
	want := make(map[string]any, len(config)+2)
	for k, v := range config {
		want[k] = v
	}
	want["iss"] = Issuer(pub)
	want["aud"] = aud
	// Normalise through JSON, as Verify's output is.
	b, _ := json.Marshal(want)
	m, _ := decodeObject(b)
	return m
}

func signingInput(token string) string {
	return token[:strings.LastIndexByte(token, '.')]
}

func decodeSig(tb testing.TB, token string) []byte {
	tb.Helper()
	sig, err := base64.RawURLEncoding.DecodeString(token[strings.LastIndexByte(token, '.')+1:])
	if err != nil {
		tb.Fatal(err)
	}
	return sig
}

// TestTamper flips every bit pattern of every byte of each decoded segment (one byte at a time,
// XOR 0x01 and XOR 0xff), re-encodes the token, and requires Verify to refuse it, with and
// without a given key.
func TestTamper(t *testing.T) {
	pub := mustPub(t, goldenKey(t))
	token := strings.TrimSpace(string(readTestdata(t, "golden.jws")))
	segs := strings.Split(token, ".")
	for s, name := range []string{"header", "payload", "signature"} {
		raw, err := base64.RawURLEncoding.DecodeString(segs[s])
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			for i := range raw {
				for _, mask := range []byte{0x01, 0xff} {
					mod := bytes.Clone(raw)
					mod[i] ^= mask
					parts := append([]string(nil), segs...)
					parts[s] = base64.RawURLEncoding.EncodeToString(mod)
					bad := strings.Join(parts, ".")
					for _, k := range []*ecdh.PublicKey{nil, pub} {
						if _, err := Verify(bad, k); err == nil {
							t.Errorf("byte %d ^ %#02x (key given: %v): tampered token verified", i, mask, k != nil)
						}
					}
				}
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	key := goldenKey(t)
	golden := strings.TrimSpace(string(readTestdata(t, "golden.jws")))
	segs := strings.Split(golden, ".")
	enc := base64.RawURLEncoding.EncodeToString
	// resign builds a token with the given header and payload JSON and a valid signature over them.
	resign := func(header, payload string) string {
		in := enc([]byte(header)) + "." + enc([]byte(payload))
		sig, err := Method.Sign(in, key)
		if err != nil {
			t.Fatal(err)
		}
		return in + "." + enc(sig)
	}
	sig := decodeSig(t, golden)
	iss := Issuer(mustPub(t, key))
	// r ≥ n is refused outright: an honest signer reduces r mod n.
	rIsN := append(bytes.Clone(sig[:64]), orderN().FillBytes(make([]byte, 32))...)
	rAllOnes := append(bytes.Clone(sig[:64]), bytes.Repeat([]byte{0xff}, 32)...)

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrMalformedToken},
		{"two segments", segs[0] + "." + segs[1], ErrMalformedToken},
		{"four segments", golden + ".", ErrMalformedToken},
		{"padded signature", golden + "=", ErrMalformedToken},
		{"padded header", segs[0] + "==." + segs[1] + "." + segs[2], ErrMalformedToken},
		{"non-canonical base64 bits", segs[0] + "." + flipLowBit(segs[1]) + "." + segs[2], ErrMalformedToken},
		{"header not JSON", enc([]byte("nope")) + "." + segs[1] + "." + segs[2], ErrMalformedToken},
		{"header a list", resign(`["Tesla.SS256"]`, `{}`), ErrMalformedToken},
		{"alg none", resign(`{"alg":"none","typ":"JWT"}`, `{"iss":"`+iss+`"}`), ErrUnsupportedAlg},
		{"alg ES256", resign(`{"alg":"ES256","typ":"JWT"}`, `{"iss":"`+iss+`"}`), ErrUnsupportedAlg},
		{"alg missing", resign(`{"typ":"JWT"}`, `{"iss":"`+iss+`"}`), ErrUnsupportedAlg},
		{"crit", resign(`{"alg":"Tesla.SS256","crit":["exp"]}`, `{"iss":"`+iss+`"}`), ErrMalformedToken},
		{"payload trailing data", resign(`{"alg":"Tesla.SS256"}`, `{"iss":"`+iss+`"} {}`), ErrMalformedToken},
		{"payload a string", resign(`{"alg":"Tesla.SS256"}`, `"hi"`), ErrMalformedToken},
		{"iss missing", resign(`{"alg":"Tesla.SS256"}`, `{"aud":"x"}`), ErrInvalidIssuer},
		{"iss a number", resign(`{"alg":"Tesla.SS256"}`, `{"iss":4}`), ErrInvalidIssuer},
		{"iss url base64", resign(`{"alg":"Tesla.SS256"}`, `{"iss":"`+base64.RawURLEncoding.EncodeToString(key.PublicBytes())+`"}`), ErrInvalidIssuer},
		{"iss compressed point", resign(`{"alg":"Tesla.SS256"}`, `{"iss":"`+base64.StdEncoding.EncodeToString(key.PublicBytes()[:33])+`"}`), ErrInvalidIssuer},
		{"signature 95 bytes", segs[0] + "." + segs[1] + "." + enc(sig[:95]), ErrInvalidSignature},
		{"signature 97 bytes", segs[0] + "." + segs[1] + "." + enc(append(bytes.Clone(sig), 0)), ErrInvalidSignature},
		{"signature empty", segs[0] + "." + segs[1] + ".", ErrInvalidSignature},
		{"nonce at infinity", segs[0] + "." + segs[1] + "." + enc(append(make([]byte, 64), sig[64:]...)), ErrInvalidSignature},
		{"r equals n", segs[0] + "." + segs[1] + "." + enc(rIsN), ErrInvalidSignature},
		{"r above n", segs[0] + "." + segs[1] + "." + enc(rAllOnes), ErrInvalidSignature},
	}
	if a, b := base64.RawURLEncoding.DecodeString(flipLowBit(segs[1])); b != nil || !bytes.Equal(a, mustDecode(t, segs[1])) {
		t.Fatal("flipLowBit no longer yields the same bytes to a lax decoder; the case tests nothing")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Verify(tc.token, nil); !errors.Is(err, tc.want) {
				t.Errorf("Verify: err = %v, want %v", err, tc.want)
			}
		})
	}
}

// flipLowBit changes the last character of an unpadded base64url segment whose length is 2 mod 3
// bytes, so that only the unused padding bits change: lax decoders read the same bytes.
func flipLowBit(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[i^1])
}

func mustDecode(tb testing.TB, seg string) []byte {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustPub(tb testing.TB, key protocol.ECDHPrivateKey) *ecdh.PublicKey {
	tb.Helper()
	pub, err := ecdh.P256().NewPublicKey(key.PublicBytes())
	if err != nil {
		tb.Fatal(err)
	}
	return pub
}

func orderN() *big.Int {
	n, _ := new(big.Int).SetString("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16)
	return n
}

func TestVerifyKeyChecks(t *testing.T) {
	golden := strings.TrimSpace(string(readTestdata(t, "golden.jws")))
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(golden, x.PublicKey()); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Verify with an X25519 key: err = %v, want ErrInvalidKey", err)
	}
	if err := Method.Verify("a.b", make([]byte, 96), []byte{4}); !errors.Is(err, jwt.ErrInvalidKeyType) {
		t.Errorf("Method.Verify with []byte key: err = %v, want jwt.ErrInvalidKeyType", err)
	}
	if _, err := Method.Sign("a.b", "not a key"); !errors.Is(err, jwt.ErrInvalidKeyType) {
		t.Errorf("Method.Sign with a string key: err = %v, want jwt.ErrInvalidKeyType", err)
	}
}

func TestSign(t *testing.T) {
	key := goldenKey(t)
	t.Run("does not modify claims", func(t *testing.T) {
		claims := map[string]any{"iss": "me", "aud": "you", "x": json.Number("1")}
		before := map[string]any{"iss": "me", "aud": "you", "x": json.Number("1")}
		token, overwritten, err := SignTelemetryConfig(key, claims)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, claims); diff != "" {
			t.Errorf("claims modified (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"aud", "iss"}, overwritten); diff != "" {
			t.Errorf("overwritten (-want +got):\n%s", diff)
		}
		got, err := Verify(token, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got["aud"] != TelemetryAudience || got["iss"] != Issuer(mustPub(t, key)) {
			t.Errorf("aud, iss = %v, %v; want them overwritten", got["aud"], got["iss"])
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			key    protocol.ECDHPrivateKey
			claims map[string]any
			aud    string
			want   error
		}{
			{"nil key", nil, nil, "a", ErrInvalidKey},
			{"empty audience", key, nil, "", ErrEmptyAudience},
			{"unencodable claim", key, map[string]any{"c": make(chan int)}, "a", nil},
			{"bad json.Number", key, map[string]any{"n": json.Number("12abc")}, "a", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := Sign(tc.key, tc.claims, tc.aud)
				if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("Sign: err = %v, want %v", err, tc.want)
				}
			})
		}
	})
	t.Run("nil claims", func(t *testing.T) {
		token, err := Sign(key, nil, "com.tesla.fleet.X")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(token, nil); err != nil {
			t.Error(err)
		}
	})
}

func TestPublicKeyFromIssuer(t *testing.T) {
	key := goldenKey(t)
	good := base64.StdEncoding.EncodeToString(key.PublicBytes())
	pub, err := PublicKeyFromIssuer(good)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(key.PublicBytes(), pub.Bytes()); diff != "" {
		t.Errorf("key (-want +got):\n%s", diff)
	}
	if got := Issuer(pub); got != good {
		t.Errorf("Issuer = %q, want %q", got, good)
	}
	offCurve := bytes.Clone(key.PublicBytes())
	offCurve[64] ^= 1
	for _, bad := range []string{
		"", "!!!", strings.TrimRight(good, "="), base64.URLEncoding.EncodeToString(key.PublicBytes()),
		base64.StdEncoding.EncodeToString(offCurve), base64.StdEncoding.EncodeToString(make([]byte, 65)),
	} {
		if _, err := PublicKeyFromIssuer(bad); !errors.Is(err, ErrInvalidIssuer) {
			t.Errorf("PublicKeyFromIssuer(%q): err = %v, want ErrInvalidIssuer", bad, err)
		}
	}
}
