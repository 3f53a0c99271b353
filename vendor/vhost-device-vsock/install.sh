#!/usr/bin/env bash
# Installs this patched vhost-device-vsock (VMCTL-PATCH.md) with cargo into
# ~/.cargo/bin, unless the one on PATH or there already is it (its
# --version says +vmctl.N). Used by tests/install-deps, tests/arm64 and
# installer/demo.sh.
#
#   vendor/vhost-device-vsock/install.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
want=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/Cargo.toml" | head -1)
for bin in "$(command -v vhost-device-vsock || true)" "$HOME/.cargo/bin/vhost-device-vsock"; do
    if [ -n "$bin" ] && [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$want"; then
        exit 0
    fi
done
echo "installing vhost-device-vsock $want (vendor/vhost-device-vsock: 0.3.0 with vmctl's fixes for a paused VM and for a stream busy both ways)"
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
cargo install -q --locked --force --path "$here" --target-dir "$target"
