"""The one image tests/sdk-suite gives both engines under every name the
SDK's suite uses: the built-in busybox image `hello` (built by
`vmctl-image hello`) with alpine's config and a layer of what the suite
expects of alpine. The same bytes for both engines, so the same image id.
"""

import hashlib
import io
import json
import os
import tarfile

# Every image the suite names (base.py's TEST_IMG, `alpine`, the builds'
# `FROM busybox`): one image, the built-in busybox image `hello` with
# alpine's config (`Cmd ["/bin/sh"]`, no exposed port) and a layer of what
# the suite expects of alpine (its users, such as `postgres` for `exec -u`,
# and its directories, such as /var/opt for `exec -w`). Built here, the same
# bytes for both engines.
IMAGE_TAGS = ["alpine:3.10", "alpine:latest", "busybox:latest"]
ALPINE_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
adm:x:3:4:adm:/var/adm:/sbin/nologin
lp:x:4:7:lp:/var/spool/lpd:/sbin/nologin
sync:x:5:0:sync:/sbin:/bin/sync
mail:x:8:12:mail:/var/spool/mail:/sbin/nologin
operator:x:11:0:operator:/root:/sbin/nologin
ftp:x:21:21::/var/lib/ftp:/sbin/nologin
sshd:x:22:22:sshd:/dev/null:/sbin/nologin
games:x:35:35:games:/usr/games:/sbin/nologin
postgres:x:70:70::/var/lib/postgresql:/bin/sh
ntp:x:123:123:NTP:/var/empty:/sbin/nologin
guest:x:405:100:guest:/dev/null:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
"""
ALPINE_GROUP = """\
root:x:0:root
bin:x:1:root,bin,daemon
daemon:x:2:root,bin,daemon
sys:x:3:root,bin,adm
adm:x:4:root,adm,daemon
tty:x:5:
disk:x:6:root,adm
lp:x:7:lp
wheel:x:10:root
mail:x:12:mail
ftp:x:21:
sshd:x:22:
games:x:35:
postgres:x:70:
ntp:x:123:
users:x:100:games
nogroup:x:65533:
nobody:x:65534:
"""
ALPINE_DIRS = ["home", "media", "mnt", "opt", "run", "srv", "usr", "usr/local", "var", "var/empty",
               "var/lib", "var/local", "var/opt", "var/spool"]


def tar_entry(tar, name, data=None, mode=0o755):
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.mode = 0, 0, 0, mode
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build_suite_image(images):
    """The suite's image (see IMAGE_TAGS) as a docker-archive tarball."""
    blobs = {}
    with tarfile.open(images / "hello.tar") as hello:
        manifest = json.load(hello.extractfile("manifest.json"))[0]
        config = json.load(hello.extractfile(manifest["Config"]))
        for layer in manifest["Layers"]:
            blobs[layer] = hello.extractfile(layer).read()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar_entry(tar, "etc")
        tar_entry(tar, "etc/group", ALPINE_GROUP.encode(), 0o644)
        tar_entry(tar, "etc/passwd", ALPINE_PASSWD.encode(), 0o644)
        for directory in ALPINE_DIRS:
            tar_entry(tar, directory)
    digest = hashlib.sha256(layer.getvalue()).hexdigest()
    blobs[f"blobs/sha256/{digest}"] = layer.getvalue()
    config["config"] = {"Env": config["config"]["Env"], "Cmd": ["/bin/sh"]}
    config["rootfs"]["diff_ids"].append(f"sha256:{digest}")
    config["history"].append({"created": config["created"], "created_by": "tests/sdk-suite: alpine's users"
                              " and directories"})
    config_data = json.dumps(config, sort_keys=True).encode()
    config_name = f"blobs/sha256/{hashlib.sha256(config_data).hexdigest()}"
    manifest = [{"Config": config_name, "RepoTags": IMAGE_TAGS, "Layers": [*manifest["Layers"],
                                                                        f"blobs/sha256/{digest}"]}]
    out = images / "suite.tar"
    tmp = images / f".suite.tar.{os.getpid()}"
    with tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar_entry(tar, "blobs")
        tar_entry(tar, "blobs/sha256")
        for name, data in sorted([*blobs.items(), (config_name, config_data)]):
            tar_entry(tar, name, data, 0o644)
        tar_entry(tar, "manifest.json", json.dumps(manifest).encode(), 0o644)
    tmp.rename(out)
    return out
