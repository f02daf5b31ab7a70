#!/usr/bin/env bash
# fuzz.sh — run every fuzz target in the module for a while each and report its executions.
#
# Usage: scripts/fuzz.sh [seconds-per-target] [package-pattern]
#   seconds-per-target  default 60
#   package-pattern     default ./...
# Environment: FUZZ_PARALLEL sets go test -parallel (default: GOMAXPROCS).
#
# Targets are found with `go test -list 'Fuzz.*'`. Each one runs alone with
# `go test -run '^$' -fuzz '^Name$' -fuzztime Ns`; a failing input is written by go test under the
# package's testdata/fuzz/Name/ and the script exits non-zero. CI runs it for a few seconds per
# target; a plain `go test` runs every target's seed corpus as ordinary tests.
set -uo pipefail

seconds="${1:-60}"
pattern="${2:-./...}"
cd "$(dirname "$0")/.."

parallel=()
if [ -n "${FUZZ_PARALLEL:-}" ]; then
	parallel=(-parallel "$FUZZ_PARALLEL")
fi

# go test -list prints a package's matching names, then "ok <package> <time>". Packages that do
# not build are reported on stderr and skipped.
targets=()
names=()
while IFS= read -r line; do
	case "$line" in
	Fuzz*) names+=("$line") ;;
	ok*)
		pkg="$(awk '{print $2}' <<<"$line")"
		for n in "${names[@]}"; do targets+=("$pkg $n"); done
		names=()
		;;
	*) names=() ;;
	esac
done < <(go test -list 'Fuzz.*' "$pattern" 2> >(grep -v '^ok\|^?' | sed 's/^/fuzz.sh: go test -list: /' >&2))

if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets found in $pattern" >&2
	exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each"

failed=0
summary=()
for t in "${targets[@]}"; do
	pkg="${t% *}"
	name="${t#* }"
	echo "=== $name ($pkg)"
	out="$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "${seconds}s" "${parallel[@]}" "$pkg" 2>&1)"
	status=$?
	# Progress lines look like "fuzz: elapsed: 1m0s, execs: 123456 (2057/sec), new interesting: …".
	last="$(grep -E 'fuzz: elapsed: .*execs: [0-9]+' <<<"$out" | tail -n 1)"
	execs="$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")"
	# The last line's own rate is for its last few seconds (0/sec while minimizing): report the
	# mean over the whole run instead.
	rate=""
	if [ -n "$execs" ]; then
		rate="$(awk -v n="$execs" -v s="$seconds" 'BEGIN { printf "%.0f/sec mean", n / s }')"
	fi
	result=ok
	if [ "$status" -ne 0 ]; then
		result=FAIL
		failed=1
		echo "$out" | tail -n 40
	fi
	echo "$last"
	summary+=("$(printf '%-6s %-28s %-44s execs=%-10s %s' "$result" "$name" "$pkg" "${execs:-?}" "${rate:-}")")
done

echo
echo "fuzz.sh summary (${seconds}s per target):"
printf '%s\n' "${summary[@]}"
exit "$failed"
