// Command proxy is a signing proxy for the Tesla Fleet API, a drop-in replacement for Tesla's
// tesla-http-proxy. See README.md for how to run it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/teslaproxy/proxy/config"
	"github.com/teslaproxy/proxy/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A heap goal of at least 8-32 MiB by the allocation rate, GOGC 50 above it, set after every
	// collection (gc.go). A GOGC set in the environment wins.
	if os.Getenv("GOGC") == "" {
		go tuneGC(ctx)
	}
	// One processor while the load fits in a fraction of one, the default beyond (procs.go). A
	// GOMAXPROCS set in the environment wins.
	if os.Getenv("GOMAXPROCS") == "" {
		go tuneProcs(ctx)
	}
	os.Exit(realMain(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}

// usage is printed for "proxy help" and after flag errors.
const usage = `Usage:
  proxy [flags]                  run the signing proxy (proxy -h lists the flags)
  proxy -dev                     run it locally against the built-in simulator
  proxy keygen -out FILE         create a command-signing key and print its public key
  proxy keygen -key-name NAME    the same, into a system keyring (-keyring-type, -keyring-file-dir;
                                 TESLA_KEYRING_PASSWORD); with -key-file FILE, move that key there
  proxy pubkey -key-file FILE    print the public key of a command-signing key
  proxy pubkey -key-name NAME    the same, for a key in a system keyring
  proxy jws sign|verify ...      sign or verify a fleet telemetry config offline
  proxy simulate ...             run the Fleet API simulator on its own
  proxy health [-url URL]        exit 0 when the proxy's /health answers 200 (container checks)
`

// realMain runs one invocation and returns the exit code: 0 success, 1 failure, 2 usage error.
// Errors are reported here, once, as one line on stderr.
func realMain(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "jws":
			return runJWS(args[1:], stdin, stdout, stderr)
		case "simulate":
			return runSimulate(ctx, args[1:], stdout, stderr)
		case "keygen":
			return runKeygen(args[1:], getenv, stdout, stderr)
		case "pubkey":
			return runPubkey(args[1:], getenv, stdout, stderr)
		case "health":
			return runHealth(ctx, args[1:], getenv, stdout, stderr)
		case "help":
			fmt.Fprint(stdout, usage)
			return 0
		}
	}
	cfg, err := config.Load(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, "\n"+usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "proxy: %v\n", err)
		// A bad command line is a usage error; a bad file or environment variable is a bad
		// configuration, like Validate's problems (so -check-config exits 1 for it).
		if _, usage := errors.AsType[*config.UsageError](err); usage {
			return 2
		}
		return 1
	}
	if cfg.CheckConfig {
		if err := cfg.Validate(); err != nil {
			fmt.Fprintf(stderr, "proxy: configuration is not valid:\n%v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "configuration is valid")
		return 0
	}
	logger, stopLogger := app.NewLogger(cfg.Verbose, stderr)
	err = run(ctx, cfg, logger, stdout)
	stopLogger() // flush what the proxy logged before the last line below
	if err != nil {
		fmt.Fprintf(stderr, "proxy: %v\n", err)
		return 1
	}
	return 0
}
