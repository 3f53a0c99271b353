"""Engines for tests/sdk-suite, each in a mount and network namespace of
its own: vmctl's `vmctl-guest serve` and Debian's dockerd, started the way
tests/src/lib.rs's `Engine` and tests/src/dockerd.rs's `Dockerd` start them,
and stopped so that nothing of them is left (containers, processes, mounts,
cgroups, state directory), whatever failed before.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The API version both engines are spoken to in: dockerd 20.10's.
API_VERSION = "1.41"


class HarnessError(Exception):
    """A step of the harness (not a test) failed."""


def log(message):
    print(f"sdk-suite: {message}", file=sys.stderr, flush=True)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.unix_path))
        self.sock = sock


class Sandbox:
    """An engine in a mount and network namespace of its own, with its state
    in `dir` and its containers under the cgroup parent `cgroup_parent`."""

    name = ""

    def __init__(self, bridge, keep, binary=None):
        """`bridge`: `default` or `none`; `keep`: where the engine's log is
        copied before its state directory goes; `binary`: the engine's."""
        base = Path(os.environ.get("VMCTL_TEST_TMPDIR", "/tmp"))
        self.dir = Path(tempfile.mkdtemp(prefix=f"vmctl-sdk-{self.name}-", dir=base))
        self.socket = self.dir / "docker.sock"
        self.cgroup_parent = self.dir.name.replace(".", "")
        self.bridge = bridge
        self.keep = keep
        self.binary = binary
        self.log_path = self.dir / "engine.log"
        self.process = None

    def command(self, images):
        """The engine's command line (`images`: the built-in images' dir)."""
        raise NotImplementedError

    def start(self, images, suite_image, tags):
        """Starts the engine; waits for `_ping`; loads the suite's image and
        checks it is there under each of `tags`."""
        log(f"starting {self.name} in {self.dir}")
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                ["unshare", "-m", "-n", "--propagation", "private", "--fork", "--kill-child",
                 "sh", "-c", f"ip link set lo up; mount --make-rshared /; {self.prelude()}exec \"$@\"",
                 "sh", *self.command(images)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                # Not in the terminal's process group: Ctrl-C reaches the
                # harness, which then stops the engine in order.
                start_new_session=True)
        deadline = time.monotonic() + 120
        while not self.ping():
            if self.process.poll() is not None:
                raise HarnessError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name} did not come up:\n{self.log_tail()}")
            time.sleep(0.1)
        body = suite_image.read_bytes()
        self.expect("POST", "/images/load?quiet=1", 200, body, {"Content-Type": "application/x-tar"})
        for tag in tags:
            self.expect("GET", f"/images/{tag}/json", 200)

    def prelude(self):
        return ""

    def api(self, method, path, body=None, headers=None, timeout=120):
        conn = UnixHTTPConnection(self.socket, timeout)
        try:
            conn.request(method, f"/v{API_VERSION}{path}", body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    def expect(self, method, path, status, body=None, headers=None):
        got, data = self.api(method, path, body, headers)
        if got != status:
            raise HarnessError(f"{self.name}: {method} {path} answered {got}: {data[:500]!r}")
        return data

    def ping(self):
        try:
            return self.api("GET", "/_ping", timeout=5)[0] == 200
        except OSError:
            return False

    def log_tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def docker_host(self):
        return f"unix://{self.socket}"

    # -- teardown: every step runs, whatever the one before did --

    def stop(self):
        errors = []
        steps = [self.remove_containers, self.stop_engine, self.kill_leftovers, self.unmount_leaks,
                 self.remove_cgroups, self.remove_dir]
        for step in steps:
            try:
                step()
            except Exception as error:  # noqa: BLE001 - teardown keeps going
                errors.append(f"{step.__name__}: {error}")
        for error in errors:
            log(f"{self.name} teardown: {error}")
        return errors

    def remove_containers(self):
        if self.process is None or self.process.poll() is not None or not self.ping():
            return
        _, data = self.api("GET", "/containers/json?all=1")
        for container in json.loads(data):
            self.api("DELETE", f"/containers/{container['Id']}?force=1&v=1")

    def namespace_pid(self):
        """The unshare holder's child: the engine, inside the namespaces."""
        if self.process is None:
            return None
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def stop_engine(self):
        pid = self.namespace_pid()
        self.mnt_ns = self.mount_namespace(pid)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 30
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)

    @staticmethod
    def mount_namespace(pid):
        """The mount namespace of `pid` (as `mnt:[inode]`), or None."""
        try:
            return os.readlink(f"/proc/{pid}/ns/mnt") if pid is not None else None
        except OSError:
            return None

    def cgroup_dirs(self):
        """This engine's cgroup directories, deepest first, in every hierarchy."""
        found = []
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            parent = hierarchy / self.cgroup_parent
            if parent.is_dir():
                for root, dirs, _ in os.walk(parent):
                    found.extend(Path(root) / d for d in dirs)
                found.append(parent)
        return sorted(found, key=lambda p: -len(p.parts))

    def leftover_pids(self):
        pids = set()
        mnt_ns = getattr(self, "mnt_ns", None)
        for cgroup in self.cgroup_dirs():
            try:
                pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
            except OSError:
                pass
        # The engine's mount namespace (engine, containerd, shims, vmctl's
        # monitors) and processes that name the state directory.
        marker = str(self.dir).encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                if mnt_ns is not None and self.mount_namespace(entry.name) == mnt_ns:
                    pids.add(int(entry.name))
                try:
                    if marker in (entry / "cmdline").read_bytes():
                        pids.add(int(entry.name))
                except OSError:
                    pass
        pids.discard(os.getpid())
        return pids

    def kill_leftovers(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while True:
            pids = self.leftover_pids()
            if not pids:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"processes left: {sorted(pids)}")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)

    def unmount_leaks(self):
        """The mounts lived in the private mount namespace, gone with its
        last process; unmount anything that leaked into ours all the same."""
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split(" ")[4]
            if point == str(self.dir) or point.startswith(f"{self.dir}/"):
                points.append(point)
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)

    def remove_cgroups(self):
        deadline = time.monotonic() + 20
        for cgroup in self.cgroup_dirs():
            while True:
                try:
                    cgroup.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def remove_dir(self):
        self.keep.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            shutil.copyfile(self.log_path, self.keep / "engine.log")
        shutil.rmtree(self.dir)


class Vmctl(Sandbox):
    name = "vmctl"

    def command(self, images):
        args = [str(self.binary), "serve", "--root", str(self.dir / "root"),
                "--host", self.docker_host(), "--cgroup-parent", self.cgroup_parent,
                "--builtin-images", str(images)]
        if self.bridge == "none":
            args += ["--bridge", "none", "--ip-forward=false", "--ip-masq=false"]
        return args


class Dockerd(Sandbox):
    name = "dockerd"

    def prelude(self):
        # ip_forward only inside the private netns: it silences dockerd's
        # "IPv4 forwarding is disabled" warnings, as tests/src/dockerd.rs.
        return "sysctl -qw net.ipv4.ip_forward=1 2>/dev/null; "

    def command(self, images):
        args = ["dockerd", "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
                "--pidfile", str(self.dir / "pid"), "-H", self.docker_host(), "--iptables=false",
                "--ip-forward=false", "--ip-masq=false", "--cgroup-parent", self.cgroup_parent,
                "--userland-proxy=false"]
        if self.bridge == "none":
            args.append("--bridge=none")
        return args
