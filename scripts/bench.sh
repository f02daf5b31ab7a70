#!/usr/bin/env bash
# Runs the proxy benchmark (issue 7): the Fleet API simulator, our proxy and Tesla's reference
# tesla-http-proxy v0.4.1 on loopback, each row measured for every contender in the same run.
# Prints one table and, unless -quick, writes it to docs/benchmarks.md.
#
#   scripts/bench.sh                         # full run, 10 s per row and contender, 30 s for the
#                                            # CPU-per-request step at 64 connections (~10 minutes)
#   scripts/bench.sh -quick                  # 1 s rows, writes nothing (CI, development)
#   scripts/bench.sh -rows pass,commands -duration 5s -out /tmp/bench.md
#
# Flags: -duration, -rounds, -quick, -rows (pass, telemetry, commands, conns1000, slowpass,
# slowcmds, upload, fleet, replicas, all), -out. The replicas row needs redis-server and haproxy.
# The fleet row (issue 12: 50,000 new VINs, then a restart over 100,000 saved sessions) takes a
# few minutes of its own.
# Everything listens on and dials 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_COMMAND="scripts/bench.sh${*:+ $*}" exec go run ./bench "$@"
