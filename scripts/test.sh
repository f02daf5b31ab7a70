#!/usr/bin/env bash
# test.sh: the project's test command (the README's, and CI's through .ci/run).
#
#   scripts/test.sh [go test flags…]
#
# Some tests run real programs on loopback: redis-server (sessions shared by replicas), haproxy
# (the multi-replica end-to-end test), openssl (scripts/gen-certs.sh), curl, and headless
# chromium (the simulator dashboard's browser test). When one is
# missing and this runs as root, it is installed from Debian's packages with apt-get; as another
# user, the tests that need it skip with a message saying what to install (in CI, with CI=true,
# they fail instead). Then it runs every test with the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package
declare -A need=([redis-server]=redis-server [haproxy]=haproxy [openssl]=openssl [curl]=curl [chromium]=chromium)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing ${missing[*]} (not root, or no apt-get): the tests that need them will skip outside CI"
  fi
fi

exec go test -race ./... "$@"
