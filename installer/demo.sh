#!/usr/bin/env bash
# vmctl demo on Linux: installs what is missing, builds vmctl, vmctl-guest and
# the VM image, boots the VM (`vmctl machine start`), runs the built-in `hello`
# web container with port 8080 published, and fetches its page from the
# desktop's own 127.0.0.1:8080 (desktop → host daemon → vsock → VM → container).
#
#   installer/demo.sh          set up and run
#   installer/demo.sh stop     remove the container and stop the VM
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
export VMCTL_VM_IMAGE=$REPO/target/vm
VMCTL=$REPO/target/release/vmctl

if [ "${1:-}" = "stop" ]; then
    "$VMCTL" rm -f hello >/dev/null 2>&1 || true
    "$VMCTL" machine stop
    exit 0
fi

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (apt-get, and the guest image needs root-owned files)" >&2; exit 1; }

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
dpkg -s "libseccomp-dev:$(dpkg --print-architecture)" >/dev/null 2>&1 || need+=(libseccomp-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v nft >/dev/null || need+=(nftables)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v strip >/dev/null || need+=(binutils)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
    echo "== installing qemu-system-x86"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi
# 0.3.0 with vmctl's fixes: a paused VM, a stream busy both ways (vendor/vhost-device-vsock/VMCTL-PATCH.md).
vendor/vhost-device-vsock/install.sh
if ! command -v virtiofsd >/dev/null && [ ! -x "$HOME/.cargo/bin/virtiofsd" ]; then
    echo "== installing virtiofsd (the VM's shares of your files)"
    dpkg -s libcap-ng-dev >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libcap-ng-dev >/dev/null; }
    cargo install -q virtiofsd --locked --version 1.14.0
fi

echo "== building vmctl, vmctl-guest and the VM image"
cargo build --release -q -p vmctl -p vmctl-guest -p vmctl-image
deb=$(ls target/vm-inputs/linux-image-*.deb 2>/dev/null | head -1 || true)
[ -n "$deb" ] || deb=$(image-build/fetch-kernel.sh target/vm-inputs | tail -1)
unpinned=()
pinned=$(python3 -c 'import json;print(json.load(open("image-build/pins.json"))["kernel"]["sha256"])')
[ "$(sha256sum "$deb" | cut -d' ' -f1)" = "$pinned" ] || unpinned=(--unpinned)
target/release/vmctl-image vm --guest target/release/vmctl-guest --kernel-deb "$deb" \
    --out target/vm "${unpinned[@]}"

echo "== vmctl machine start"
"$VMCTL" machine start
"$VMCTL" rm -f hello >/dev/null 2>&1 || true
echo "== vmctl run -d --name hello -p 8080:80 hello"
"$VMCTL" run -d --name hello -p 8080:80 hello
"$VMCTL" ps
"$VMCTL" port ls
echo "== curl http://127.0.0.1:8080/ (on this desktop)"
page=
for _ in $(seq 50); do
    page=$(curl -fsS http://127.0.0.1:8080/ 2>/dev/null) && [ -n "$page" ] && break
    sleep 0.2
done
[ -n "$page" ] || { echo "demo.sh: no page at 127.0.0.1:8080" >&2; "$VMCTL" machine logs | tail -5 >&2; exit 1; }
echo "$page"
cat <<MSG

The VM is running. Use it with any Docker client:
    $("$VMCTL" machine env | head -1)
    docker ps; docker logs hello; docker exec -it hello sh
    curl http://127.0.0.1:8080/; $VMCTL port ls
    $VMCTL machine status; $VMCTL machine ssh
Stop it with: installer/demo.sh stop
MSG
