"""Shared plumbing for berth's benchmarks against podman and containerd.

Method (the same as the peer baseline the issues quote):
- every persistent store (berth, podman, containerd, floors) lives on a
  fresh journaled ext4 on a loop device, made at the start of a run and
  removed at the end, because this machine's root fs is ext4 without a
  journal, where creating many files right after deleting many is 3-10x
  slower; every tool's volatile state (berth's run root, podman's runroot
  and tmp dir, containerd's state dir, the floors' runtime state and
  bundles) lives on a tmpfs, as /run is on every host;
- the same images from the same loopback registry, in the same run;
- before every timed run the machine must be quiet (CPU busy < 25 % over
  0.5 s, at most 10 s of waiting), and the notes say how many runs were not;
- medians with min and max; compare medians, only within one run.
"""

import atexit
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True, quiet=True, **kw):
    """Runs a command (list or shell string); returns CompletedProcess."""
    shell = isinstance(cmd, str)
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(cmd, shell=shell, check=check, stdout=kw.pop("stdout", out),
                          stderr=kw.pop("stderr", out), **kw)


def out(cmd):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True,
                          capture_output=True, text=True).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, probe, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------- cleanup

_cleanups = []


def on_exit(fn):
    """Registers a cleanup; they run in reverse order, also on SIGINT/SIGTERM."""
    _cleanups.append(fn)
    return fn


def _run_cleanups(*_):
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as err:  # keep cleaning up the rest
            log(f"cleanup {getattr(fn, '__name__', fn)} failed: {err}")


atexit.register(_run_cleanups)
for _sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_sig, lambda *_: sys.exit(130))


def umount_under(path):
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp == path or mp.startswith(path.rstrip("/") + "/"):
                mounts.append(mp)
    for mp in sorted(mounts, key=len, reverse=True):
        sh(["umount", "-l", mp], check=False)


# ---------------------------------------------------------------- loop fs

def loop_fs(size_gb=8):
    """A fresh journaled ext4 on a loop device; returns its mountpoint."""
    img = tempfile.mktemp(prefix="berth-bench-", suffix=".img", dir="/var/tmp")
    mnt = tempfile.mkdtemp(prefix="berth-bench-")
    sh(["truncate", "-s", f"{size_gb}G", img])
    dev = out(["losetup", "--direct-io=on", "-f", "--show", img])
    sh(["mkfs.ext4", "-q", "-F", dev])
    sh(["mount", dev, mnt])

    @on_exit
    def remove_loop_fs():
        umount_under(mnt)
        sh(["losetup", "-d", dev], check=False)
        os.unlink(img)
        shutil.rmtree(mnt, ignore_errors=True)

    return mnt


def tmpfs(path):
    """A fresh tmpfs at `path` (made if missing), unmounted when the run ends."""
    os.makedirs(path, exist_ok=True)
    sh(["mount", "-t", "tmpfs", "-o", "mode=0755", "berth-bench-volatile", path])
    on_exit(lambda: umount_under(path))
    return path


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def mount_overlay(lower, upper, work, target):
    """mount(2) of an overlay, as a runtime or a store does it: no process
    spawned, so the floor times the kernel's work and not /bin/mount's."""
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay on {target}: {os.strerror(err)}")


