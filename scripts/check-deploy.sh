#!/usr/bin/env bash
# check-deploy.sh: check the deployment files under deploy/ offline (no cluster, no container
# engine, no systemd running):
#
#   1. deploy/systemd/tesla-proxy.service
#      - systemd-analyze verify, in a throw-away root that holds a copy of the system's units
#        and a stub executable at each Exec*= path (verify insists the binary exists); any
#        warning fails, since verify itself exits 0 on unknown keys and bad values
#      - systemd-analyze security --offline: the exposure score must stay at or below 2.0
#      - the ExecStart flags and Environment= defaults pass "proxy -check-config"
#      - deploy/systemd/env.example names exactly the environment variables "proxy -help" lists
#   2. deploy/kubernetes/sidecar.yaml and replicas.yaml, deploy/Dockerfile and its ignore file: the Go tests of
#      deploy/validate (a module of its own): strict decoding into the Kubernetes API types
#      (k8s.io/api), reference and hardening checks, "proxy -check-config" on the sidecar's
#      flags, and BuildKit's Dockerfile parser and linter
#   3. deploy/haproxy/haproxy.cfg: haproxy -c, with a throw-away certificate (skipped without
#      haproxy or openssl)
#
#   scripts/check-deploy.sh
#
# Exits non-zero when a check fails. A check whose tool is missing (systemd-analyze, go) or
# whose Go modules cannot be downloaded is skipped with a message, not failed. The last line
# counts the checks: "check-deploy: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

