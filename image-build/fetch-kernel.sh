#!/usr/bin/env bash
# Downloads the pinned kernel package (image-build/pins.json) from Debian's
# archive into DIR (default target/vm-inputs) and prints its path last.
# When the archive no longer has that version (Debian moves on with security
# updates), it fetches the version linux-image-amd64 depends on now and says
# loudly that the build will be unpinned (vmctl-image vm --unpinned).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/vm-inputs}
mkdir -p "$dir"
chmod 0777 "$dir"   # apt's _apt sandbox user writes there
read -r package version < <(python3 -c 'import json;k=json.load(open("image-build/pins.json"))["kernel"];print(k["package"],k["version"])')
cd "$dir"
if ! apt-get download -q "$package=$version" >/dev/null 2>&1; then
    current=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    echo "fetch-kernel: WARNING: $package=$version is gone from the archive; using $current (the image will be UNPINNED)" >&2
    apt-get download -q "$current" >/dev/null
    package=$current
fi
ls -1 "$(pwd)"/"$package"_*.deb | tail -1
