#!/usr/bin/env bash
# Prints the issue-15 figures, counted by the Fleet API simulator: upstream calls of a command to
# a sleeping car with -auto-wake, of commands by numeric vehicle id, and of 50 identical
# concurrent GETs with and without -coalesce-reads. Everything runs on 127.0.0.1.
#
#   scripts/savings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -v -run 'TestAutoWake|TestNumericVehicleIDs|TestCoalesceReads|TestLegacyFromFleetStatus|TestMonthlyBudget' ./internal/e2e/ |
	grep -E '^\s+(--- (PASS|FAIL)|[a-z_]+_test\.go:[0-9]+: )' || true
