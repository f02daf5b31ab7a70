package jws

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// ErrorWord is the apierr code word of every error from ParseTelemetryRequest and
// CheckTelemetryConfig.
const ErrorWord = "invalid_telemetry_config"

// maxProblems bounds how many problems one error message lists, so that a config with thousands
// of bad fields does not produce a message of the same size.
const maxProblems = 10

// TelemetryRequest is a checked body of POST /api/1/vehicles/fleet_telemetry_config.
type TelemetryRequest struct {
	// VINs are the vehicles to configure: at least one, each 17 uppercase letters or digits, or
	// a numeric Fleet API vehicle id (digits only) for the caller to turn into a VIN.
	VINs []string
	// Config is the configuration to sign, as decoded, numbers as json.Number. Keys the checks
	// do not know are kept untouched.
	Config map[string]any
}

// ParseTelemetryRequest checks a POST /api/1/vehicles/fleet_telemetry_config body,
// {"vins":[…],"config":{…}}, before anything is sent upstream or billed. now is the time "exp"
// must lie after.
//
// The body must be exactly one JSON object. "vins" must be a non-empty list of VINs and "config"
// must pass CheckTelemetryConfig. Other top-level keys are ignored, as the Fleet API's JWS
// endpoint takes only "vins" and "token". Numbers are decoded as json.Number, so what is signed
// spells every number as the client did.
//
// Every error is an *apierr.Error with status 400 and word ErrorWord whose message names each
// field at fault and the rule it broke.
func ParseTelemetryRequest(body []byte, now time.Time) (*TelemetryRequest, error) {
	top, err := decodeBody(body, "request body", `{"vins":["…"],"config":{…}}`)
	if err != nil {
		return nil, err
	}
	var p problems
	req := &TelemetryRequest{}
	req.VINs = checkVINs(&p, top["vins"], hasKey(top, "vins"))
	switch c := top["config"].(type) {
	case map[string]any:
		req.Config = c
		checkConfig(&p, "config", c, now)
	default:
		if !hasKey(top, "config") {
			p.add("config is required: an object with at least hostname and fields")
		} else {
			p.add("config must be an object (got %s)", describe(c))
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return req, nil
}

// ParseTelemetryConfig decodes body, which must be exactly one JSON object, as a telemetry
// config (numbers as json.Number) and checks it with CheckTelemetryConfig. It is for configs that
// arrive on their own, such as on the standard input of `proxy jws sign`. Errors are as for
// ParseTelemetryRequest.
func ParseTelemetryConfig(body []byte, now time.Time) (map[string]any, error) {
	config, err := decodeBody(body, "config", `{"hostname":"…","fields":{…}}`)
	if err != nil {
		return nil, err
	}
	if err := CheckTelemetryConfig(config, now); err != nil {
		return nil, err
	}
	return config, nil
}

// CheckTelemetryConfig checks a fleet-telemetry configuration against the rules below and
// returns an *apierr.Error (status 400, word ErrorWord) listing every problem, or nil. now is
// the time "exp" must lie after. Numbers may be json.Number (preferred: decode with UseNumber),
// float64 or Go integers.
//
// Required:
//   - hostname: a host name without scheme, path or port (letters, digits and hyphens in
//     dot-separated labels), or an IPv4 address.
//   - fields: a non-empty object mapping each signal name to an object whose
//     interval_seconds is a positive integer; minimum_delta, when present, is a number;
//     resend_interval_seconds, when present, is a positive integer. A config without fields
//     would stream nothing, so it is refused rather than billed.
//
// Optional, checked when present (null counts as present and is refused):
//   - port: an integer from 1 to 65535 (the string "443" is refused).
//   - ca: a PEM string of one or more certificates, and nothing else.
//   - exp: an integer number of seconds since 1970 that is after now.
//   - alert_types: a list of strings.
//   - prefer_typed: a boolean.
//   - delivery_policy: a string.
//
// Other keys, including "aud" and "iss" (which signing overwrites), pass unchecked.
func CheckTelemetryConfig(config map[string]any, now time.Time) error {
	var p problems
	if config == nil {
		p.add("config is required: an object with at least hostname and fields")
		return p.err()
	}
	checkConfig(&p, "config", config, now)
	return p.err()
}

func checkConfig(p *problems, path string, c map[string]any, now time.Time) {
	if v, ok := c["hostname"]; !ok {
		p.add("%s.hostname is required: the host name of your telemetry server, such as telemetry.example.com", path)
	} else {
		checkHostname(p, path+".hostname", v)
	}
	if v, ok := c["port"]; ok {
		if n, isInt := integer(v); !isInt || n < 1 || n > 65535 {
			p.add("%s.port must be an integer from 1 to 65535 (got %s)", path, describe(v))
		}
	}
	if v, ok := c["ca"]; ok {
		checkCA(p, path+".ca", v)
	}
	if v, ok := c["exp"]; ok {
		if n, isInt := integer(v); !isInt {
			p.add("%s.exp must be an integer number of seconds since 1970-01-01 UTC (got %s)", path, describe(v))
		} else if n <= now.Unix() {
			p.add("%s.exp must be in the future (got %d, which is %s; now is %s)", path, n,
				time.Unix(n, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	if v, ok := c["fields"]; !ok {
		p.add("%s.fields is required: an object mapping signal names to {\"interval_seconds\": N}; a config without fields streams nothing", path)
	} else {
		checkFields(p, path+".fields", v)
	}
	if v, ok := c["alert_types"]; ok {
		if list, isList := v.([]any); !isList {
			p.add("%s.alert_types must be a list of strings (got %s)", path, describe(v))
		} else {
			for i, item := range list {
				if _, isStr := item.(string); !isStr {
					p.add("%s.alert_types[%d] must be a string (got %s)", path, i, describe(item))
				}
			}
		}
	}
	if v, ok := c["prefer_typed"]; ok {
		if _, isBool := v.(bool); !isBool {
			p.add("%s.prefer_typed must be true or false (got %s)", path, describe(v))
		}
	}
	if v, ok := c["delivery_policy"]; ok {
		if _, isStr := v.(string); !isStr {
			p.add("%s.delivery_policy must be a string (got %s)", path, describe(v))
		}
	}
}

func checkHostname(p *problems, path string, v any) {
	const rule = "must be a host name without scheme, path or port, such as telemetry.example.com"
	s, ok := v.(string)
	switch {
	case !ok:
		p.add("%s %s (got %s)", path, rule, describe(v))
	case s == "":
		p.add("%s %s (got an empty string)", path, rule)
	case strings.Contains(s, "://"):
		p.add("%s %s; remove the scheme (got %s)", path, rule, describe(v))
	case strings.ContainsAny(s, "/?#"):
		p.add("%s %s; remove the path (got %s)", path, rule, describe(v))
	case strings.Contains(s, ":"):
		p.add("%s %s; put the port in config.port (got %s)", path, rule, describe(v))
	case !isHostname(s):
		p.add("%s %s (got %s)", path, rule, describe(v))
	}
}

// isHostname reports whether s is a DNS host name as RFC 1123 §2.1 allows it: dot-separated
// labels of 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen, at most
// 253 characters, no trailing dot (TLS server names carry none, RFC 6066 §3). IPv4 addresses
// pass too.
func isHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func checkCA(p *problems, path string, v any) {
	s, ok := v.(string)
	if !ok {
		p.add("%s must be a PEM string of one or more certificates (got %s)", path, describe(v))
		return
	}
	rest := []byte(s)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			p.add("%s must hold only certificates (PEM block %d is %q)", path, n, block.Type)
			return
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			p.add("%s: PEM block %d is not a valid certificate", path, n)
			return
		}
	}
	switch {
	case n == 0:
		p.add("%s must be a PEM string of one or more certificates (found no PEM block; newlines inside a JSON string are written \\n)", path)
	case len(bytes.TrimSpace(rest)) > 0:
		p.add("%s has text after its last certificate that is not a PEM block", path)
	}
}

func checkFields(p *problems, path string, v any) {
	fields, ok := v.(map[string]any)
	if !ok {
		p.add("%s must be an object mapping signal names to {\"interval_seconds\": N} (got %s)", path, describe(v))
		return
	}
	if len(fields) == 0 {
		p.add("%s must name at least one signal; a config without fields streams nothing", path)
		return
	}
	// Sorted, so the message is the same on every call.
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		fpath := fieldPath(path, name)
		if name == "" {
			p.add("%s has an empty signal name", path)
			continue
		}
		f, ok := fields[name].(map[string]any)
		if !ok {
			p.add("%s must be an object such as {\"interval_seconds\": 60} (got %s)", fpath, describe(fields[name]))
			continue
		}
		if iv, ok := f["interval_seconds"]; !ok {
			p.add("%s.interval_seconds is required: a positive integer", fpath)
		} else if n, isInt := integer(iv); !isInt || n < 1 {
			p.add("%s.interval_seconds must be a positive integer (got %s)", fpath, describe(iv))
		}
		if md, ok := f["minimum_delta"]; ok && !isNumber(md) {
			p.add("%s.minimum_delta must be a number (got %s)", fpath, describe(md))
		}
		if ri, ok := f["resend_interval_seconds"]; ok {
			if n, isInt := integer(ri); !isInt || n < 1 {
				p.add("%s.resend_interval_seconds must be a positive integer (got %s)", fpath, describe(ri))
			}
		}
	}
}

// fieldPath names a signal in messages: config.fields.BatteryLevel, or config.fields["odd name"]
// when the name is not a plain identifier.
func fieldPath(path, name string) string {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return path + "[" + quote(name) + "]"
		}
	}
	if name == "" {
		return path + `[""]`
	}
	return path + "." + name
}

func checkVINs(p *problems, v any, present bool) []string {
	const rule = "a list of 17-character VINs (uppercase letters and digits)"
	if !present {
		p.add("vins is required: %s", rule)
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		p.add("vins must be %s (got %s)", rule, describe(v))
		return nil
	}
	if len(list) == 0 {
		p.add("vins must name at least one vehicle")
		return nil
	}
	vins := make([]string, 0, len(list))
	for i, item := range list {
		s, ok := item.(string)
		if !ok || !(isVIN(s) || isVehicleID(s)) {
			p.add("vins[%d] must be a 17-character VIN of uppercase letters and digits (got %s)", i, describe(item))
			continue
		}
		vins = append(vins, s)
	}
	return vins
}

// isVehicleID reports whether s is a numeric Fleet API vehicle id: a positive 64-bit integer
// without leading zeros, not 17 characters long (a VIN of digits only is a VIN).
func isVehicleID(s string) bool {
	if s == "" || s[0] == '0' || len(s) == 17 || len(s) > 19 {
		return false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n > 0
}

// isVIN reports whether s is 17 uppercase ASCII letters or digits. It does not check the
// check digit or the letters I, O and Q that real VINs never use: the Fleet API answers for
// those itself.
func isVIN(s string) bool {
	if len(s) != 17 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// decodeBody decodes a body that must be exactly one JSON object. what names the body in
// messages ("request body", "config") and example shows the expected shape.
func decodeBody(body []byte, what, example string) (map[string]any, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, apierr.New(http.StatusBadRequest, ErrorWord,
			fmt.Sprintf("%s is empty; send a JSON object such as %s", what, example))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, apierr.Wrap(err, http.StatusBadRequest, ErrorWord, what+" is not valid JSON: "+jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, apierr.Wrap(err, http.StatusBadRequest, ErrorWord,
			fmt.Sprintf("%s has data after its JSON object, starting at byte %d", what, dec.InputOffset()))
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, apierr.New(http.StatusBadRequest, ErrorWord,
			fmt.Sprintf("%s must be a JSON object such as %s (got %s)", what, example, describe(v)))
	}
	return m, nil
}

// jsonProblem describes a decoding error without quoting the body.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("it has an unexpected character at byte %d", syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "it ends too early"
	default:
		return err.Error()
	}
}

// problems collects the rule violations of one request, in the order found.
type problems struct {
	msgs  []string
	extra int
}

func (p *problems) add(format string, args ...any) {
	if len(p.msgs) == maxProblems {
		p.extra++
		return
	}
	p.msgs = append(p.msgs, fmt.Sprintf(format, args...))
}

// err returns nil when nothing was found, or one 400 *apierr.Error whose message joins every
// problem with "; ".
func (p *problems) err() error {
	if len(p.msgs) == 0 {
		return nil
	}
	msg := strings.Join(p.msgs, "; ")
	if p.extra > 0 {
		msg += fmt.Sprintf("; and %d more", p.extra)
	}
	return apierr.New(http.StatusBadRequest, ErrorWord, msg)
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}

// maxExactFloat is 2^53, beyond which a float64 no longer holds every integer.
const maxExactFloat = 1 << 53

// integer returns v as an int64 when v is an integer: a json.Number written without fraction or
// exponent that fits in 64 bits, a float64 with no fractional part within ±2^53, or a Go
// integer type.
func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := strconv.ParseInt(string(n), 10, 64)
		return i, err == nil
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > maxExactFloat {
			return 0, false
		}
		return int64(n), true
	case int:
		return int64(n), true
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

// isNumber reports whether v is a JSON number: a valid json.Number (any size), a finite
// float64, or a Go integer.
func isNumber(v any) bool {
	switch n := v.(type) {
	case json.Number:
		// json.Marshal refuses a json.Number that is not a JSON number literal, so check the same
		// grammar here; ParseFloat's range error still means the literal is well formed.
		_, err := strconv.ParseFloat(string(n), 64)
		return (err == nil || errors.Is(err, strconv.ErrRange)) && json.Valid([]byte(n))
	case float64:
		return !math.IsNaN(n) && !math.IsInf(n, 0)
	case int, int64, int32, uint32, uint64:
		return true
	}
	return false
}

// describe names a JSON value for an error message: its type and, for scalars, its value,
// shortened so that a message stays one readable line.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "the string " + quote(x)
	case json.Number:
		return "the number " + shorten(string(x))
	case float64, int, int64, int32, uint32, uint64:
		return fmt.Sprintf("the number %v", x)
	case bool:
		return strconv.FormatBool(x)
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("a value of Go type %T", v)
}

func quote(s string) string { return strconv.Quote(shorten(s)) }

// shorten cuts s to at most 64 bytes on a rune boundary, marking the cut with "…".
func shorten(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
