package jws

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/teslaproxy/proxy/internal/apierr"
)

// configCase is one telemetry config, as JSON, and the error text it must produce ("" = valid).
type configCase struct {
	name string
	json string
	want string
}

// caJSON is testdata/ca.pem (a throwaway self-signed certificate) as a JSON string literal.
func caJSON(tb testing.TB) string {
	tb.Helper()
	b, err := json.Marshal(string(readTestdata(tb, "ca.pem")))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// withKeys returns a valid minimal config with extra raw JSON members appended or replacing
// hostname/fields: withKeys(`"port":"443"`).
func withKeys(members ...string) string {
	base := map[string]string{
		"hostname": `"telemetry.example.com"`,
		"fields":   `{"BatteryLevel":{"interval_seconds":60}}`,
	}
	var extra []string
	for _, m := range members {
		k, _, _ := strings.Cut(m, ":")
		k = strings.Trim(k, `"`)
		if _, ok := base[k]; ok {
			base[k] = m[len(k)+3:]
			continue
		}
		extra = append(extra, m)
	}
	out := []string{}
	for _, k := range []string{"hostname", "fields"} {
		if base[k] != "-" {
			out = append(out, `"`+k+`":`+base[k])
		}
	}
	return "{" + strings.Join(append(out, extra...), ",") + "}"
}

func configCases(tb testing.TB) []configCase {
	ca := caJSON(tb)
	caText := string(readTestdata(tb, "ca.pem"))
	twoCerts, _ := json.Marshal(caText + caText)
	trailing, _ := json.Marshal(caText + "garbage\n")
	notCert, _ := json.Marshal("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	wrongType, _ := json.Marshal("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
	long := strings.Repeat("a", 64) + ".example.com"
	tooLong := strings.Repeat("abcdefghi.", 25) + "example.com"
	return []configCase{
		// Valid.
		{"golden", string(readTestdata(tb, "golden_claims.json")), ""},
		{"minimal", withKeys(), ""},
		{"everything", withKeys(`"port":4443`, `"ca":`+ca, `"exp":1767225600`,
			`"fields":{"BatteryLevel":{"interval_seconds":60,"minimum_delta":0.5,"resend_interval_seconds":3600},"Gear":{"interval_seconds":1}}`,
			`"alert_types":["service","customer"]`, `"prefer_typed":true`, `"delivery_policy":"latest"`,
			`"unknown":{"kept":[1,2.50,"x"]}`, `"aud":"overwritten"`, `"iss":"overwritten"`), ""},
		{"ipv4 host", withKeys(`"hostname":"192.0.2.10"`), ""},
		{"port bounds low", withKeys(`"port":1`), ""},
		{"port bounds high", withKeys(`"port":65535`), ""},
		{"two certificates", withKeys(`"ca":` + string(twoCerts)), ""},
		{"minimum_delta forms", withKeys(`"fields":{"A":{"interval_seconds":5,"minimum_delta":-1e-3},"B":{"interval_seconds":5,"minimum_delta":12345678901234567890}}`), ""},
		{"empty alert_types", withKeys(`"alert_types":[]`), ""},
		{"huge exp", withKeys(`"exp":9223372036854775807`), ""},

		// hostname
		{"no hostname", withKeys(`"hostname":-`), "config.hostname is required"},
		{"hostname number", withKeys(`"hostname":5`), "config.hostname must be a host name without scheme, path or port, such as telemetry.example.com (got the number 5)"},
		{"hostname null", withKeys(`"hostname":null`), "config.hostname must be a host name without scheme, path or port, such as telemetry.example.com (got null)"},
		{"hostname empty", withKeys(`"hostname":""`), "(got an empty string)"},
		{"hostname with scheme", withKeys(`"hostname":"https://t.example.com"`), `remove the scheme (got the string "https://t.example.com")`},
		{"hostname with path", withKeys(`"hostname":"t.example.com/x"`), "remove the path"},
		{"hostname with port", withKeys(`"hostname":"t.example.com:443"`), "put the port in config.port"},
		{"hostname ipv6", withKeys(`"hostname":"[2001:db8::1]"`), "put the port in config.port"},
		{"hostname underscore", withKeys(`"hostname":"bad_host.example.com"`), `(got the string "bad_host.example.com")`},
		{"hostname space", withKeys(`"hostname":"exa mple.com"`), "config.hostname must be a host name"},
		{"hostname trailing dot", withKeys(`"hostname":"t.example.com."`), "config.hostname must be a host name"},
		{"hostname empty label", withKeys(`"hostname":"t..example.com"`), "config.hostname must be a host name"},
		{"hostname leading hyphen", withKeys(`"hostname":"-t.example.com"`), "config.hostname must be a host name"},
		{"hostname long label", withKeys(`"hostname":"` + long + `"`), "config.hostname must be a host name"},
		{"hostname too long", withKeys(`"hostname":"` + tooLong + `"`), `…")`},

		// port
		{"port string", withKeys(`"port":"443"`), `config.port must be an integer from 1 to 65535 (got the string "443")`},
		{"port zero", withKeys(`"port":0`), "config.port must be an integer from 1 to 65535 (got the number 0)"},
		{"port too big", withKeys(`"port":65536`), "(got the number 65536)"},
		{"port negative", withKeys(`"port":-443`), "(got the number -443)"},
		{"port fraction", withKeys(`"port":443.5`), "(got the number 443.5)"},
		{"port exponent", withKeys(`"port":4.43e2`), "(got the number 4.43e2)"},
		{"port trailing zero", withKeys(`"port":443.0`), "(got the number 443.0)"},
		{"port null", withKeys(`"port":null`), "config.port must be an integer from 1 to 65535 (got null)"},
		{"port bool", withKeys(`"port":true`), "(got true)"},
		{"port list", withKeys(`"port":[443]`), "(got a list)"},

		// ca
		{"ca number", withKeys(`"ca":5`), "config.ca must be a PEM string of one or more certificates (got the number 5)"},
		{"ca not pem", withKeys(`"ca":"hello"`), "config.ca must be a PEM string of one or more certificates (found no PEM block"},
		{"ca empty", withKeys(`"ca":""`), "found no PEM block"},
		{"ca bad der", withKeys(`"ca":` + string(notCert)), "config.ca: PEM block 1 is not a valid certificate"},
		{"ca public key", withKeys(`"ca":` + string(wrongType)), `config.ca must hold only certificates (PEM block 1 is "PUBLIC KEY")`},
		{"ca trailing text", withKeys(`"ca":` + string(trailing)), "config.ca has text after its last certificate"},

		// exp
		{"exp past", withKeys(`"exp":1700000000`), "config.exp must be in the future (got 1700000000, which is 2023-11-14T22:13:20Z; now is 2025-06-01T00:00:00Z)"},
		{"exp now", withKeys(`"exp":1748736000`), "config.exp must be in the future"},
		{"exp string", withKeys(`"exp":"1767225600"`), `config.exp must be an integer number of seconds since 1970-01-01 UTC (got the string "1767225600")`},
		{"exp fraction", withKeys(`"exp":1767225600.5`), "config.exp must be an integer"},
		{"exp beyond int64", withKeys(`"exp":92233720368547758070`), "config.exp must be an integer"},

		// fields
		{"no fields", withKeys(`"fields":-`), "config.fields is required"},
		{"fields list", withKeys(`"fields":["BatteryLevel"]`), "config.fields must be an object mapping signal names to {\"interval_seconds\": N} (got a list)"},
		{"fields empty", withKeys(`"fields":{}`), "config.fields must name at least one signal"},
		{"field not object", withKeys(`"fields":{"BatteryLevel":60}`), `config.fields.BatteryLevel must be an object such as {"interval_seconds": 60} (got the number 60)`},
		{"field without interval", withKeys(`"fields":{"BatteryLevel":{}}`), "config.fields.BatteryLevel.interval_seconds is required"},
		{"interval zero", withKeys(`"fields":{"BatteryLevel":{"interval_seconds":0}}`), "config.fields.BatteryLevel.interval_seconds must be a positive integer (got the number 0)"},
		{"interval string", withKeys(`"fields":{"BatteryLevel":{"interval_seconds":"60"}}`), `(got the string "60")`},
		{"interval fraction", withKeys(`"fields":{"BatteryLevel":{"interval_seconds":1.5}}`), "interval_seconds must be a positive integer (got the number 1.5)"},
		{"minimum_delta string", withKeys(`"fields":{"BatteryLevel":{"interval_seconds":1,"minimum_delta":"1"}}`), `config.fields.BatteryLevel.minimum_delta must be a number (got the string "1")`},
		{"resend zero", withKeys(`"fields":{"BatteryLevel":{"interval_seconds":1,"resend_interval_seconds":0}}`), "config.fields.BatteryLevel.resend_interval_seconds must be a positive integer"},
		{"odd field name", withKeys(`"fields":{"Battery Level":{"interval_seconds":0}}`), `config.fields["Battery Level"].interval_seconds must be a positive integer`},
		{"empty field name", withKeys(`"fields":{"":{"interval_seconds":1}}`), "config.fields has an empty signal name"},

		// the rest
		{"alert_types string", withKeys(`"alert_types":"service"`), `config.alert_types must be a list of strings (got the string "service")`},
		{"alert_types item", withKeys(`"alert_types":["service",7]`), "config.alert_types[1] must be a string (got the number 7)"},
		{"prefer_typed string", withKeys(`"prefer_typed":"true"`), `config.prefer_typed must be true or false (got the string "true")`},
		{"delivery_policy number", withKeys(`"delivery_policy":1`), "config.delivery_policy must be a string (got the number 1)"},

		// several problems at once
		{"all reported", withKeys(`"hostname":"a:1"`, `"port":"443"`), "config.hostname must be a host name without scheme, path or port, such as telemetry.example.com; put the port in config.port (got the string \"a:1\"); config.port must be"},
		{"capped", withKeys(`"fields":{"A":1,"B":1,"C":1,"D":1,"E":1,"F":1,"G":1,"H":1,"I":1,"J":1,"K":1,"L":1}`), "config.fields.J must be an object such as {\"interval_seconds\": 60} (got the number 1); and 2 more"},
		{"empty object", `{}`, "config.hostname is required: the host name of your telemetry server, such as telemetry.example.com; config.fields is required"},
	}
}

// checkAPIErr asserts that err is a 400 *apierr.Error with ErrorWord whose message contains want.
func checkAPIErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var e *apierr.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want an *apierr.Error", err, err)
	}
	if e.Code != http.StatusBadRequest || e.Word != ErrorWord {
		t.Errorf("status, word = %d, %q; want 400, %q", e.Code, e.Word, ErrorWord)
	}
	if !strings.Contains(e.Msg, want) {
		t.Errorf("message does not contain the expected text\n got: %s\nwant: …%s…", e.Msg, want)
	}
}

