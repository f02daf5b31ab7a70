package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/jws"
)

const jwsUsage = `Usage:
  proxy jws sign -key-file FILE [-aud AUDIENCE] < config.json
  proxy jws verify [-pub FILE] < token

sign reads one JSON object on standard input: either a fleet telemetry config
  {"hostname":"…","port":443,"fields":{"BatteryLevel":{"interval_seconds":60}},…}
or a whole fleet_telemetry_config request body (an object with a "vins" or "config" key)
  {"vins":["…"],"config":{…}}
whose VINs are checked too and whose config is signed. It checks the config as the proxy
does, sets "iss" to the key's public key and "aud" to AUDIENCE (replacing any values the
config had), and prints the token and a newline. Numbers are signed exactly as written.

verify reads a token on standard input and prints its claims as indented JSON. With -pub the
token must be signed by that key and name it in "iss". Without -pub it is checked against the
key named in its own "iss": that proves the token was not altered, not who signed it.

Exit status: 0 success, 1 invalid input, key or signature, 2 usage error.
`

// maxJWSInput bounds what sign and verify read from standard input. Real configs, CA chain
// included, are a few kilobytes.
const maxJWSInput = 1 << 20

// runJWS implements "proxy jws sign|verify". args are the arguments after "jws". It returns the
// exit status: 0 success, 1 invalid input, key or signature, 2 usage error.
func runJWS(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return jwsCommand{now: time.Now}.run(args, stdin, stdout, stderr)
}

// jwsCommand holds what runJWS takes from the environment, so tests can fix the clock.
type jwsCommand struct {
	// now is the time a config's "exp" must lie after.
	now func() time.Time
}

func (c jwsCommand) run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "proxy jws: missing subcommand (sign or verify)\n\n"+jwsUsage)
		return 2
	}
	switch args[0] {
	case "sign":
		return c.sign(args[1:], stdin, stdout, stderr)
	case "verify":
		return c.verify(args[1:], stdin, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, jwsUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "proxy jws: unknown subcommand %q (want sign or verify)\n\n%s", args[0], jwsUsage)
		return 2
	}
}

// newJWSFlagSet returns a flag set that prints errors and usage on stderr and never exits.
func newJWSFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("proxy jws "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, jwsUsage+"\nFlags of "+name+":\n")
		fs.PrintDefaults()
	}
	return fs
}

// parseJWSFlags parses args and maps the outcome to an exit status: done is true when the
// caller should return code at once (help was asked for, or the flags were wrong).
func parseJWSFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true // fs has already printed the error and the usage.
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q; input is read from standard input\n", fs.Name(), fs.Arg(0))
		return 2, true
	}
	return 0, false
}

func (c jwsCommand) sign(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newJWSFlagSet("sign", stderr)
	keyFile := fs.String("key-file", "", "command-signing private key, PEM (SEC1 or PKCS8), P-256 (required)")
	aud := fs.String("aud", jws.TelemetryAudience, "audience (\"aud\" claim) of the token")
	if code, done := parseJWSFlags(fs, args, stderr); done {
		return code
	}
	if *keyFile == "" {
		fmt.Fprintln(stderr, "proxy jws sign: -key-file is required")
		return 2
	}
	if *aud == "" {
		fmt.Fprintln(stderr, "proxy jws sign: -aud must not be empty")
		return 2
	}

	input, err := readJWSInput(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "proxy jws sign: %v\n", err)
		return 1
	}
	config, err := c.parseConfig(input)
	if err != nil {
		fmt.Fprintf(stderr, "proxy jws sign: %s\n", clientMessage(err))
		return 1
	}
	key, err := protocol.LoadPrivateKey(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "proxy jws sign: cannot load -key-file %s: %v\n", *keyFile, err)
		return 1
	}
	token, err := jws.Sign(key, config, *aud)
	if err != nil {
		fmt.Fprintf(stderr, "proxy jws sign: %v\n", err)
		return 1
	}
	var replaced []string
	for _, k := range []string{"aud", "iss"} {
		if _, ok := config[k]; ok {
			replaced = append(replaced, k)
		}
	}
	if len(replaced) > 0 {
		fmt.Fprintf(stderr, "proxy jws sign: note: replaced the config's %q with the signer's values\n", replaced)
	}
	fmt.Fprintln(stdout, token)
	return 0
}

// parseConfig decodes and checks either a bare config or a whole request body, telling them
// apart by the request's "vins" and "config" keys.
func (c jwsCommand) parseConfig(input []byte) (map[string]any, error) {
	var probe map[string]json.RawMessage
	if json.Unmarshal(input, &probe) == nil {
		_, hasVINs := probe["vins"]
		_, hasConfig := probe["config"]
		if hasVINs || hasConfig {
			req, err := jws.ParseTelemetryRequest(input, c.now())
			if err != nil {
				return nil, err
			}
			return req.Config, nil
		}
	}
	// Anything else, including input that is not a JSON object, gets the config's own messages.
	return jws.ParseTelemetryConfig(input, c.now())
}

func (c jwsCommand) verify(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newJWSFlagSet("verify", stderr)
	pubFile := fs.String("pub", "", "key the token must be signed by: PEM public key (PKIX), or a private key file")
	if code, done := parseJWSFlags(fs, args, stderr); done {
		return code
	}

	input, err := readJWSInput(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "proxy jws verify: %v\n", err)
		return 1
	}
	token := string(bytes.TrimSpace(input))
	if token == "" {
		fmt.Fprintln(stderr, "proxy jws verify: no token on standard input")
		return 1
	}
	var claims map[string]any
	if *pubFile != "" {
		pub, err := protocol.LoadPublicKey(*pubFile)
		if err != nil {
			fmt.Fprintf(stderr, "proxy jws verify: cannot load -pub %s: %v\n", *pubFile, err)
			return 1
		}
		claims, err = jws.Verify(token, pub)
		if err != nil {
			fmt.Fprintf(stderr, "proxy jws verify: token is not valid: %v\n", err)
			return 1
		}
	} else {
		claims, err = jws.Verify(token, nil)
		if err != nil {
			fmt.Fprintf(stderr, "proxy jws verify: token is not valid: %v\n", err)
			return 1
		}
		fmt.Fprintln(stderr, "proxy jws verify: signature matches the key named in iss; this proves the token was not altered, not who signed it (use -pub to require a key)")
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false) // a CA chain or host name reads better unescaped
	enc.SetIndent("", "  ")
	if err := enc.Encode(claims); err != nil {
		fmt.Fprintf(stderr, "proxy jws verify: %v\n", err)
		return 1
	}
	return 0
}

// readJWSInput reads all of r, refusing more than maxJWSInput bytes.
func readJWSInput(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxJWSInput+1))
	if err != nil {
		return nil, fmt.Errorf("reading standard input: %w", err)
	}
	if len(b) > maxJWSInput {
		return nil, fmt.Errorf("standard input is larger than %d bytes", maxJWSInput)
	}
	return b, nil
}

// clientMessage returns the human sentence of an *apierr.Error, or err's text otherwise.
func clientMessage(err error) string {
	if e, ok := errors.AsType[*apierr.Error](err); ok {
		return e.Msg
	}
	return err.Error()
}
