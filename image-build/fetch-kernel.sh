#!/usr/bin/env bash
# Downloads the pinned kernel package (image-build/pins.json) of ARCH
# (amd64, the default, or arm64) from Debian's archive into DIR (default
# target/vm-inputs) and prints its path last.
# When the archive no longer has that version (Debian moves on with security
# updates), it fetches the version linux-image-ARCH depends on now and says
# loudly that the build will be unpinned (vmctl-image vm --unpinned).
#
#   image-build/fetch-kernel.sh [DIR] [ARCH]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/vm-inputs}
arch=${2:-amd64}
mkdir -p "$dir"
chmod 0777 "$dir"   # apt's _apt sandbox user writes there
read -r package version < <(python3 -c '
import json, sys
pins = json.load(open("image-build/pins.json"))
k = pins["kernel"] if sys.argv[1] == "amd64" else pins[sys.argv[1]]["kernel"]
print(k["package"], k["version"])' "$arch")
# The host's own architecture needs no qualifier; another one does (and
# `dpkg --add-architecture` beforehand).
qualifier=""
[ "$arch" = "$(dpkg --print-architecture)" ] || qualifier=":$arch"
cd "$dir"
if ! apt-get download -q "$package$qualifier=$version" >/dev/null 2>&1; then
    current=$(apt-cache depends "linux-image-$arch$qualifier" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    current=${current%:*}
    echo "fetch-kernel: WARNING: $package=$version is gone from the archive; using $current (the image will be UNPINNED)" >&2
    apt-get download -q "$current$qualifier" >/dev/null
    package=$current
fi
ls -1 "$(pwd)"/"$package"_*.deb | tail -1
