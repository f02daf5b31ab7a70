package jws

import (
	"crypto/ecdh"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
)

// The fuzz targets share one property: nothing panics, and whatever the checks accept signs and
// verifies back to the same claims. Seeds come from the tables in telemetry_test.go.

func FuzzCheckTelemetryConfig(f *testing.F) {
	for _, tc := range configCases(f) {
		f.Add([]byte(tc.json))
	}
	key := goldenKey(f)
	pub := mustPub(f, key)
	f.Fuzz(func(t *testing.T, data []byte) {
		config, err := decodeObject(data)
		if err != nil {
			return
		}
		if err := CheckTelemetryConfig(config, testNow); err != nil {
			return
		}
		signAndVerify(t, key, pub, config)
	})
}

func FuzzParseTelemetryRequest(f *testing.F) {
	for _, tc := range requestCases(f) {
		f.Add([]byte(tc.json))
	}
	key := goldenKey(f)
	pub := mustPub(f, key)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseTelemetryRequest(body, testNow)
		if err != nil {
			return
		}
		if len(req.VINs) == 0 {
			t.Fatal("accepted a request without VINs")
		}
		signAndVerify(t, key, pub, req.Config)
	})
}

// FuzzVerify feeds Verify arbitrary tokens, seeded with the golden token and pieces of it. Only
// tokens signed by the golden key should verify, and this target never produces one by chance.
func FuzzVerify(f *testing.F) {
	golden := strings.TrimSpace(string(readTestdata(f, "golden.jws")))
	f.Add(golden)
	f.Add(golden[:len(golden)-1])
	f.Add(golden + ".x")
	f.Add("..")
	f.Add("eyJhbGciOiJUZXNsYS5TUzI1NiJ9.e30.")
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := Verify(token, nil)
		if err != nil {
			return
		}
		if token != golden {
			// A different string that verifies must still be a valid signature under the key
			// in iss; the only way to get one here is a different spelling of the golden token,
			// which strict decoding forbids.
			t.Fatalf("a token other than the golden one verified; claims %v", claims)
		}
	})
}

func signAndVerify(t *testing.T, key protocol.ECDHPrivateKey, pub *ecdh.PublicKey, config map[string]any) {
	t.Helper()
	token, _, err := SignTelemetryConfig(key, config)
	if err != nil {
		t.Fatalf("accepted config does not sign: %v", err)
	}
	claims, err := Verify(token, pub)
	if err != nil {
		t.Fatalf("accepted config does not verify: %v", err)
	}
	if diff := cmp.Diff(withIssuer(config, pub, TelemetryAudience), claims); diff != "" {
		t.Fatalf("claims changed in signing (-want +got):\n%s", diff)
	}
}
