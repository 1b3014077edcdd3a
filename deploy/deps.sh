#!/usr/bin/env bash
# Installs what building and testing Berth needs on a Debian machine (run as root).
# Used by deploy/quickstart.sh, deploy/test.sh and .ci/run, so the list lives in one place.
set -euo pipefail

PACKAGES=(
  # build
  build-essential pkg-config ca-certificates curl git openssl protobuf-compiler libseccomp-dev
  # peers and fixtures the integration tests and benchmarks use
  docker-registry skopeo runc crun podman buildah umoci busybox-static hyperfine
  # networking of containers and simulated hosts
  iproute2 nftables
)

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust: Debian 12's rustc is too old (1.63); Berth needs Rust >= 1.85 from rustup
# (https://rustup.rs), found on PATH or in ~/.cargo/bin.
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found: install Rust >= 1.85 with rustup, then run this again" >&2
  exit 1
fi