func TestCheckTelemetryConfig(t *testing.T) {
	key := goldenKey(t)
	for _, tc := range configCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			config := decodeJSON(t, []byte(tc.json))
			err := CheckTelemetryConfig(config, testNow)
			checkAPIErr(t, err, tc.want)
			if err != nil {
				return
			}
			// Valid configs sign, and every number comes back spelled as it was sent.
			token, _, err := SignTelemetryConfig(key, config)
			if err != nil {
				t.Fatal(err)
			}
			claims, err := Verify(token, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(withIssuer(config, mustPub(t, key), TelemetryAudience), claims); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("nil config", func(t *testing.T) {
		checkAPIErr(t, CheckTelemetryConfig(nil, testNow), "config is required")
	})
	t.Run("float64 and Go ints", func(t *testing.T) {
		config := map[string]any{
			"hostname": "t.example.com",
			"port":     float64(443),
			"exp":      testNow.Unix() + 60,
			"fields":   map[string]any{"A": map[string]any{"interval_seconds": 5, "minimum_delta": 0.25}},
		}
		checkAPIErr(t, CheckTelemetryConfig(config, testNow), "")
		config["port"] = 443.5
		checkAPIErr(t, CheckTelemetryConfig(config, testNow), "config.port must be an integer from 1 to 65535 (got the number 443.5)")
	})
}

// requestCases are whole request bodies for ParseTelemetryRequest.
func requestCases(tb testing.TB) []configCase {
	const vin = `"5YJ30123456789ABC"`
	good := withKeys()
	return []configCase{
		{"valid", `{"vins":[` + vin + `],"config":` + good + `}`, ""},
		{"valid, two vins, extra key, whitespace", "\n {\"vins\":[" + vin + `,"LRW3E7FA1MC000001"],"config":` + good + `,"note":"ignored"}` + " \n\t", ""},
		{"golden", `{"vins":[` + vin + `],"config":` + string(readTestdata(tb, "golden_claims.json")) + `}`, ""},

		{"empty", "", "request body is empty"},
		{"blank", " \n\t", "request body is empty"},
		{"truncated", `{"vins":[` + vin, "request body is not valid JSON: it ends too early"},
		{"syntax", `{"vins":[` + vin + `],}`, "request body is not valid JSON: it has an unexpected character at byte 31"},
		{"trailing garbage", `{"vins":[` + vin + `],"config":` + good + `} x`, "request body has data after its JSON object, starting at byte"},
		{"two objects", `{"vins":[` + vin + `],"config":` + good + `}{}`, "request body has data after its JSON object"},
		{"list", `[` + good + `]`, "request body must be a JSON object such as"},
		{"null", `null`, "(got null)"},
		{"string", `"hello"`, `(got the string "hello")`},

		{"no vins", `{"config":` + good + `}`, "vins is required: a list of 17-character VINs"},
		{"vins empty", `{"vins":[],"config":` + good + `}`, "vins must name at least one vehicle"},
		{"vins string", `{"vins":` + vin + `,"config":` + good + `}`, `vins must be a list of 17-character VINs (uppercase letters and digits) (got the string "5YJ30123456789ABC")`},
		{"vin lowercase", `{"vins":["5yj30123456789abc"],"config":` + good + `}`, `vins[0] must be a 17-character VIN of uppercase letters and digits (got the string "5yj30123456789abc")`},
		{"vin short", `{"vins":[` + vin + `,"5YJ3"],"config":` + good + `}`, `vins[1] must be a 17-character VIN`},
		{"vin number", `{"vins":[5],"config":` + good + `}`, "vins[0] must be a 17-character VIN of uppercase letters and digits (got the number 5)"},
		{"vin with dash", `{"vins":["5YJ3-0123456789ABC"],"config":` + good + `}`, "vins[0] must be"},

		{"no config", `{"vins":[` + vin + `]}`, "config is required"},
		{"config list", `{"vins":[` + vin + `],"config":[]}`, "config must be an object (got a list)"},
		{"config null", `{"vins":[` + vin + `],"config":null}`, "config must be an object (got null)"},
		{"config string", `{"vins":[` + vin + `],"config":"{}"}`, `config must be an object (got the string "{}")`},
		{"port string", `{"vins":[` + vin + `],"config":` + withKeys(`"port":"443"`) + `}`, `config.port must be an integer from 1 to 65535 (got the string "443")`},
		{"vins and config both wrong", `{"vins":[],"config":{}}`, "vins must name at least one vehicle; config.hostname is required"},
	}
}

func TestParseTelemetryRequest(t *testing.T) {
	for _, tc := range requestCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			req, err := ParseTelemetryRequest([]byte(tc.json), testNow)
			checkAPIErr(t, err, tc.want)
			if err == nil && (len(req.VINs) == 0 || req.Config == nil) {
				t.Errorf("accepted request has VINs %q and config %v", req.VINs, req.Config)
			}
		})
	}
}

