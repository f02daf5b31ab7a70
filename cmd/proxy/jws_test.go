package main

import (
	"bytes"
	"crypto/elliptic"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/teslaproxy/proxy/internal/certgen"
)

// The golden vector of fleet-api.md §2 lives with internal/jws; these tests reuse its files.
var jwsTestdata = filepath.Join("..", "..", "internal", "jws", "testdata")

func jwsFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(jwsTestdata, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testJWS runs "proxy jws args..." with the clock before the golden vector's exp.
func testJWS(args []string, stdin string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	cmd := jwsCommand{now: func() time.Time { return time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC) }}
	code = cmd.run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// otherKeyFile writes a fresh P-256 private key (SEC1 PEM) and returns its path.
func otherKeyFile(t *testing.T) string {
	t.Helper()
	return writeFile(t, filepath.Join(t.TempDir(), "other.key"), certgen.KeyPEM(newECKey(t, elliptic.P256())), 0o600)
}

func TestJWSSignGolden(t *testing.T) {
	key := filepath.Join(jwsTestdata, "client.key")
	claims := jwsFile(t, "golden_claims.json")
	want := jwsFile(t, "golden.jws")
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
	}{
		{"bare config", []string{"sign", "-key-file", key}, claims},
		{"explicit audience", []string{"sign", "-key-file", key, "-aud", "com.tesla.fleet.TelemetryClient"}, claims},
		{"whole request", []string{"sign", "-key-file", key}, `{"vins":["5YJ30123456789ABC"],"config":` + claims + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := testJWS(tc.args, tc.stdin)
			if code != 0 {
				t.Fatalf("exit %d, stderr: %s", code, stderr)
			}
			if diff := cmp.Diff(want, stdout); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if stderr != "" {
				t.Errorf("unexpected stderr: %s", stderr)
			}
		})
	}
}

func TestJWSVerify(t *testing.T) {
	token := jwsFile(t, "golden.jws")
	wantClaims := `{
  "aud": "com.tesla.fleet.TelemetryClient",
  "exp": 1767225600,
  "fields": {
    "BatteryLevel": {
      "interval_seconds": 60
    }
  },
  "hostname": "telemetry.example.com",
  "iss": "BLK2vGjC2gZlzmVoFVlJlsYjlO3YvqkF/ngadU/mqEWnFDMJAvIl6SadRm4Fs0mYH9qdhcwjxvtESqc7YpEF3G4=",
  "port": 443
}
`
	for _, tc := range []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"against iss", []string{"verify"}, "this proves the token was not altered, not who signed it"},
		{"PKIX public key", []string{"verify", "-pub", filepath.Join(jwsTestdata, "client.pem")}, ""},
		{"private key file", []string{"verify", "-pub", filepath.Join(jwsTestdata, "client.key")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := testJWS(tc.args, token)
			if code != 0 {
				t.Fatalf("exit %d, stderr: %s", code, stderr)
			}
			if diff := cmp.Diff(wantClaims, stdout); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if tc.wantStderr == "" && stderr != "" || !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.wantStderr)
			}
		})
	}
}

// TestJWSSignVerify signs with a fresh key and verifies the result with that key, and with
// another key (which must fail).
func TestJWSSignVerify(t *testing.T) {
	key := otherKeyFile(t)
	config := `{"hostname":"t.example.com","port":4443,"fields":{"A":{"interval_seconds":1,"minimum_delta":1.50}},"iss":"me","x":123456789012345678901234567890}`
	code, token, stderr := testJWS([]string{"sign", "-key-file", key, "-aud", "com.tesla.fleet.Other"}, config)
	if code != 0 {
		t.Fatalf("sign: exit %d, stderr: %s", code, stderr)
	}
	if !strings.Contains(stderr, `replaced the config's ["iss"]`) {
		t.Errorf("sign stderr = %q, want a note that iss was replaced", stderr)
	}
	code, claims, stderr := testJWS([]string{"verify", "-pub", key}, token)
	if code != 0 {
		t.Fatalf("verify: exit %d, stderr: %s", code, stderr)
	}
	for _, want := range []string{`"aud": "com.tesla.fleet.Other"`, `"minimum_delta": 1.50`, `"x": 123456789012345678901234567890`} {
		if !strings.Contains(claims, want) {
			t.Errorf("claims lack %s:\n%s", want, claims)
		}
	}
	code, _, stderr = testJWS([]string{"verify", "-pub", filepath.Join(jwsTestdata, "client.pem")}, token)
	if code != 1 || !strings.Contains(stderr, "token is not valid") {
		t.Errorf("verify with the wrong key: exit %d, stderr %q; want 1 and a clear line", code, stderr)
	}
}