unit=deploy/systemd/tesla-proxy.service
envfile=deploy/systemd/env.example
passed=0 failed=0 skipped=0
pass() { echo "PASS  $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }
skip() { echo "SKIP  $*"; skipped=$((skipped + 1)); }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The proxy binary, for -check-config and -help. go build is cached after CI's go vet/test.
proxy=""
if command -v go >/dev/null; then
  if go build -o "$tmp/proxy" ./cmd/proxy 2>"$tmp/build.log"; then
    proxy="$tmp/proxy"
  else
    fail "go build ./cmd/proxy (needed for the flag checks):"; sed 's/^/      /' "$tmp/build.log"
  fi
fi

# ExecStart's arguments, one per line, with the unit's specifiers replaced by what systemd
# gives them: %d the credentials directory, %S the state directory root.
exec_start_args() {
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$unit" |
    sed -n 's/^ExecStart=//p' |
    tr -s ' \t' '\n' | tail -n +2 | grep -v '^$' |
    sed -e 's|%d|/run/credentials/tesla-proxy.service|g' -e 's|%S|/var/lib|g'
}

# ---- 1. systemd ------------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null; then
  skip "systemd unit: systemd-analyze is not installed (apt-get install systemd)"
else
  root="$tmp/root"
  units=/usr/lib/systemd/system
  [ -d "$units" ] || units=/lib/systemd/system
  mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system"
  # verify builds the start transaction, which needs sysinit.target and friends in the root.
  cp -a "$units" "$root/usr/lib/systemd/system"
  cp "$unit" "$root/etc/systemd/system/"
  # A stub for every executable the unit names (ExecStart=, ExecReload=, ...), prefixes such
  # as - @ + ! : stripped.
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$unit" | sed -n 's/^Exec[A-Za-z]*=[-@+!:]*//p' | awk '{print $1}' |
    while read -r exe; do
      case "$exe" in /*) mkdir -p "$root$(dirname "$exe")"; printf '#!/bin/sh\nexit 0\n' >"$root$exe"; chmod 755 "$root$exe" ;; esac
    done

  out=$(systemd-analyze verify --man=no --root="$root" tesla-proxy.service 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && [ -z "$out" ]; then
    pass "systemd-analyze verify $unit"
  else
    fail "systemd-analyze verify $unit (exit $rc):"; echo "$out" | sed "s|$root/etc/systemd/system/|$(dirname "$unit")/|; s/^/      /"
  fi

  # Exposure 0.0 (locked down) to 10.0 (unprotected); --threshold takes tenths.
  out=$(systemd-analyze security --offline=yes --threshold=20 --root="$root" --no-pager tesla-proxy.service 2>&1)
  rc=$?
  level=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: *//p')
  if [ $rc -eq 0 ]; then
    pass "systemd-analyze security: exposure $level (at most 2.0)"
  else
    fail "systemd-analyze security (exit $rc): exposure $level, want at most 2.0:"; echo "$out" | grep '✗' | sed 's/^/      /'
  fi
fi

if [ -z "$proxy" ]; then
  skip "unit flags and env.example: no proxy binary (go is not installed or the build failed)"
else
  mapfile -t args < <(exec_start_args)
  mapfile -t envs < <(sed -n 's/^Environment=//p' "$unit")
  if out=$(env -i PATH="$PATH" "${envs[@]}" "$proxy" "${args[@]}" -check-config 2>&1); then
    pass "proxy -check-config with the unit's ExecStart flags and Environment= ($out)"
  else
    fail "proxy ${args[*]} -check-config (env ${envs[*]}):"; echo "$out" | sed 's/^/      /'
  fi

  known=$("$proxy" -help 2>&1 | grep -o 'env [A-Z][A-Z0-9_]*' | awk '{print $2}' | sort -u)
  listed=$(grep -oE '^#?[A-Z][A-Z0-9_]*=' "$envfile" | tr -d '#=' | sort -u)
  missing=$(comm -23 <(echo "$known") <(echo "$listed"))
  extra=$(comm -13 <(echo "$known") <(echo "$listed"))
  if [ -z "$known" ]; then
    fail "proxy -help lists no environment variables"
  elif [ -z "$missing$extra" ]; then
    pass "$envfile lists all $(echo "$known" | wc -l) environment variables of proxy -help"
  else
    fail "$envfile: missing: $(echo ${missing:-none}); not known to the proxy: $(echo ${extra:-none})"
  fi
fi

# ---- 2. Kubernetes manifest and Dockerfile -----------------------------------------------------
if ! command -v go >/dev/null; then
  skip "Kubernetes manifest and Dockerfile: go is not installed"
elif ! (cd deploy/validate && go mod download) >"$tmp/mod.log" 2>&1; then
  skip "Kubernetes manifest and Dockerfile: the Go modules of deploy/validate could not be downloaded:"
  sed 's/^/      /' "$tmp/mod.log" | tail -5
else
  if (cd deploy/validate && PROXY_BIN="$proxy" go test -count=1 -v ./...) >"$tmp/test.log" 2>&1; then
    pass "deploy/validate: $(grep -c '^--- PASS' "$tmp/test.log") tests (sidecar.yaml against k8s.io/api, proxy flags, Dockerfile lint)"
    grep -E '^\s+\S+_test.go:[0-9]+: ' "$tmp/test.log" | sed 's/^\s*/      /'
  else
    fail "deploy/validate:"; grep -vE '^(=== RUN|\s*--- PASS|PASS$)' "$tmp/test.log" | sed 's/^/      /'
  fi
  # The multi-replica example, through the same manifest and proxy-flag checks.
  if (cd deploy/validate && MANIFEST=../kubernetes/replicas.yaml PROXY_BIN="$proxy" go test -count=1 -v -run 'TestManifest|TestProxyContainer' ./...) >"$tmp/replicas.log" 2>&1; then
    pass "deploy/kubernetes/replicas.yaml against k8s.io/api and proxy -check-config"
  else
    fail "deploy/kubernetes/replicas.yaml:"; grep -vE '^(=== RUN|\s*--- PASS|PASS$)' "$tmp/replicas.log" | sed 's/^/      /'
  fi
fi

# ---- 3. HAProxy example --------------------------------------------------------------------------
# haproxy -c, with the example's certificate paths pointed at a throw-away certificate.
hacfg=deploy/haproxy/haproxy.cfg
if ! command -v haproxy >/dev/null || ! command -v openssl >/dev/null; then
  skip "$hacfg: haproxy or openssl is not installed"
elif ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=tesla-proxy \
    -keyout "$tmp/ha.key" -out "$tmp/ha.crt" -days 1 >/dev/null 2>&1; then
  fail "$hacfg: openssl could not make a test certificate"
else
  cat "$tmp/ha.crt" "$tmp/ha.key" >"$tmp/ha.pem"
  sed -e "s#/etc/haproxy/certs/tesla-proxy.pem#$tmp/ha.pem#" -e "s#/etc/haproxy/certs/replicas-ca.pem#$tmp/ha.crt#" "$hacfg" >"$tmp/haproxy.cfg"
  if haproxy -c -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1; then
    pass "$hacfg: haproxy -c"
  else
    fail "$hacfg: haproxy -c:"; sed 's/^/      /' "$tmp/haproxy.log"
  fi
fi

echo "check-deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