def umount(target):
    if _libc.umount2(os.fsencode(target), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def machine():
    """One line about this machine: CPU, cores, memory, kernel."""
    model = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    mem_kb = 0
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/meminfo") as f:
            mem_kb = next(int(l.split()[1]) for l in f if l.startswith("MemTotal:"))
    return (f"{os.cpu_count()} cores ({model}), {mem_kb / 1048576:.0f} GiB, "
            f"kernel {os.uname().release}")


# ---------------------------------------------------------------- quiet gate

def _cpu_busy_fraction(window=0.5):
    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + vals[4]
        return idle, sum(vals)
    i0, t0 = sample()
    time.sleep(window)
    i1, t1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


class QuietGate:
    """Waits for a quiet machine before each timed run; counts the busy starts."""

    def __init__(self, threshold=0.25, max_wait=10.0):
        self.threshold, self.max_wait = threshold, max_wait
        self.busy_starts = 0
        self.starts = 0
        self._noted = (0, 0)  # (starts, busy_starts) at the last note()

    def wait(self):
        self.starts += 1
        deadline = time.monotonic() + self.max_wait
        while _cpu_busy_fraction() > self.threshold:
            if time.monotonic() > deadline:
                self.busy_starts += 1
                return

    def note(self):
        """Quiet starts among the runs since the previous note (one figure)."""
        starts = self.starts - self._noted[0]
        busy = self.busy_starts - self._noted[1]
        self._noted = (self.starts, self.busy_starts)
        return f"{starts - busy}/{starts} quiet starts"


# ---------------------------------------------------------------- inotify

class MarkerWatch:
    """inotify on one directory: waits for a file to appear, or for a
    condition to hold after files there are created or renamed into place
    (no polling: each check runs when the directory changed)."""

    IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100

    def __init__(self, directory):
        self.libc = _libc
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = self.IN_CLOSE_WRITE | self.IN_MOVED_TO | self.IN_CREATE
        if self.libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self.directory = directory

    def until(self, what, check, timeout=30.0):
        """Returns (time.monotonic() when `check()` first held, its value)."""
        import select
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return time.monotonic(), value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: not within {timeout}s")
            select.select([self.fd], [], [], left)
            with contextlib.suppress(BlockingIOError):
                os.read(self.fd, 65536)

    def wait_for(self, name, timeout=30.0):
        path = os.path.join(self.directory, name)
        return self.until(f"{path} to appear", lambda: os.path.exists(path), timeout)[0]

    def close(self):
        os.close(self.fd)


# ---------------------------------------------------------------- registry

class Registry:
    """Debian's docker-registry (the CNCF distribution registry) on loopback."""

    def __init__(self, data_dir):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        os.makedirs(data_dir, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="berth-bench-registry-")
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(f"""version: 0.1
log: {{level: error, accesslog: {{disabled: true}}}}
storage: {{filesystem: {{rootdirectory: {data_dir}}}, delete: {{enabled: true}}}}
http: {{addr: {self.addr}}}
""")
        logf = open(os.path.join(self.dir, "registry.log"), "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", config], stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        on_exit(self.stop)
        wait_for("the registry to answer", lambda: self._answers(), timeout=20)

    def _answers(self):
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- images

MTIME = "@1704067200"  # fixed mtime: stable digests across builds


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class OciLayout:
    """Builds an OCI image layout by hand: deterministic tars, gzip -n."""

    def __init__(self, path):
        self.path = path
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(os.path.join(path, "blobs", "sha256"))
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.layers = []  # (digest, size, diff_id)

    def _add_blob(self, tmp):
        digest = _sha256_file(tmp)
        size = os.path.getsize(tmp)
        os.replace(tmp, os.path.join(self.path, "blobs", "sha256", digest[7:]))
        return digest, size

    def _add_json(self, obj):
        tmp = os.path.join(self.path, "tmp.json")
        with open(tmp, "w") as f:
            json.dump(obj, f, separators=(",", ":"))
        return self._add_blob(tmp)

    def add_layer(self, root, entries):
        """A gzip layer of `entries` (paths relative to `root`, parents first)."""
        listing = os.path.join(self.path, "tmp.list")
        with open(listing, "w") as f:
            f.write("\n".join(entries) + "\n")
        tar = os.path.join(self.path, "tmp.tar")
        sh(["tar", "--format=gnu", "--no-recursion", "--numeric-owner", "--owner=0",
            "--group=0", f"--mtime={MTIME}", "-C", root, "-cf", tar,
            "--verbatim-files-from", "-T", listing])
        diff_id = _sha256_file(tar)
        sh(f"gzip -n -6 -c {tar} > {tar}.gz")
        os.unlink(tar)
        os.unlink(listing)
        digest, size = self._add_blob(tar + ".gz")
        self.layers.append((digest, size, diff_id))

    def finish(self, cmd, arch="amd64"):
        created = "2024-01-01T00:00:00Z"
        config = {
            "created": created, "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Cmd": cmd, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [l[2] for l in self.layers]},
        }
        cdig, csize = self._add_json(config)
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cdig, "size": csize},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": d, "size": s} for d, s, _ in self.layers],
        }
        mdig, msize = self._add_json(manifest)
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdig, "size": msize,
                "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
        return mdig


def busybox_root(root):
    """A minimal busybox-static tree: enough to run sh, sleep, touch, true, httpd."""
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root"):
        os.makedirs(os.path.join(root, d))
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", os.path.join(root, "bin", "busybox"))
    for applet in ("sh", "sleep", "touch", "cat", "echo", "true", "httpd", "ls"):
        os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")


def _entries(root, paths):
    """Sorted tar entries for `paths` under `root`, parent dirs included."""
    seen = set()
    for p in paths:
        parent = os.path.dirname(p)
        while parent and parent not in seen:
            seen.add(parent)
            parent = os.path.dirname(parent)
        full = os.path.join(root, p)
        if os.path.isdir(full) and not os.path.islink(full):
            for dirpath, dirnames, filenames in os.walk(full):
                rel = os.path.relpath(dirpath, root)
                seen.add(rel)
                for name in dirnames + filenames:
                    candidate = os.path.join(rel, name)
                    if not os.path.isdir(os.path.join(root, candidate)) or \
                            os.path.islink(os.path.join(root, candidate)):
                        seen.add(candidate)
        else:
            seen.add(p)
    return sorted(seen)


