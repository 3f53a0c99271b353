#!/usr/bin/env bash
# The VM smoke test for macOS (the GitHub workflow's `smoke` job, or by hand
# on a Mac): with an installed or built vmctl and its image, boots the
# machine with Virtualization.framework, then checks what a user does first:
# a container's output and exit code through the docker CLI, a published
# port fetched from the desktop, a volume that survives `machine restart`.
# It prints the boot time and cleans up (the machine is removed) even on
# failure. Needs: vmctl on PATH (or VMCTL), the docker CLI, curl.
#
#   installer/macos/smoke.sh
#
# It is a script, not the cargo e2e suite, because that suite (vmctl-tests)
# builds the Linux-only guest; on Linux the same checks are in
# tests/e2e/vm.rs.
set -euo pipefail

VMCTL=${VMCTL:-vmctl}
machine=smoke-$$
export VMCTL_MACHINE=$machine
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
cleanup() {
    "$VMCTL" machine logs "$machine" 2>/dev/null | tail -40 >&2 || true
    "$VMCTL" machine rm -f "$machine" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$VMCTL" version || true
"$VMCTL" machine init "$machine" --cpus 2 --memory 2048
start=$(date +%s)
"$VMCTL" machine start "$machine"
echo "smoke: machine started in $(( $(date +%s) - start )) s (wall clock, with the CLI)"
"$VMCTL" machine status "$machine"
eval "$("$VMCTL" machine env "$machine")"

# Output and exit code.
out=$(docker run --rm hello sh -c 'echo from-the-vm; uname -m; exit 7') && code=0 || code=$?
[ "$code" = 7 ] || fail "docker run exit code $code, want 7"
case "$out" in *from-the-vm*) ;; *) fail "docker run output: $out" ;; esac
echo "smoke: docker run: exit 7 and output ok ($(echo "$out" | tail -1))"

# A published port, fetched from the desktop.
docker run -d --name web -p 127.0.0.1:18080:80 hello >/dev/null
page=
for _ in $(seq 1 50); do
    page=$(curl -fsS --max-time 2 http://127.0.0.1:18080/ 2>/dev/null) && break
    sleep 0.2
done
case "$page" in *"Hello from vmctl"*) ;; *) fail "published port 18080 answered: ${page:-nothing}" ;; esac
echo "smoke: published port ok"
docker rm -f web >/dev/null

# A volume that survives a restart of the machine.
docker volume create keep >/dev/null
docker run --rm -v keep:/data hello sh -c 'echo kept > /data/file'
"$VMCTL" machine restart "$machine"
got=$(docker run --rm -v keep:/data hello cat /data/file)
[ "$got" = kept ] || fail "volume after restart: $got"
echo "smoke: volume survives restart"

echo "smoke: PASS"
