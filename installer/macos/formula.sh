#!/usr/bin/env bash
# Renders the Homebrew formula (vmctl.rb.in) for a release: fills the
# version, the download base URL and the sha256 of each tarball that
# installer/macos/build.sh made, and prints the formula.
#
#   installer/macos/formula.sh VERSION BASE_URL TARBALL_DIR [HOMEPAGE] > vmctl.rb
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 VERSION BASE_URL TARBALL_DIR [HOMEPAGE]" >&2; exit 2; }
version=$1 base=${2%/} dir=$3 homepage=${4:-$2}
sum() {
    local file="$dir/vmctl-$version-macos-$1.tar.gz"
    [ -f "$file" ] || { echo "formula.sh: no $file" >&2; exit 1; }
    if command -v shasum >/dev/null; then shasum -a 256 "$file"; else sha256sum "$file"; fi | cut -d' ' -f1
}
arm64=$(sum arm64) amd64=$(sum amd64)
sed -e "s|@VERSION@|$version|g" -e "s|@BASE_URL@|$base|g" -e "s|@HOMEPAGE@|$homepage|g" \
    -e "s|@SHA256_ARM64@|$arm64|g" -e "s|@SHA256_AMD64@|$amd64|g" \
    "$(dirname "$0")/vmctl.rb.in"
