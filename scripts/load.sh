#!/usr/bin/env bash
# load.sh — run the end-to-end load test (internal/e2e TestLoadMixedTraffic): 1,000 client
# connections, each its own TCP+TLS connection, for 30 s of mixed traffic (pass-through reads and
# posts, commands to 100 simulated vehicles, telemetry configs) against the proxy and the
# simulator, all on loopback. It prints one LOAD SUMMARY line: connections, requests by kind,
# errors, peak heap and RSS, duration.
#
# Usage: scripts/load.sh [connections] [seconds]
# Environment: RACE=1 adds -race (slow, and the race detector's 8,128-goroutine limit is close at
# 1,000 connections); E2E_LOAD_MAX_HEAP_MB bounds the heap (default 1024).
set -euo pipefail

conns="${1:-1000}"
seconds="${2:-30}"
cd "$(dirname "$0")/.."

# Every connection costs file descriptors on both ends (client, proxy, and proxy → simulator).
want=$((conns * 4 + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
	hard="$(ulimit -Hn)"
	if [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ]; then
		ulimit -n "$want"
	else
		ulimit -n "$hard"
		echo "load.sh: warning: open-file limit is $hard, below the $want this run wants" >&2
	fi
fi

race=()
if [ "${RACE:-0}" = 1 ]; then
	race=(-race)
fi

E2E_LOAD=1 E2E_LOAD_CONNS="$conns" E2E_LOAD_SECONDS="$seconds" \
	go test "${race[@]}" -count=1 -v -timeout "$((seconds + 300))s" \
	-run '^TestLoadMixedTraffic$' ./internal/e2e/ 2>&1 |
	tee /dev/stderr | grep -E 'LOAD SUMMARY' | sed 's/^ *load_test.go:[0-9]*: //' || {
	echo "load.sh: the load test failed (see above)" >&2
	exit 1
}
