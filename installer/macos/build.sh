#!/usr/bin/env bash
# Builds vmctl for macOS: one binary per architecture (arm64, x86_64) and a
# universal one (lipo), each signed with vmctl.entitlements (ad-hoc by
# default; a Developer ID with the hardened runtime when
# VMCTL_SIGN_IDENTITY names one), and a release tarball per architecture plus
# a universal one, each with the VM image(s) it boots.
#
#   installer/macos/build.sh --images DIR [--out DIR]
#
#   --images DIR   VM images built on Linux (tests/run, tests/arm64 or the
#                  workflow's `images` job): DIR/amd64/ and DIR/arm64/, each
#                  what `vmctl-image vm` writes. A Mac cannot build them (the
#                  image is made from Debian's packages).
#   --out DIR      where the binaries and tarballs go (default target/macos)
#   VMCTL_SIGN_IDENTITY   codesign identity (default "-": ad-hoc, which
#                  runs on the machine that built it and on CI)
#   VMCTL_NOTARY_PROFILE  with a Developer ID: a `notarytool` keychain
#                  profile; the universal tarball's binary is notarized
#
# Runs on macOS only (xcrun, lipo, codesign). The tarballs unpack to
# bin/vmctl and share/vmctl/vm-<arch>/, where vmctl looks for its image
# (host/src/binaries.rs); the Homebrew formula installs them as they are.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

images='' out=target/macos
while [ $# -gt 0 ]; do
    case "$1" in
        --images) images=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "build.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
[ "$(uname -s)" = Darwin ] || { echo "build.sh: runs on macOS only (codesign, lipo)" >&2; exit 1; }
[ -n "$images" ] || { echo "build.sh: --images DIR is required (DIR/amd64, DIR/arm64)" >&2; exit 2; }
for arch in amd64 arm64; do
    [ -f "$images/$arch/initramfs.img" ] || { echo "build.sh: no VM image in $images/$arch" >&2; exit 1; }
done

identity=${VMCTL_SIGN_IDENTITY:--}
entitlements=$repo/installer/macos/vmctl.entitlements
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p "$out"

sign() {
    local flags=(--force --sign "$identity" --entitlements "$entitlements")
    # A Developer ID signature gets the hardened runtime and a secure
    # timestamp (what notarization requires); ad-hoc gets neither.
    [ "$identity" = - ] || flags+=(--options runtime --timestamp)
    codesign "${flags[@]}" "$1"
    codesign --verify --strict "$1"
    # The entitlement must really be in the signature, or VZ refuses to start.
    codesign -d --entitlements - "$1" 2>/dev/null | grep -q com.apple.security.virtualization \
        || { echo "build.sh: $1 lacks the virtualization entitlement" >&2; exit 1; }
}

# (macOS ships bash 3.2: no associative arrays.)
rust_target() { case "$1" in arm64) echo aarch64-apple-darwin ;; amd64) echo x86_64-apple-darwin ;; esac; }
bins=()
for arch in arm64 amd64; do
    target=$(rust_target "$arch")
    rustup target add "$target" >/dev/null 2>&1 || true
    cargo build --release --locked -p vmctl --target "$target"
    mkdir -p "$out/$arch"
    cp "target/$target/release/vmctl" "$out/$arch/vmctl"
    sign "$out/$arch/vmctl"
    bins+=("$out/$arch/vmctl")
done
mkdir -p "$out/universal"
lipo -create -output "$out/universal/vmctl" "${bins[@]}"
sign "$out/universal/vmctl"
lipo -info "$out/universal/vmctl"

# One tarball per architecture with that architecture's image, and a
# universal one with both.
package() { # name binary arch...
    local name=$1 binary=$2; shift 2
    local stage
    stage=$(mktemp -d)
    mkdir -p "$stage/bin" "$stage/share/vmctl"
    cp "$binary" "$stage/bin/vmctl"
    for arch in "$@"; do cp -R "$images/$arch" "$stage/share/vmctl/vm-$arch"; done
    cp README.md "$stage/share/vmctl/README.md"
    tar -C "$stage" -czf "$out/$name.tar.gz" bin share
    rm -rf "$stage"
    shasum -a 256 "$out/$name.tar.gz"
}
package "vmctl-$version-macos-arm64" "$out/arm64/vmctl" arm64
package "vmctl-$version-macos-amd64" "$out/amd64/vmctl" amd64
package "vmctl-$version-macos-universal" "$out/universal/vmctl" arm64 amd64

if [ "$identity" != - ] && [ -n "${VMCTL_NOTARY_PROFILE:-}" ]; then
    # notarytool takes a zip of the signed binary; a bare executable cannot
    # be stapled, so Gatekeeper checks the ticket online.
    ditto -c -k "$out/universal/vmctl" "$out/vmctl-notarize.zip"
    xcrun notarytool submit "$out/vmctl-notarize.zip" --keychain-profile "$VMCTL_NOTARY_PROFILE" --wait
fi
echo "build.sh: binaries and tarballs in $out"