# Layers of the big image: real trees from this machine's /usr (so its digests
# depend on the installed packages; the run prints them).
BIG_LAYERS = [
    ["usr/share/man"],
    ["usr/include"],
    ["usr/lib/python3.11"],
    ["usr/share/zoneinfo", "usr/share/perl"],
    ["usr/share/i18n", "usr/share/mime"],
]


def build_images(cache_dir, registry):
    """Builds tiny (busybox) and big (busybox, trees of /usr and a layer of
    whiteouts; RESULTS.md says its layers and size) and pushes them."""
    tiny = os.path.join(cache_dir, "tiny")
    if not os.path.exists(os.path.join(tiny, "index.json")):
        log("building bench/tiny")
        stage = os.path.join(cache_dir, "stage-bb")
        busybox_root(stage)
        layout = OciLayout(tiny)
        layout.add_layer(stage, _entries(stage, sorted(os.listdir(stage))))
        layout.finish(["sh"])
    big = os.path.join(cache_dir, "big")
    if not os.path.exists(os.path.join(big, "index.json")):
        log("building bench/big (a few minutes)")
        stage = os.path.join(cache_dir, "stage-bb")
        busybox_root(stage)
        layout = OciLayout(big)
        layout.add_layer(stage, _entries(stage, sorted(os.listdir(stage))))
        for paths in BIG_LAYERS:
            present = [p for p in paths if os.path.exists(os.path.join("/", p))]
            layout.add_layer("/", _entries("/", present))
        # a last layer with a file whiteout, a directory whiteout and an opaque dir
        wh = os.path.join(cache_dir, "stage-wh")
        shutil.rmtree(wh, ignore_errors=True)
        os.makedirs(os.path.join(wh, "usr/include"))
        os.makedirs(os.path.join(wh, "usr/share/zoneinfo"))
        open(os.path.join(wh, "usr/include/.wh.stdio.h"), "w").close()
        open(os.path.join(wh, "usr/include/.wh.linux"), "w").close()
        open(os.path.join(wh, "usr/share/zoneinfo/.wh..wh..opq"), "w").close()
        with open(os.path.join(wh, "usr/share/zoneinfo/UTC"), "w") as f:
            f.write("TZif-placeholder\n")
        layout.add_layer(wh, _entries(wh, ["usr"]))
        layout.finish(["sh"])
    refs = {}
    for name, layout in (("tiny", tiny), ("big", big)):
        ref = f"{registry.addr}/bench/{name}:latest"
        sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest",
            f"docker://{ref}"])
        refs[name] = ref
    return refs


def describe_layout(layout):
    with open(os.path.join(layout, "index.json")) as f:
        mdig = json.load(f)["manifests"][0]["digest"]
    with open(os.path.join(layout, "blobs", "sha256", mdig[7:])) as f:
        manifest = json.load(f)
    sizes = [l["size"] for l in manifest["layers"]]
    return mdig, len(sizes), sum(sizes)


# ---------------------------------------------------------------- results

class Results:
    """Collects rows and renders them as a Markdown table."""

    def __init__(self):
        self.rows = []  # (section, tool, figure, unit, values, note)

    def add(self, section, tool, figure, unit, values, note=""):
        self.rows.append((section, tool, figure, unit, list(values), note))
        med = statistics.median(values)
        log(f"{section} | {tool} | {figure}: median {med:.1f} {unit} "
            f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})")
        return med

    def median(self, section, tool, figure):
        for s, t, f, _, values, _ in self.rows:
            if (s, t, f) == (section, tool, figure):
                return statistics.median(values)
        return None

    def markdown(self):
        lines = ["| section | tool | figure | unit | median | min | max | n | notes |",
                 "|---|---|---|---|---:|---:|---:|---:|---|"]
        for s, t, f, u, v, n in self.rows:
            s, t, f, u, n = (names.cell_text(c) for c in (s, t, f, u, n))
            lines.append(f"| {s} | {t} | {f} | {u} | **{statistics.median(v):.1f}** | "
                         f"{min(v):.1f} | {max(v):.1f} | {len(v)} | {n} |")
        return "\n".join(lines)


def timed(fn):
    t0 = time.monotonic()
    fn()
    return (time.monotonic() - t0) * 1000.0
