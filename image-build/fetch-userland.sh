#!/usr/bin/env bash
# Downloads the pinned userland packages of ARCH (image-build/pins.json:
# busybox-static, nftables, e2fsprogs and the libraries they and vmctl-guest
# need) from Debian's archive into DIR, for `vmctl-image vm --arch ARCH
# --userland DIR`. Nothing is installed: the builder unpacks them itself.
# A version gone from the archive (Debian's security updates) is replaced by
# the current one, loudly: the image will be UNPINNED (--unpinned).
# Needs `dpkg --add-architecture ARCH && apt-get update` once.
#
#   image-build/fetch-userland.sh DIR ARCH
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: fetch-userland.sh DIR ARCH}
arch=${2:?usage: fetch-userland.sh DIR ARCH}
mkdir -p "$dir"
chmod 0777 "$dir"   # apt's _apt sandbox user writes there
pins=$(python3 -c '
import json, sys
for p in json.load(open("image-build/pins.json"))[sys.argv[1]]["userland"]:
    print(p["package"], p["version"], p["sha256"])' "$arch")
cd "$dir"
unpinned=0
while read -r package version sha256; do
    have=$(ls -1 "${package}"_*_"$arch".deb 2>/dev/null | tail -1 || true)
    if [ -n "$have" ] && [ "$(sha256sum "$have" | cut -d' ' -f1)" = "$sha256" ]; then
        continue
    fi
    rm -f "${package}"_*_"$arch".deb
    if ! apt-get download -q "$package:$arch=$version" >/dev/null 2>&1; then
        echo "fetch-userland: WARNING: $package=$version is gone from the archive; using the current one (the image will be UNPINNED)" >&2
        apt-get download -q "$package:$arch" >/dev/null
        unpinned=1
    fi
done <<< "$pins"
echo "fetch-userland: $(ls -1 ./*_"$arch".deb | wc -l) packages in $(pwd)$([ $unpinned = 1 ] && echo ' (UNPINNED)')"