func TestJWSFailures(t *testing.T) {
	key := filepath.Join(jwsTestdata, "client.key")
	token := strings.TrimSpace(jwsFile(t, "golden.jws"))
	tampered := token[:len(token)-2] + "AA"
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStderr string
	}{
		// Usage errors: 2.
		{"no subcommand", nil, "", 2, "missing subcommand"},
		{"unknown subcommand", []string{"frobnicate"}, "", 2, `unknown subcommand "frobnicate"`},
		{"sign without key", []string{"sign"}, "{}", 2, "-key-file is required"},
		{"sign unknown flag", []string{"sign", "-key", key}, "{}", 2, "flag provided but not defined: -key"},
		{"sign empty aud", []string{"sign", "-key-file", key, "-aud", ""}, "{}", 2, "-aud must not be empty"},
		{"sign extra argument", []string{"sign", "-key-file", key, "config.json"}, "{}", 2, `unexpected argument "config.json"`},
		{"verify extra argument", []string{"verify", "token.jws"}, token, 2, `unexpected argument "token.jws"`},
		{"verify flag without value", []string{"verify", "-pub"}, token, 2, "flag needs an argument: -pub"},

		// Help: 0.
		{"help", []string{"-h"}, "", 0, "proxy jws sign -key-file FILE"},
		{"sign help", []string{"sign", "-h"}, "", 0, "Flags of sign"},

		// Validation and verification failures: 1, one clear line.
		{"port as string", []string{"sign", "-key-file", key}, `{"hostname":"t.example.com","port":"443","fields":{"A":{"interval_seconds":1}}}`, 1,
			"proxy jws sign: config.port must be an integer from 1 to 65535 (got the string \"443\")\n"},
		{"config not JSON", []string{"sign", "-key-file", key}, `{"hostname":`, 1, "proxy jws sign: config is not valid JSON"},
		{"config empty", []string{"sign", "-key-file", key}, "", 1, "proxy jws sign: config is empty"},
		{"config a list", []string{"sign", "-key-file", key}, "[]", 1, "config must be a JSON object"},
		{"request with bad VIN", []string{"sign", "-key-file", key}, `{"vins":["x"],"config":` + jwsFile(t, "golden_claims.json") + `}`, 1, "vins[0] must be a 17-character VIN"},
		{"missing key file", []string{"sign", "-key-file", filepath.Join(t.TempDir(), "none.key")}, jwsFile(t, "golden_claims.json"), 1, "cannot load -key-file"},
		{"tampered token", []string{"verify"}, tampered, 1, "proxy jws verify: token is not valid: jws: invalid signature"},
		{"empty token", []string{"verify"}, "\n", 1, "no token on standard input"},
		{"garbage token", []string{"verify"}, "hello", 1, "malformed token"},
		{"missing pub file", []string{"verify", "-pub", filepath.Join(t.TempDir(), "none.pem")}, token, 1, "cannot load -pub"},
		{"wrong pub", []string{"verify", "-pub", otherKeyFile(t)}, token, 1, "issuer does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := testJWS(tc.args, tc.stdin)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.wantStderr)
			}
			if tc.wantCode == 1 {
				if stdout != "" {
					t.Errorf("stdout = %q, want nothing on failure", stdout)
				}
				if strings.Count(stderr, "\n") != 1 {
					t.Errorf("stderr has %d lines, want one: %q", strings.Count(stderr, "\n"), stderr)
				}
			}
		})
	}
}

func TestJWSInputLimit(t *testing.T) {
	big := strings.Repeat(" ", maxJWSInput+1)
	code, _, stderr := testJWS([]string{"verify"}, big)
	if code != 1 || !strings.Contains(stderr, "larger than") {
		t.Errorf("exit %d, stderr %q; want 1 and a size message", code, stderr)
	}
}
