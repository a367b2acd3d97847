#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The strata demo, from a fresh Debian machine (as root): install packages, build, start a local
# Distribution registry, push a demo image, pull it into a strata store, mount it, stack its layer
# directories with overlayfs, and run a program from the image.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it mounts FUSE and overlayfs)" >&2; exit 1; }

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

say "installing packages"
tools/install-deps.sh >/dev/null
say "building"
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
strata="$PWD/build/strata"

work=$(mktemp -d /tmp/strata-demo.XXXXXX)
port=${STRATA_DEMO_PORT:-5000}
reg_pid=""
cleanup() {
	set +e
	mountpoint -q "$work/rootfs" && umount "$work/rootfs"
	mountpoint -q "$work/mnt" && "$strata" umount "$work/mnt"
	[ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

say "starting a Distribution registry on 127.0.0.1:$port"
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null || { cat "$work/registry.log"; exit 1; }

say "generating and pushing 127.0.0.1:$port/demo:latest (busybox + /hello.txt)"
/usr/bin/python3 tools/mkfixture.py demo --out "$work/layout" >/dev/null
/usr/bin/python3 tools/mkfixture.py push --layout "$work/layout" --registry "127.0.0.1:$port" >/dev/null

say "strata pull"
"$strata" --store "$work/store" pull "127.0.0.1:$port/demo:latest"

say "strata mount $work/mnt"
mkdir -p "$work/mnt" "$work/rootfs" "$work/empty"
"$strata" --store "$work/store" mount "$work/mnt"
ls "$work/mnt/layers"

say "stacking the layers with overlayfs"
# lowerdir lists the top layer first; ':' inside a path is escaped for overlayfs.
lower=$("$strata" --store "$work/store" ls --json | /usr/bin/python3 -c '
import json, sys
img = json.load(sys.stdin)[0]
mnt = sys.argv[1]
print(":".join((mnt + "/layers/" + l["digest"]).replace(":", "\\:") for l in reversed(img["layers"])))
' "$work/mnt")
[ "$(echo "$lower" | grep -o 'layers/' | wc -l)" -ge 2 ] || lower="$lower:$work/empty"
# nosuid,nodev: the image's setuid programs and device nodes do not work on the host
mount -t overlay overlay -o "ro,nosuid,nodev,lowerdir=$lower" "$work/rootfs"

say "running /bin/sh -c 'cat /hello.txt' from the image"
chroot "$work/rootfs" /bin/sh -c 'cat /hello.txt; echo "busybox from the image: $(/bin/busybox | /bin/busybox head -n 1)"'

say "strata stats"
"$strata" --store "$work/store" stats
say "done: unmounting"
