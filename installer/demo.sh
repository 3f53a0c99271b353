#!/usr/bin/env bash
# vmctl demo, standalone on Linux (no VM yet): builds vmctl-guest and the
# built-in `hello` image, starts the engine in namespaces of its own, runs
# `hello` (busybox httpd serving a page) with port 8080 published, and fetches
# the page through the published port.
#
#   installer/demo.sh          set up and run
#   installer/demo.sh stop     stop the engine and remove its state
set -euo pipefail

STATE=${VMCTL_DEMO_DIR:-/tmp/vmctl-demo}
SOCK=$STATE/docker.sock
cd "$(dirname "$0")/.."
REPO=$(pwd)

stop() {
    if [ -f "$STATE/holder.pid" ]; then
        DOCKER_HOST=unix://$SOCK docker rm -f hello >/dev/null 2>&1 || true
        [ -f "$STATE/engine.pid" ] && kill "$(cat "$STATE/engine.pid")" 2>/dev/null || true
        # unshare --fork ignores SIGTERM; SIGKILL it (--kill-child takes its child along).
        kill -KILL "$(cat "$STATE/holder.pid")" 2>/dev/null || true
    fi
    rm -rf "$STATE"
}

if [ "${1:-}" = "stop" ]; then
    stop
    echo "vmctl demo stopped"
    exit 0
fi

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (namespaces, cgroups, mounts)" >&2; exit 1; }

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v docker >/dev/null || { echo "demo.sh: the docker CLI is needed (apt-get install docker-cli, or docker.io)" >&2; exit 1; }

echo "== building vmctl-guest and the hello image"
cargo build --release -q -p vmctl-guest -p vmctl-image
stop
mkdir -p "$STATE/images"
./target/release/vmctl-image hello --busybox /bin/busybox --out "$STATE/images/hello.tar"

echo "== starting the engine in its own mount and network namespaces"
unshare -m -n --propagation private --fork --kill-child sh -c 'ip link set lo up; exec sleep infinity' \
    </dev/null >/dev/null 2>&1 &
echo $! > "$STATE/holder.pid"
for _ in $(seq 100); do
    NSPID=$(cat /proc/"$(cat "$STATE/holder.pid")"/task/*/children 2>/dev/null | awk '{print $1}')
    [ -n "$NSPID" ] && break
    sleep 0.05
done
nsenter -t "$NSPID" -m -n -- "$REPO/target/release/vmctl-guest" serve --root "$STATE/root" \
    --host "unix://$SOCK" --builtin-images "$STATE/images" --cgroup-parent vmctl-demo \
    </dev/null >"$STATE/engine.log" 2>&1 &
echo $! > "$STATE/engine.pid"
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "demo.sh: the engine did not start:" >&2; tail -5 "$STATE/engine.log" >&2; exit 1; }

export DOCKER_HOST=unix://$SOCK
echo "== docker run -d --name hello -p 8080:80 hello"
docker run -d --name hello -p 8080:80 hello
docker port hello
echo "== the page, fetched at 127.0.0.1:8080 in the engine's network namespace"
page=
for _ in $(seq 50); do
    page=$(nsenter -t "$NSPID" -n -- /bin/busybox wget -qO- http://127.0.0.1:8080/ 2>/dev/null) && break
    sleep 0.1
done
[ -n "$page" ] || { echo "demo.sh: no page at 127.0.0.1:8080:" >&2; tail -5 "$STATE/engine.log" >&2; exit 1; }
echo "$page"
cat <<MSG

The engine is running. Use it with any Docker client:
    export DOCKER_HOST=unix://$SOCK
    docker ps; docker logs hello; docker exec -it hello sh
    nsenter -t $NSPID -n /bin/busybox wget -qO- http://127.0.0.1:8080/   # the engine runs in its own network namespace
Stop it with: installer/demo.sh stop
MSG
