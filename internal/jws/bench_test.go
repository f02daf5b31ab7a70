package jws

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/teslamotors/vehicle-command/pkg/sign"
)

// Compare ours with vehicle-command's in one run:
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/jws/
//
// Both spend nearly all their time in the same SchnorrSignature call; the difference is the
// claims handling around it.

func benchClaims(b *testing.B) map[string]any {
	return decodeJSON(b, readTestdata(b, "golden_claims.json"))
}

func BenchmarkSign(b *testing.B) {
	key := goldenKey(b)
	claims := benchClaims(b)
	for b.Loop() {
		if _, err := Sign(key, claims, TelemetryAudience); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignMessageForFleet(b *testing.B) {
	key := goldenKey(b)
	claims := benchClaims(b)
	for b.Loop() {
		// SignMessageForFleet writes iss and aud into the map it is given, so give it a copy,
		// as Sign makes one internally.
		mc := make(jwt.MapClaims, len(claims)+2)
		for k, v := range claims {
			mc[k] = v
		}
		if _, err := sign.SignMessageForFleet(key, "TelemetryClient", mc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	token := strings.TrimSpace(string(readTestdata(b, "golden.jws")))
	for b.Loop() {
		if _, err := Verify(token, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckTelemetryConfig(b *testing.B) {
	claims := benchClaims(b)
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		if err := CheckTelemetryConfig(claims, now); err != nil {
			b.Fatal(err)
		}
	}
}
