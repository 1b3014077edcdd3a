#!/usr/bin/env bash
# Berth quickstart on a fresh Debian machine (as root): install the dependencies, build Berth,
# put a busybox image (made from Debian's busybox-static) into a registry on loopback, then pull
# and run it through the local stack, which `berth` starts by itself on first use.
#
#   bash deploy/quickstart.sh
#
# Environment: BERTH_ROOT (state directory, default /var/lib/berth), QUICKSTART_PORT (registry
# port on 127.0.0.1, default 5000), BERTH_PROFILE (cargo profile: debug (default) or release).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

echo "==> Installing dependencies (apt)"
source deploy/deps.sh

PROFILE=${BERTH_PROFILE:-debug}
echo "==> Building Berth ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --workspace --bins --release
else
  cargo build --workspace --bins
fi
BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/$PROFILE"
BERTH="$BIN_DIR/berth"
export BERTH_ROOT=${BERTH_ROOT:-/var/lib/berth}

WORK=$(mktemp -d /tmp/berth-quickstart.XXXXXX)
REGISTRY_PID=
cleanup() {
  if [ -n "$REGISTRY_PID" ]; then kill "$REGISTRY_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=${QUICKSTART_PORT:-5000}
echo "==> Starting a registry on 127.0.0.1:$PORT (docker-registry)"
mkdir -p "$WORK/registry"
cat > "$WORK/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break
  if ! kill -0 "$REGISTRY_PID" 2>/dev/null; then cat "$WORK/registry.log" >&2; exit 1; fi
  sleep 0.1
done

echo "==> Making a busybox image from /bin/busybox (busybox-static)"
# An OCI image layout with one gzip layer: /bin/busybox, a symlink per applet, /etc/passwd.
ROOTFS="$WORK/rootfs"
LAYOUT="$WORK/layout"
mkdir -p "$ROOTFS"/{bin,etc,tmp,root} "$LAYOUT/blobs/sha256"
chmod 1777 "$ROOTFS/tmp"
cp /bin/busybox "$ROOTFS/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ROOTFS/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$ROOTFS" -cf "$WORK/layer.tar" .
DIFF_ID=$(sha256sum "$WORK/layer.tar" | cut -d' ' -f1)
gzip -n -c "$WORK/layer.tar" >"$WORK/layer.tar.gz"
blob() { # file -> prints "<hex> <size>" after storing it in the layout
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  cp "$1" "$LAYOUT/blobs/sha256/$hex"
  echo "$hex $size"
}
read -r LAYER_HEX LAYER_SIZE < <(blob "$WORK/layer.tar.gz")
ARCH=$(dpkg --print-architecture)
cat >"$WORK/config.json" <<JSON
{"architecture":"$ARCH","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$DIFF_ID"]},"history":[{"created_by":"berth quickstart: busybox-static"}]}
JSON
read -r CONFIG_HEX CONFIG_SIZE < <(blob "$WORK/config.json")
cat >"$WORK/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$CONFIG_HEX","size":$CONFIG_SIZE},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$LAYER_HEX","size":$LAYER_SIZE}]}
JSON
read -r MANIFEST_HEX MANIFEST_SIZE < <(blob "$WORK/manifest.json")
echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
cat >"$LAYOUT/index.json" <<JSON
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$MANIFEST_HEX","size":$MANIFEST_SIZE,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}
JSON
IMAGE="127.0.0.1:$PORT/busybox:latest"
skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:latest" "docker://$IMAGE"
echo "    pushed $IMAGE"

echo "==> Berth (local stack in $BERTH_ROOT)"
"$BERTH" system info

# ---------------------------------------------------------------------------------------------
# MAIN JOB: pull and run the image through the local stack (issues 3 and 4).
# COORDINATOR: this is the spot to extend the demo (e.g. `berth images`, `berth ps -a`).
"$BERTH" pull "$IMAGE"
"$BERTH" run --rm "$IMAGE" echo hello
"$BERTH" system df
# ---------------------------------------------------------------------------------------------

echo "==> Done. The local stack keeps running; stop it with: $BERTH system stop"