// TestNumbersStayExact checks that numbers keep their spelling from the request body to the
// signed payload: integers beyond 2^53, exponents and trailing zeros are not rewritten.
func TestNumbersStayExact(t *testing.T) {
	body := `{"vins":["5YJ30123456789ABC"],"config":{"hostname":"t.example.com","exp":1767225600,` +
		`"fields":{"A":{"interval_seconds":9007199254740993,"minimum_delta":1.50,"resend_interval_seconds":1}},` +
		`"x":{"big":123456789012345678901234567890,"exp":1E+400,"neg":-0.0}}}`
	req, err := ParseTelemetryRequest([]byte(body), testNow)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"1767225600", "9007199254740993", "1.50", "123456789012345678901234567890", "1E+400", "-0.0"}
	wantVINs := []string{"5YJ30123456789ABC"}
	if diff := cmp.Diff(wantVINs, req.VINs); diff != "" {
		t.Errorf("VINs (-want +got):\n%s", diff)
	}
	token, _, err := SignTelemetryConfig(goldenKey(t), req.Config)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range want {
		if !strings.Contains(string(payload), ":"+n) {
			t.Errorf("signed payload lost the number %s:\n%s", n, payload)
		}
	}
}

func TestShorten(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), strings.Repeat("a", 64) + "…"},
		{strings.Repeat("a", 63) + "é", strings.Repeat("a", 63) + "…"},
	} {
		if got := shorten(tc.in); got != tc.want {
			t.Errorf("shorten(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseTelemetryConfig(t *testing.T) {
	for _, tc := range []configCase{
		{"golden", string(readTestdata(t, "golden_claims.json")), ""},
		{"empty", " ", `config is empty; send a JSON object such as {"hostname":"…","fields":{…}}`},
		{"not JSON", `{"hostname"`, "config is not valid JSON: it ends too early"},
		{"trailing", withKeys() + ` {}`, "config has data after its JSON object, starting at byte"},
		{"list", `[]`, "config must be a JSON object such as"},
		{"port string", withKeys(`"port":"443"`), `config.port must be an integer from 1 to 65535 (got the string "443")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config, err := ParseTelemetryConfig([]byte(tc.json), testNow)
			checkAPIErr(t, err, tc.want)
			if err == nil {
				if diff := cmp.Diff(decodeJSON(t, []byte(tc.json)), config); diff != "" {
					t.Errorf("config (-want +got):\n%s", diff)
				}
			}
		})
	}
}
