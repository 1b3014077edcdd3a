#!/usr/bin/env bash
# Makes a CA and certificates for a split deployment over mutual TLS (openssl):
#   deploy/certs.sh OUT_DIR store.berth.internal registry.berth.internal node1.berth.internal ...
# writes OUT_DIR/ca.pem, OUT_DIR/<first label>.pem + -key.pem per host, and client.pem/-key.pem
# for the berth CLI. Keep ca-key.pem offline.
set -euo pipefail
OUT=${1:?usage: certs.sh OUT_DIR HOST...}
shift
mkdir -p "$OUT"
cd "$OUT"
[ -f ca.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=Berth CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
issue() { # name cn san extendedKeyUsage
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 -out "$1.pem" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4") 2>/dev/null
  rm -f "$1.csr"
  echo "wrote $OUT/$1.pem"
}
for host in "$@"; do
  issue "${host%%.*}" "$host" "DNS:$host" serverAuth,clientAuth
done
issue client berth-cli "DNS:berth-cli" clientAuth
