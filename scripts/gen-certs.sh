#!/usr/bin/env bash
# gen-certs.sh: create a local certificate authority and a TLS server certificate signed by it,
# for running the proxy on a laptop or a private network.
#
#   scripts/gen-certs.sh [-d DIR] [NAME ...]
#
# Writes into DIR (default: certs/ beside this script's parent), never overwriting an existing CA:
#   ca.pem, ca-key.pem        the local CA (trust ca.pem in your app; keep ca-key.pem private)
#   tls-cert.pem, tls-key.pem the proxy's certificate chain and key (-cert, -tls-key)
# The server certificate's names are localhost, 127.0.0.1, ::1 and every NAME given (host names
# or IP addresses). Clients then trust ca.pem; several popular clients refuse a bare self-signed
# leaf certificate, which is why this makes a CA.
set -euo pipefail

dir="$(cd "$(dirname "$0")/.." && pwd)/certs"
if [ "${1:-}" = "-d" ]; then
  dir="$2"
  shift 2
fi
case "${1:-}" in -h|--help) sed -n '2,13p' "$0"; exit 0 ;; esac

command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077

sans="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
    sans="$sans,IP:$name"
  else
    sans="$sans,DNS:$name"
  fi
done

if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca-key.pem" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca-key.pem"
  openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days 3650 \
    -subj "/CN=tesla-proxy local CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem" 2>/dev/null
  echo "created a local CA: $dir/ca.pem"
else
  echo "reusing the local CA: $dir/ca.pem"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/tls-key.pem"
openssl req -new -key "$tmp/tls-key.pem" -subj "/CN=localhost" -out "$tmp/req.csr" 2>/dev/null
cat > "$tmp/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans
EXT
openssl x509 -req -in "$tmp/req.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
  -days 397 -sha256 -extfile "$tmp/ext.cnf" -out "$tmp/leaf.pem" 2>/dev/null
cat "$tmp/leaf.pem" "$dir/ca.pem" > "$dir/tls-cert.pem"
mv "$tmp/tls-key.pem" "$dir/tls-key.pem"
rm -f "$dir/ca.srl"
chmod 600 "$dir/tls-key.pem" "$dir/ca-key.pem"
chmod 644 "$dir/tls-cert.pem" "$dir/ca.pem"
echo "wrote $dir/tls-cert.pem and $dir/tls-key.pem for: ${sans//DNS:/}"
