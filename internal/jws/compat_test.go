package jws

import (
	"crypto/ecdh"
	"encoding/json"
	"errors"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/teslamotors/vehicle-command/pkg/sign"
)

// This file checks us against vehicle-command v0.4.1, whose pkg/sign this test binary imports
// (and so whose Tesla.SS256 method is in golang-jwt's table until a test replaces it).

// TestMatchesVehicleCommand signs the same claims with the same keys through both
// implementations: the tokens must be identical, and each side must verify the other's.
func TestMatchesVehicleCommand(t *testing.T) {
	theirs := jwt.GetSigningMethod(Alg)
	if _, ours := theirs.(*SigningMethod); ours || theirs == nil {
		t.Fatalf("golang-jwt's %s entry is %T, want vehicle-command's (a test did not clean up)", Alg, theirs)
	}
	seed := uint64(time.Now().UnixNano())
	r := mrand.New(mrand.NewPCG(seed, 0xc0a7))
	for i := range 30 {
		key, pub := randomKey(t)
		if i == 0 {
			key = goldenKey(t)
			pub = mustPub(t, key)
		}
		config := randomConfig(r)
		mc := jwt.MapClaims{}
		for k, v := range config {
			mc[k] = v
		}
		want, err := sign.SignMessageForFleet(key, "TelemetryClient", mc)
		if err != nil {
			t.Fatalf("seed %d, case %d: SignMessageForFleet: %v", seed, i, err)
		}
		got, _, err := SignTelemetryConfig(key, config)
		if err != nil {
			t.Fatalf("seed %d, case %d: SignTelemetryConfig: %v", seed, i, err)
		}
		if got != want {
			// Tokens are not printed: compare lengths and the first differing position only.
			t.Errorf("seed %d, case %d: our token differs from vehicle-command's (len %d vs %d, first difference at %d)",
				seed, i, len(got), len(want), firstDiff(got, want))
		}
		if _, err := Verify(want, pub); err != nil {
			t.Errorf("seed %d, case %d: Verify(vehicle-command's token): %v", seed, i, err)
		}
		if err := theirs.Verify(signingInput(got), decodeSig(t, got), pub.Bytes()); err != nil {
			t.Errorf("seed %d, case %d: vehicle-command's Verify(our token): %v", seed, i, err)
		}
	}
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// yesMethod accepts every signature. Registered under Alg, it shows whether Verify consults
// golang-jwt's table: if it did, tampered tokens would pass.
type yesMethod struct{}

func (yesMethod) Verify(string, []byte, any) error { return nil }
func (yesMethod) Sign(string, any) ([]byte, error) { return make([]byte, SignatureSize), nil }
func (yesMethod) Alg() string                      { return Alg }

// TestRegistry checks Register and that Verify gives the same answers whichever Tesla.SS256
// method golang-jwt holds: vehicle-command's (registered when pkg/protocol is imported), ours,
// or one that accepts anything. It restores vehicle-command's entry when done. It must not run in
// parallel with other tests that use golang-jwt's table; none do.
func TestRegistry(t *testing.T) {
	theirs := jwt.GetSigningMethod(Alg)
	if theirs == nil {
		t.Fatalf("no %s method registered; importing vehicle-command should have added one", Alg)
	}
	t.Cleanup(func() { jwt.RegisterSigningMethod(Alg, func() jwt.SigningMethod { return theirs }) })

	key := goldenKey(t)
	pub := mustPub(t, key)
	good := strings.TrimSpace(string(readTestdata(t, "golden.jws")))
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))

	check := func(t *testing.T) {
		t.Helper()
		for _, k := range []*ecdh.PublicKey{nil, pub} {
			if _, err := Verify(good, k); err != nil {
				t.Errorf("Verify(golden, key given: %v): %v", k != nil, err)
			}
			if _, err := Verify(tampered, k); !errors.Is(err, ErrInvalidSignature) {
				t.Errorf("Verify(tampered, key given: %v): err = %v, want ErrInvalidSignature", k != nil, err)
			}
		}
		token, err := Sign(key, map[string]any{"a": 1}, "com.tesla.fleet.Test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(token, pub); err != nil {
			t.Errorf("Verify(Sign(...)): %v", err)
		}
	}

	t.Run("vehicle-command registered", func(t *testing.T) {
		if _, ours := jwt.GetSigningMethod(Alg).(*SigningMethod); ours {
			t.Fatalf("expected vehicle-command's method, found ours")
		}
		check(t)
	})
	t.Run("ours registered", func(t *testing.T) {
		Register()
		got, ok := jwt.GetSigningMethod(Alg).(*SigningMethod)
		if !ok || got != Method {
			t.Fatalf("after Register, GetSigningMethod(%q) = %T, want Method", Alg, jwt.GetSigningMethod(Alg))
		}
		check(t)
		// Now golang-jwt's own parser, as other code might use it, runs our verifier.
		tok, err := jwt.Parse(good, func(*jwt.Token) (any, error) { return pub, nil },
			jwt.WithValidMethods([]string{Alg}), jwt.WithoutClaimsValidation())
		if err != nil || !tok.Valid {
			t.Errorf("jwt.Parse with our method registered: %v", err)
		}
	})
	t.Run("accept-anything registered", func(t *testing.T) {
		jwt.RegisterSigningMethod(Alg, func() jwt.SigningMethod { return yesMethod{} })
		check(t)
	})
	t.Run("nothing usable registered", func(t *testing.T) {
		jwt.RegisterSigningMethod(Alg, func() jwt.SigningMethod { return nil })
		check(t)
	})
}

// TestParsedNumbersMatch checks that a config decoded the way vehicle-command's proxy decodes it
// (json.Unmarshal into jwt.MapClaims, numbers as float64) and the way we do (json.Number) sign
// identically when the integers fit in a float64, as every real config's do.
func TestParsedNumbersMatch(t *testing.T) {
	key := goldenKey(t)
	body := readTestdata(t, "golden_claims.json")
	var floats jwt.MapClaims
	if err := json.Unmarshal(body, &floats); err != nil {
		t.Fatal(err)
	}
	want, err := sign.SignMessageForFleet(key, "TelemetryClient", floats)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := SignTelemetryConfig(key, decodeJSON(t, body))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-vehicle-command +ours):\n%s", diff)
	}
}
