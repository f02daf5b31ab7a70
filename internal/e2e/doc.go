// Package e2e holds the proxy's end-to-end hardening tests: bad input sent through the running
// proxy over real TLS, upstream faults, fuzz targets for command parameters and routing, secrets
// kept out of logs and error texts, and a load test gated behind E2E_LOAD=1 (scripts/load.sh).
// Every test talks to loopback only: the simulator (internal/fleetsim) or httptest servers play
// the Fleet API, and proxies without a fixed upstream dial through a recorder that sends every
// connection to a loopback server. The package has no non-test code.
package e2e
