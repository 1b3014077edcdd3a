#!/usr/bin/env bash
# Runs the whole Berth test suite on a Debian machine (as root): installs what the tests need,
# builds every binary (the integration tests start the real service binaries), runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins
cargo test --workspace
