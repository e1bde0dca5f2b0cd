#!/usr/bin/env python3
"""berth's benchmarks against podman and containerd, in one run.

    sudo bench/bench.py [pull] [start] [exit] [mem] [outage] [scale] [--runs N] [--start-runs N]
                        [--tools berth,podman,ctr] [--out FILE] [--log-dir DIR] [--no-readme]

Sections:
  pull   cold pull + unpack of a multi-layer image (bench/big, ~85 MB: its
         layers and size are in RESULTS.md) and a 1 MB one: berth pull,
         podman pull, ctr image pull (daemon restarted before each pull, and
         warm: image removed with --sync, daemon kept); floors: curl of all
         blobs, then tar -xzf of the layers 2 in parallel (a sum, with and
         without syncfs), and the pipelined floor: `curl | tar -xz` per
         layer, every layer at once, then syncfs (what berth's pull
         guarantees on return).
  start  image present: from "manifest written" (berth: an atomic rename into
         the watched directory, debounce included) or "command issued"
         (podman run -d, ctr run -d) until a marker file the container writes
         appears on the host; same runtime (crun) and network mode; floor:
         mount(2) an overlay and crun run -d a prepared bundle.
  exit   run `true` to its exit and remove it: podman run --rm, ctr run --rm,
         the floor's crun run (which deletes) + umount; berth: from manifest
         written until the container exited and, the manifest removed, the
         pod is gone.
  mem    0, 5 and 50 `sleep` containers (crun, network none; podman and
         berth as pods: podman play kube / manifests): per-container
         supervisors (berth-shim, conmon, containerd-shim) and the daemons
         (berth's agent, containerd) idle, VmRSS and PSS, and each tool's
         total PSS; the 50 are started at once and timed (scale row).
  outage N = 1, 20, 50 pods of one image running (network none, crun), then
         a simulated power cut (the agent/daemon and every container killed,
         the volatile state wiped) -> every pod running again: berth (its
         agent started again) vs podman (containers run with
         --restart=always, brought back by `podman start --all --filter
         restart-policy=always`, what podman-restart.service runs at boot).
  scale  berth alone, N = 10, 100, 500 pods (runc, network none, image
         present): N manifests written at once -> every pod running
         (convergence); then one file among the N edited -> that pod's
         container replaced and running (reaction time: must not grow
         with N); then all removed -> every pod gone.
Every persistent store is on one fresh loop ext4, every volatile state on
tmpfs (see benchkit.py for the method). The README's performance table is
written from the results (bench/readme.py). Needs root, podman,
containerd, skopeo, docker-registry (`scripts/install-deps.sh --bench`) and
a release build of berth (`make release`: it links berth-shim statically).
"""

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchkit as kit  # noqa: E402
from names import (  # noqa: E402  (figure names, shared with readme.py)
    BERTH_EXIT, BERTH_PULL, CTR_EXIT, CTR_PULL_RESTARTED, CTR_PULL_WARM, CTR_START, FLOOR_EXIT,
    FLOOR_PIPELINED, FLOOR_START, MEM_COUNTS, PODMAN_EXIT, PODMAN_PULL, berth_start,
    converge_figure, outage_figure, podman_start, react_figure, start_figure, total_figure)
from peers import Containerd, Podman  # noqa: E402
import readme  # noqa: E402

BERTH = os.path.join(kit.REPO, "target", "release", "berth")


class Berth:
    """berth's CLI with its own root on the loop fs."""

    def __init__(self, base, registry_addr):
        self.root = os.path.join(base, "berth", "root")
        self.run_root = os.path.join(base, "berth", "run")
        self.hosts_dir = os.path.join(base, "berth", "certs.d")
        host_dir = os.path.join(self.hosts_dir, registry_addr)
        os.makedirs(host_dir, exist_ok=True)
        with open(os.path.join(host_dir, "hosts.toml"), "w") as f:
            f.write(f'server = "http://{registry_addr}"\n')

    def cmd(self, *args):
        return [BERTH, "--root", self.root, "--run-root", self.run_root, *args]

    def wipe(self):
        kit.umount_under(os.path.dirname(self.root))
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.run_root, ignore_errors=True)


def registry_blobs(registry_addr, ref):
    """(path, url) of the manifest, config and layers of `ref`, for the curl floor."""
    name, tag = ref.split("/", 1)[1].rsplit(":", 1)
    base = f"http://{registry_addr}/v2/{name}"
    req = urllib.request.Request(f"{base}/manifests/{tag}", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    manifest = json.load(urllib.request.urlopen(req))
    digests = [manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]
    return f"{base}/manifests/{tag}", [f"{base}/blobs/{d}" for d in digests], manifest


def section_pull(res, gate, base, registry, refs, runs, tools):
    podman = Podman(base, registry.addr)
    ctrd = Containerd(base)
    berth = Berth(base, registry.addr)
    floor_dir = os.path.join(base, "floor")

    def cold(prepare, action):
        """Timed runs after a warm-up; returns (values, note on this row's quiet starts)."""
        values = []
        gate.note()
        for i in range(runs + 1):  # the first run is a warm-up
            prepare()
            kit.sh("sync")
            gate.wait()
            ms = kit.timed(action)
            if i:
                values.append(ms)
        return values, gate.note()

    for name in ("big", "tiny"):
        ref = refs[name]
        sec = f"pull {name}"
        if "berth" in tools:
            values, quiet = cold(berth.wipe,
                                 lambda: kit.sh(berth.cmd("pull", "--hosts-dir", berth.hosts_dir, ref)))
            res.add(sec, "berth", BERTH_PULL, "ms", values,
                    f"{quiet}; blobs verified, layers unpacked while downloading, one syncfs")
        if "podman" in tools:
            values, quiet = cold(podman.reset, lambda: podman.run("pull", "-q", ref))
            res.add(sec, "podman", PODMAN_PULL, "ms", values, quiet)

        def ctr_prepare():
            ctrd.wipe()
            ctrd.start()
        if "ctr" in tools:
            values, quiet = cold(ctr_prepare,
                                 lambda: ctrd.run("image", "pull", "--plain-http", ref))
            res.add(sec, "ctr", CTR_PULL_RESTARTED, "ms", values, quiet)
            values, quiet = cold(lambda: ctrd.remove_image(ref),
                                 lambda: ctrd.run("image", "pull", "--plain-http", ref))
            res.add(sec, "ctr", CTR_PULL_WARM, "ms", values, quiet)
            ctrd.stop()

        manifest_url, blob_urls, manifest = registry_blobs(registry.addr, ref)

        def floor_prepare():
            shutil.rmtree(floor_dir, ignore_errors=True)
            os.makedirs(floor_dir)

        def curl_all():
            args = ["curl", "-sf", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
                    "-o", os.path.join(floor_dir, "manifest"), manifest_url]
            for i, url in enumerate(blob_urls):
                args += ["-o", os.path.join(floor_dir, f"blob{i}"), url]
            kit.sh(args)
        values, quiet = cold(floor_prepare, curl_all)
        res.add(sec, "floor", "curl all blobs (1 connection)", "ms", values,
                f"{quiet}; no verification")

        def untar_all():
            def one(i):
                target = os.path.join(floor_dir, f"layer{i}")
                os.makedirs(target)
                kit.sh(["tar", "-xzf", os.path.join(floor_dir, f"blob{i + 1}"), "-C", target])
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(one, range(len(manifest["layers"]))))

        def untar_prepare():
            floor_prepare()
            curl_all()
        values, quiet = cold(untar_prepare, untar_all)
        res.add(sec, "floor", "tar -xzf layers, 2 in parallel", "ms", values,
                f"{quiet}; whiteouts kept as files, no fsync")

        def untar_all_durably():
            # What berth guarantees on return: everything on disk (one syncfs).
            untar_all()
            kit.sh(["sync", "-f", floor_dir])
        values, quiet = cold(untar_prepare, untar_all_durably)
        res.add(sec, "floor", "tar -xzf layers, 2 in parallel, then syncfs", "ms", values,
                f"{quiet}; the same, made durable as berth's pull is")
        def pipelined():
            # What a puller that unpacks while it downloads can at best do
            # with these tools: every layer streamed into tar at once.
            def one(i):
                target = os.path.join(floor_dir, f"layer{i}")
                os.makedirs(target)
                kit.sh(f"curl -sf {blob_urls[i + 1]} | tar -xz -C {target}")
            with concurrent.futures.ThreadPoolExecutor(len(manifest["layers"])) as pool:
                list(pool.map(one, range(len(manifest["layers"]))))
            kit.sh(["sync", "-f", floor_dir])
        values, quiet = cold(floor_prepare, pipelined)
        res.add(sec, "floor", FLOOR_PIPELINED, "ms", values,
                f"{quiet}; no verification, whiteouts kept as files")
        floor_prepare()
        if "berth" not in tools:
            continue

        ours = res.median(sec, "berth", BERTH_PULL)
        ratios = []
        for tool, figure in (("ctr", CTR_PULL_WARM), ("ctr", CTR_PULL_RESTARTED),
                             ("podman", PODMAN_PULL)):
            theirs = res.median(sec, tool, figure)
            if theirs:
                ratios.append(f"berth/{tool} ({figure}) = {ours / theirs:.2f}")
        ratios.append(f"berth/pipelined floor = {ours / res.median(sec, 'floor', FLOOR_PIPELINED):.2f}")
        res.ratios.append(f"{sec}: " + ", ".join(ratios))


# ---------------------------------------------------------------- start / exit / mem

HUGETLB_V1 = "/sys/fs/cgroup/hugetlb"


def ensure_crun_can_run():
    """crun 1.8 refuses to run while cgroup2 holds a controller (hugetlb on
    this VM); a cgroup-v1 hugetlb hierarchy is what a plain v1 host has.
    Mounted for the run and unmounted afterwards (DESIGN.md, machine facts)."""
    with open("/proc/self/mountinfo") as f:
        if any(line.split()[4] == HUGETLB_V1 for line in f):
            return
    os.makedirs(HUGETLB_V1, exist_ok=True)
    if kit.sh(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", HUGETLB_V1],
              check=False).returncode:
        kit.log("could not mount a v1 hugetlb hierarchy: crun may refuse to run")
        return

    @kit.on_exit
    def unmount_hugetlb():
        kit.sh(["umount", HUGETLB_V1], check=False)


def pod_manifest(name, image, command, out_dir=None, restart="Never"):
    volume_mounts = volumes = ""
    if out_dir:
        volume_mounts = "\n    volumeMounts: [{name: out, mountPath: /out}]"
        volumes = f"\n  volumes: [{{name: out, hostPath: {{path: {out_dir}, type: Directory}}}}]"
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
    imagePullPolicy: IfNotPresent
    command: {json.dumps(command)}{volume_mounts}{volumes}
"""


BENCH_BRIDGE = "btbench0"



class BerthAgent:
    """`berth run` with its persistent root on the loop fs and its volatile
    run root on a tmpfs (where /run/berth is on every host), with a given
    runtime handler and network driver, and otherwise the default config
    (the default debounce included)."""

    def __init__(self, base, registry_addr, tag, handler="crun", network="none", log_dir=None):
        self.cli = Berth(base, registry_addr)
        if not os.path.ismount(self.cli.run_root):
            os.makedirs(self.cli.run_root, exist_ok=True)
            kit.sh(["mount", "-t", "tmpfs", "-o", "mode=0755", "berth-bench-run",
                    self.cli.run_root])
            kit.on_exit(lambda: kit.umount_under(self.cli.run_root))
        if network == "bridge":
            # The agent keeps its bridge when its pods go (as podman does):
            # the benchmark's own one goes when the run ends, after the agents.
            kit.on_exit(lambda: subprocess.run(["ip", "link", "del", BENCH_BRIDGE],
                                               stderr=subprocess.DEVNULL))
        self.manifests = os.path.join(base, "berth", f"manifests-{tag}")
        os.makedirs(self.manifests, exist_ok=True)
        config = os.path.join(base, "berth", f"agent-{tag}.toml")
        with open(config, "w") as f:
            # The bridge gets names of its own: other berth agents on this
            # machine (tests, demos) use the defaults.
            f.write(f"""[runtime]
default-handler = "{handler}"
[network]
driver = "{network}"
[network.bridge]
network = "berth-bench"
bridge = "{BENCH_BRIDGE}"
subnet = "10.214.0.0/16"
veth-prefix = "btb"
nft-table = "berth_bench"
[images]
hosts-dir = "{self.cli.hosts_dir}"
""")
        self.log = os.path.join(log_dir or os.path.join(base, "berth"), f"agent-{tag}.log")
        log_file = open(self.log, "w")
        self.proc = subprocess.Popen(self.cli.cmd("--manifests", self.manifests, "run",
                                                  "--config", config),
                                     stdout=log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        kit.on_exit(self.stop)
        self.status_watch = kit.MarkerWatch(self.cli.run_root)
        kit.on_exit(self.status_watch.close)
        self.until("the agent to be ready",
                   lambda: self.status().get("agent", {}).get("state") == "Ready", timeout=60)

    def until(self, what, check, timeout=60.0):
        """Waits until `check()` holds, looking whenever status.json was
        replaced; returns (time.monotonic() then, the value)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the agent exited ({self.proc.returncode}); see {self.log}")
        return self.status_watch.until(what, check, timeout)

    def status(self):
        try:
            with open(os.path.join(self.cli.run_root, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def pod(self, name):
        for obj in self.status().get("objects", []):
            if obj.get("kind") == "Pod" and obj.get("name") == name:
                return obj
        return None

    def write(self, name, text):
        """Publishes a manifest the way careful writers do: a hidden temp
        file renamed into the watched directory."""
        tmp = os.path.join(self.manifests, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.manifests, f"{name}.yaml"))

    def remove(self, name):
        # The marker can appear before the pod's status is persisted: a pod
        # not yet in status.json would look removed already.
        self.until(f"pod {name} in status", lambda: self.pod(name) is not None)
        os.unlink(os.path.join(self.manifests, f"{name}.yaml"))
        self.until(f"pod {name} to be removed", lambda: self.pod(name) is None)

    def shim_pids(self):
        shims = os.path.join(self.cli.run_root, "shims")
        found = []
        for cid in os.listdir(shims) if os.path.isdir(shims) else []:
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(os.path.join(shims, cid, "shim.pid")) as f:
                    found.append(int(f.read().split()[0]))
        return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def container_states(pod):
    details = (pod or {}).get("details", {}).get("pod", {})
    return [c.get("state", {}) for c in details.get("containers", [])]


def terminated(pod):
    return any("terminated" in state for state in container_states(pod))


def running(pod):
    states = container_states(pod)
    return bool(states) and all("running" in state for state in states)


class StartBench:
    """Start latency (image present): from "manifest written" (berth: an
    atomic rename into the watched directory) or "command issued" (podman,
    ctr, the floor) until the marker file the container writes appears on
    the host, seen by inotify; and run to exit."""

    MARKER_CMD = ["sh", "-c", "touch /out/ready; sleep 30"]

    def __init__(self, res, gate, base, registry, refs, runs, log_dir):
        self.res, self.gate, self.base, self.registry = res, gate, base, registry
        self.image = refs["tiny"]
        self.runs = runs
        self.log_dir = log_dir
        self.out_dir = os.path.join(base, "out")
        os.makedirs(self.out_dir, exist_ok=True)
        ensure_crun_can_run()

    def measure(self, start, cleanup):
        """runs + 1 starts (the first is a warm-up); ms until the marker."""
        ready = os.path.join(self.out_dir, "ready")
        values = []
        self.gate.note()  # the row's note counts its own starts
        watch = kit.MarkerWatch(self.out_dir)
        try:
            for i in range(self.runs + 1):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ready)
                self.gate.wait()
                t0 = time.monotonic()
                start(i)
                t1 = watch.wait_for("ready")
                cleanup(i)
                if i:
                    values.append((t1 - t0) * 1000.0)
        finally:
            watch.close()
        return values

    def timed_runs(self, action):
        values = []
        self.gate.note()  # the row's note counts its own starts
        for i in range(self.runs + 1):
            self.gate.wait()
            ms = kit.timed(lambda: action(i))
            if i:
                values.append(ms)
        return values

    def berth(self, sections):
        berth = Berth(self.base, self.registry.addr)
        kit.sh(berth.cmd("pull", "--hosts-dir", berth.hosts_dir, self.image))
        for network in ("none", "bridge"):
            agent = BerthAgent(self.base, self.registry.addr, f"start-{network}",
                               network=network, log_dir=self.log_dir)
            if "start" in sections:
                self.res.add(
                    "start", "berth", berth_start(network),
                    "ms", self.measure(
                        lambda i: agent.write(f"s{i}", pod_manifest(
                            f"s{i}", self.image, self.MARKER_CMD, self.out_dir)),
                        lambda i: agent.remove(f"s{i}")), self.gate.note())
            if "exit" in sections and network == "none":
                values = []
                self.gate.note()
                for i in range(self.runs + 1):
                    self.gate.wait()
                    t0 = time.monotonic()
                    agent.write(f"e{i}", pod_manifest(f"e{i}", self.image, ["true"]))
                    agent.until("the container to exit", lambda: terminated(agent.pod(f"e{i}")))
                    os.unlink(os.path.join(agent.manifests, f"e{i}.yaml"))
                    t1, _ = agent.until(f"pod e{i} to be removed",
                                        lambda: agent.pod(f"e{i}") is None)
                    if i:
                        values.append((t1 - t0) * 1000.0)
                self.res.add("exit", "berth", BERTH_EXIT, "ms", values, self.gate.note())
            agent.stop()

    def podman(self, sections):
        podman = Podman(self.base, self.registry.addr, runtime="crun")
        podman.run("pull", "-q", self.image)
        if "start" in sections:
            for network in ("none", "bridge"):
                self.res.add(
                    "start", "podman", podman_start(network), "ms",
                    self.measure(lambda i: podman.run(
                        "run", "-d", "--name", f"s{i}", f"--network={network}",
                        "-v", f"{self.out_dir}:/out", self.image, *self.MARKER_CMD),
                        lambda i: podman.run("rm", "-f", "-t", "0", f"s{i}")), self.gate.note())
        if "exit" in sections:
            self.res.add("exit", "podman", PODMAN_EXIT, "ms",
                         self.timed_runs(lambda i: podman.run(
                             "run", "--rm", "--network=none", self.image, "true")),
                         self.gate.note())

    def ctr(self, sections):
        ctrd = Containerd(self.base)
        ctrd.wipe()
        ctrd.start()
        ctrd.run("image", "pull", "--plain-http", self.image)
        crun = shutil.which("crun")
        mount = f"type=bind,src={self.out_dir},dst=/out,options=rbind:rw"
        if "start" in sections:
            self.res.add(
                "start", "ctr", CTR_START, "ms",
                self.measure(lambda i: ctrd.run(
                    "run", "-d", "--null-io", "--runc-binary", crun, "--mount", mount,
                    self.image, f"s{i}", *self.MARKER_CMD),
                    lambda i: ctrd.remove_all_tasks()), self.gate.note())
        if "exit" in sections:
            self.res.add("exit", "ctr", CTR_EXIT, "ms",
                         self.timed_runs(lambda i: ctrd.run(
                             "run", "--rm", "--runc-binary", crun, self.image, f"e{i}", "true")),
                         self.gate.note())
        ctrd.stop()

    def floor(self, sections):
        """A prepared bundle (busybox rootfs, crun's default spec + the /out
        bind): mount a fresh overlay and `crun run -d` it; `crun run` of
        `true` for run-to-exit."""
        floor = os.path.join(self.base, "floor-start")
        lower = os.path.join(floor, "lower")
        kit.busybox_root(lower)
        # Bundles and the runtime's state are volatile (a tmpfs, as /run);
        # the overlay's upper and work dirs persistent, as every store's.
        volatile = kit.tmpfs(os.path.join(self.base, "floor-run"))
        state = os.path.join(volatile, "state")

        def bundle(name, args):
            path = os.path.join(volatile, name)
            os.makedirs(os.path.join(path, "rootfs"))
            kit.sh(["crun", "spec", "--bundle", path])
            with open(os.path.join(path, "config.json")) as f:
                spec = json.load(f)
            spec["process"]["terminal"] = False
            spec["process"]["args"] = args
            spec["root"] = {"path": "rootfs", "readonly": False}
            spec["mounts"].append({"destination": "/out", "type": "bind",
                                   "source": self.out_dir, "options": ["rbind", "rw"]})
            with open(os.path.join(path, "config.json"), "w") as f:
                json.dump(spec, f)
            return path

        def layer_dirs(tag):
            """Empty upper and work dirs for every run, made before the clock runs."""
            dirs = []
            for i in range(self.runs + 1):
                upper, work = os.path.join(floor, f"u{tag}{i}"), os.path.join(floor, f"w{tag}{i}")
                os.makedirs(upper)
                os.makedirs(work)
                dirs.append((upper, work))
            return dirs

        if "start" in sections:
            marker = bundle("marker", self.MARKER_CMD)
            dirs = layer_dirs("s")

            def floor_start(i):
                kit.mount_overlay(lower, *dirs[i], os.path.join(marker, "rootfs"))
                kit.sh(["crun", "--root", state, "run", "-d", "--bundle", marker, f"floor{i}"],
                       stdin=subprocess.DEVNULL)

            def floor_cleanup(i):
                kit.sh(["crun", "--root", state, "delete", "-f", f"floor{i}"], check=False)
                kit.umount(os.path.join(marker, "rootfs"))
            self.res.add("start", "floor", FLOOR_START, "ms",
                         self.measure(floor_start, floor_cleanup),
                         f"no network, no image work; {self.gate.note()}")
        if "exit" in sections:
            true = bundle("true", ["true"])
            dirs = layer_dirs("e")

            def floor_exit(i):
                kit.mount_overlay(lower, *dirs[i], os.path.join(true, "rootfs"))
                try:
                    kit.sh(["crun", "--root", state, "run", "--bundle", true, f"floor-e{i}"],
                           stdin=subprocess.DEVNULL)
                finally:
                    kit.umount(os.path.join(true, "rootfs"))
            self.res.add("exit", "floor", FLOOR_EXIT, "ms", self.timed_runs(floor_exit),
                         f"crun deletes the container on exit, then umount; {self.gate.note()}")

    def ratios(self):
        res = self.res

        def add(label, ours, theirs):
            if ours and theirs:
                res.ratios.append(f"{label} = {ours / theirs:.2f}")

        for network in ("none", "bridge"):
            ours = res.median("start", "berth", berth_start(network))
            add(f"start, network {network}: berth/podman", ours,
                res.median("start", "podman", podman_start(network)))
        ours = res.median("start", "berth", berth_start("none"))
        add("start: berth/floor", ours,
            res.median("start", "floor", FLOOR_START))
        add("start: berth/ctr", ours, res.median("start", "ctr", CTR_START))
        ours = res.median("exit", "berth", BERTH_EXIT)
        add("exit: berth/podman", ours,
            res.median("exit", "podman", PODMAN_EXIT))
        add("exit: berth/ctr", ours, res.median("exit", "ctr", CTR_EXIT))
        add("exit: berth/floor", ours, res.median("exit", "floor", FLOOR_EXIT))


def section_start_exit(res, gate, base, registry, refs, runs, tools, sections, log_dir):
    bench = StartBench(res, gate, base, registry, refs, runs, log_dir)
    if "berth" in tools:
        bench.berth(sections)
    if "podman" in tools:
        bench.podman(sections)
    if "ctr" in tools:
        bench.ctr(sections)
    bench.floor(sections)
    bench.ratios()


def section_scale(res, base, registry, refs, sizes, log_dir):
    """Convergence of N pods and the reaction to one file among N (berth
    alone: the peers have no manifest directory to react to)."""
    image = refs["tiny"]
    cli = Berth(base, registry.addr)
    kit.sh(cli.cmd("pull", "--hosts-dir", cli.hosts_dir, image))
    for n in sizes:
        agent = BerthAgent(base, registry.addr, f"scale-{n}", handler="runc",
                           log_dir=log_dir)
        names = [f"p{i:03d}" for i in range(n)]
        sleeper = ["sh", "-c", "exec sleep 100000"]
        t0 = time.monotonic()
        for name in names:
            agent.write(name, pod_manifest(name, image, sleeper, restart="Always"))

        def all_running():
            pods = [o for o in agent.status().get("objects", []) if o.get("kind") == "Pod"]
            return len(pods) == n and all(running(p) for p in pods)

        t1, _ = agent.until(f"{n} pods running", all_running, timeout=60.0 + n)
        res.add("scale", "berth", converge_figure(n), "ms",
                [(t1 - t0) * 1000.0])
        reactions = []
        for run in range(3):
            target = names[(run * 7) % n]

            def replaced(target=target):
                pod = agent.pod(target)
                details = (pod or {}).get("details", {}).get("pod", {})
                containers = details.get("containers", [])
                return bool(containers) and "running" in containers[0].get("state", {}) \
                    and containers[0].get("restartCount", 0) >= 1

            t0 = time.monotonic()
            agent.write(target, pod_manifest(
                target, image, ["sh", "-c", f"exec sleep {100000 + run + 1}"], restart="Always"))
            t1, _ = agent.until(f"{target} replaced", replaced, timeout=60.0)
            reactions.append((t1 - t0) * 1000.0)
        res.add("scale", "berth", react_figure(n),
                "ms", reactions)
        t0 = time.monotonic()
        for name in names:
            os.unlink(os.path.join(agent.manifests, f"{name}.yaml"))
        t1, _ = agent.until(f"{n} pods removed", lambda: not any(
            o.get("kind") == "Pod" for o in agent.status().get("objects", [])), timeout=60.0 + n)
        res.add("scale", "berth", f"{n} pods removed at once -> all gone", "ms",
                [(t1 - t0) * 1000.0])
        agent.stop()


def kill_cgroup_tree(parent):
    """SIGKILLs every process in cgroup `parent` of every hierarchy."""
    for root in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", root, parent)
        for dirpath, _, files in os.walk(top):
            if "cgroup.procs" in files:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), 9)


def berth_power_cut(agent):
    """The agent and its containers killed, its run root (a tmpfs) wiped."""
    agent.proc.kill()
    agent.proc.wait()
    for pid in agent.shim_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    kill_cgroup_tree("berth")
    kit.umount_under(agent.cli.run_root)
    shutil.rmtree(agent.cli.run_root, ignore_errors=True)


def section_outage(res, base, registry, refs, tools, sizes, log_dir):
    """N pods back after a power cut: berth vs podman's restart policy."""
    ensure_crun_can_run()
    image = refs["tiny"]
    sleeper = ["sh", "-c", "exec sleep 100000"]
    if "berth" in tools:
        cli = Berth(base, registry.addr)
        kit.sh(cli.cmd("pull", "--hosts-dir", cli.hosts_dir, image))
        for n in sizes:
            agent = BerthAgent(base, registry.addr, f"outage-{n}", log_dir=log_dir)
            names = [f"o{i:02d}" for i in range(n)]
            for name in names:
                agent.write(name, pod_manifest(name, image, sleeper, restart="Always"))
            agent.until(f"{n} pods running", lambda: all(running(agent.pod(x)) for x in names),
                        timeout=60.0 + n)
            berth_power_cut(agent)
            t0 = time.monotonic()
            agent = BerthAgent(base, registry.addr, f"outage-{n}", log_dir=log_dir)
            t1, _ = agent.until(f"{n} pods running again",
                                lambda: all(running(agent.pod(x)) for x in names),
                                timeout=60.0 + n)
            res.add("outage", "berth", outage_figure("berth", n),
                    "ms", [(t1 - t0) * 1000.0])
            for name in names:
                os.unlink(os.path.join(agent.manifests, f"{name}.yaml"))
            agent.until("pods removed", lambda: not any(
                o.get("kind") == "Pod" for o in agent.status().get("objects", [])), timeout=60.0 + n)
            agent.stop()
    if "podman" in tools:
        podman = Podman(base, registry.addr, runtime="crun")
        podman.run("pull", "-q", image)
        for n in sizes:
            for i in range(n):
                podman.run("run", "-d", "--name", f"o{i:02d}", "--restart=always",
                           "--network=none", image, *sleeper)
            # The power cut: conmons and containers killed; what a reboot
            # wipes wiped: the run root, podman's tmp dir (where it notices
            # a reboot), crun's state of these containers (/run/crun) and
            # podman's shared-memory locks (/dev/shm).
            ids = podman_ids(podman)
            for pid in podman.conmon_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            kill_cgroup_tree("libpod_parent")
            for cid in ids:
                shutil.rmtree(os.path.join("/run/crun", cid), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink("/dev/shm/libpod_lock")
            podman.reboot_volatile()
            t0 = time.monotonic()
            podman.run("start", "--all", "--filter", "restart-policy=always")
            kit.wait_for(f"{n} containers running again", lambda: podman_running(podman) == n,
                         timeout=60.0 + n)
            t1 = time.monotonic()
            res.add("outage", "podman",
                    outage_figure("podman", n),
                    "ms", [(t1 - t0) * 1000.0])
            podman.reset()
            podman.run("pull", "-q", image)
    for n in sizes:
        ours = res.median("outage", "berth", outage_figure("berth", n))
        theirs = res.median("outage", "podman",
                            outage_figure("podman", n))
        if ours and theirs:
            res.ratios.append(f"outage {n} pods berth/podman = {ours / theirs:.2f}")


def podman_ids(podman):
    """Full ids of podman's containers."""
    out = subprocess.run(podman.cmd("ps", "-a", "-q", "--no-trunc"), env=podman.env,
                         capture_output=True, text=True)
    return out.stdout.split()


def podman_running(podman, exclude_infra=False):
    """How many of podman's containers run (without pods' infra containers)."""
    out = subprocess.run(podman.cmd("ps", "--format", "{{.IsInfra}}"), env=podman.env,
                         capture_output=True, text=True).stdout.split()
    return sum(1 for infra in out if not (exclude_infra and infra == "true"))


def rss_pss(pid):
    rss = pss = 0
    with contextlib.suppress(OSError, StopIteration):
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
    return rss, pss


SETTLE = 5  # seconds of idling before readings: a measurement, not synchronisation


def idle_readings(pid, seconds=SETTLE, every=0.5):
    """VmRSS and PSS (kB) of `pid`, sampled while it idles."""
    readings = []
    for _ in range(int(seconds / every)):
        readings.append(rss_pss(pid))
        time.sleep(every)
    return readings


def vm_hwm(pid):
    """The process's peak resident set (kB) since it started."""
    with contextlib.suppress(OSError, StopIteration):
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    return 0


class MemRecorder:
    """The rows of one tool at one container count."""

    def __init__(self, res, tool, n):
        self.res, self.tool, self.n = res, tool, n
        self.total_pss = 0

    def daemon(self, name, pid, note=""):
        readings = idle_readings(pid)
        self.res.add("mem", self.tool, f"{name} VmRSS, idle, {self.n} containers", "kB",
                     [r for r, _ in readings], note)
        pss = self.res.add("mem", self.tool, f"{name} PSS, idle, {self.n} containers", "kB",
                           [p for _, p in readings], note)
        self.res.add("mem", self.tool, f"{name} VmHWM (peak RSS), {self.n} containers", "kB",
                     [vm_hwm(pid)], note)
        self.total_pss += pss

    def supervisors(self, name, pids, note=""):
        if not pids:
            return
        readings = [rss_pss(pid) for pid in pids]
        self.res.add("mem", self.tool, f"{name} VmRSS, {self.n} containers", "kB",
                     [r for r, _ in readings], note)
        self.res.add("mem", self.tool, f"{name} PSS, {self.n} containers", "kB",
                     [p for _, p in readings], note)
        self.total_pss += sum(p for _, p in readings)

    def total(self):
        self.res.add("mem", self.tool, total_figure(self.n), "kB", [self.total_pss],
                     "every process of the tool: daemon + supervisors")


def sleepers(n):
    return [f"m{i:02d}" for i in range(n)]


def section_mem(res, base, registry, refs, tools, log_dir):
    """Memory of each tool idle with 0, 5 and 50 `sleep` containers (crun,
    network none), and the time to start the 50 at once."""
    ensure_crun_can_run()
    image = refs["tiny"]
    sleep = ["sleep", "100000"]
    if "berth" in tools:
        cli = Berth(base, registry.addr)
        kit.sh(cli.cmd("pull", "--hosts-dir", cli.hosts_dir, image))
        agent = BerthAgent(base, registry.addr, "mem", log_dir=log_dir)
        for n in MEM_COUNTS:
            names = sleepers(n)
            t0 = time.monotonic()
            for name in names:
                agent.write(name, pod_manifest(name, image, sleep, restart="Always"))
            t1, _ = agent.until(f"{n} pods running",
                                lambda: all(running(agent.pod(x)) for x in names), timeout=60 + n)
            if n == MEM_COUNTS[-1]:
                res.add("scale", "berth", start_figure("berth", n), "ms", [(t1 - t0) * 1000.0])
            rec = MemRecorder(res, "berth", n)
            note = "the agent unmaps its code pages after each burst of work (always, not for this run)"
            rec.daemon("berth agent", agent.proc.pid, note)
            rec.supervisors("berth-shim", agent.shim_pids())
            rec.total()
            for name in names:
                os.unlink(os.path.join(agent.manifests, f"{name}.yaml"))
            agent.until("pods removed", lambda: not any(
                o.get("kind") == "Pod" for o in agent.status().get("objects", [])), timeout=60 + n)
        agent.stop()
    if "podman" in tools:
        podman = Podman(base, registry.addr, runtime="crun")
        podman.run("pull", "-q", image)
        for n in MEM_COUNTS:
            rec = MemRecorder(res, "podman", n)
            if n:
                kube = os.path.join(base, f"podman-{n}.yaml")
                with open(kube, "w") as f:
                    f.write("---\n".join(pod_manifest(name, image, sleep, restart="Always")
                                          for name in sleepers(n)))
                t0 = time.monotonic()
                podman.run("play", "kube", "--network", "none", kube)
                kit.wait_for(f"{n} containers running",
                             lambda: podman_running(podman, exclude_infra=True) == n,
                             timeout=60 + n)
                t1 = time.monotonic()
                if n == MEM_COUNTS[-1]:
                    res.add("scale", "podman", start_figure("podman", n), "ms",
                            [(t1 - t0) * 1000.0])
                time.sleep(SETTLE)
                rec.supervisors("conmon", podman.conmon_pids(),
                                "one per container and one per pod's infra container")
            rec.total()
            podman.reset()
            podman.run("pull", "-q", image)
    if "ctr" in tools:
        ctrd = Containerd(base)
        ctrd.wipe()
        ctrd.start()
        ctrd.run("image", "pull", "--plain-http", image)
        crun = shutil.which("crun")
        for n in MEM_COUNTS:
            t0 = time.monotonic()
            for name in sleepers(n):
                ctrd.run("run", "-d", "--null-io", "--runc-binary", crun, image, name, *sleep)
            kit.wait_for(f"{n} tasks running", lambda: ctr_running(ctrd) == n, timeout=60 + n)
            t1 = time.monotonic()
            if n == MEM_COUNTS[-1]:
                res.add("scale", "ctr", start_figure("ctr", n), "ms", [(t1 - t0) * 1000.0],
                        "one after the other, as a shell loop runs them")
            rec = MemRecorder(res, "ctr", n)
            rec.daemon("containerd", ctrd.proc.pid)
            rec.supervisors("containerd-shim-runc-v2", ctrd.shim_pids())
            rec.total()
            ctrd.remove_all_tasks()
        ctrd.stop()
    mem_ratios(res)


def mem_ratios(res):
    def ratio(label, ours, theirs):
        if ours and theirs:
            res.ratios.append(f"{label} = {ours / theirs:.2f}")

    for n in MEM_COUNTS:
        ours = res.median("mem", "berth", total_figure(n))
        for tool in ("podman", "ctr"):
            ratio(f"mem, total PSS with {n} containers: berth/{tool}", ours,
                  res.median("mem", tool, total_figure(n)))
        for fig in ("PSS, idle", "VmRSS, idle"):
            ratio(f"mem, agent/containerd {fig} with {n} containers",
                  res.median("mem", "berth", f"berth agent {fig}, {n} containers"),
                  res.median("mem", "ctr", f"containerd {fig}, {n} containers"))
    n = MEM_COUNTS[-1]
    for fig in ("PSS", "VmRSS"):
        shim = res.median("mem", "berth", f"berth-shim {fig}, {n} containers")
        ratio(f"mem, berth-shim/conmon {fig}", shim, res.median("mem", "podman", f"conmon {fig}, {n} containers"))
        ratio(f"mem, berth-shim/containerd-shim {fig}", shim,
              res.median("mem", "ctr", f"containerd-shim-runc-v2 {fig}, {n} containers"))
    ours = res.median("scale", "berth", start_figure("berth", n))
    for tool in ("podman", "ctr"):
        ratio(f"scale, {n} started at once: berth/{tool}", ours,
              res.median("scale", tool, start_figure(tool, n)))


def ctr_running(ctrd):
    out = subprocess.run(ctrd.cmd("task", "ls"), capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines()[1:] if line.split()[-1:] == ["RUNNING"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sections", nargs="*",
                    default=["pull", "start", "exit", "mem", "outage", "scale"])
    ap.add_argument("--runs", type=int, default=5, help="cold pulls per figure")
    ap.add_argument("--start-runs", type=int, default=10,
                    help="starts and runs to exit per figure (after one warm-up)")
    ap.add_argument("--log-dir", help="keep the berth agents' logs here")
    ap.add_argument("--tools", default="berth,podman,ctr",
                    help="comma-separated subset of berth,podman,ctr (floors always run)")
    ap.add_argument("--outage-sizes", default="1,20,50",
                    help="pod counts of the outage section")
    ap.add_argument("--scale-sizes", default="10,100,500",
                    help="pod counts of the scale section")
    ap.add_argument("--out", default=os.path.join(kit.REPO, "bench", "RESULTS.md"))
    ap.add_argument("--no-readme", action="store_true",
                    help="do not write README.md's table from the results")
    ap.add_argument("--cache", default="/var/tmp/berth-bench-cache",
                    help="where image layouts and registry data are kept between runs")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py needs root (mounts, runtimes, podman/containerd stores)")
    for tool in ("podman", "ctr", "containerd", "skopeo", "docker-registry", "curl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/install-deps.sh --bench")
    tools = args.tools.split(",")
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    if "berth" in tools and not os.path.exists(BERTH):
        sys.exit(f"{BERTH} is missing: run cargo build --release")

    base = kit.loop_fs()
    kit.log(f"stores on a fresh journaled ext4 (loop device) at {base}")
    registry = kit.Registry(os.path.join(args.cache, "registry"))
    refs = kit.build_images(os.path.join(args.cache, "layouts"), registry)
    res = kit.Results()
    res.ratios = []
    gate = kit.QuietGate()
    started = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    if "pull" in args.sections:
        section_pull(res, gate, base, registry, refs, args.runs, tools)
    if "start" in args.sections or "exit" in args.sections:
        section_start_exit(res, gate, base, registry, refs, args.start_runs, tools,
                           args.sections, args.log_dir)
    if "mem" in args.sections:
        section_mem(res, base, registry, refs, tools, args.log_dir)
    if "outage" in args.sections:
        section_outage(res, base, registry, refs, tools,
                       [int(n) for n in args.outage_sizes.split(",")], args.log_dir)
    if "scale" in args.sections:
        section_scale(res, base, registry, refs,
                      [int(n) for n in args.scale_sizes.split(",")], args.log_dir)

    images = []
    for name in ("tiny", "big"):
        mdig, nlayers, size = kit.describe_layout(os.path.join(args.cache, "layouts", name))
        images.append(f"- bench/{name}: {nlayers} layers, {size / 1e6:.1f} MB compressed, manifest {mdig}")
    versions = {t: kit.out(f"{t} --version 2>&1 | head -1")
                for t in ("podman", "containerd", "crun", "runc", BERTH) if shutil.which(t)}
    report = "\n".join([
        f"# berth benchmarks ({started})", "",
        "Command: " + " ".join(["bench/bench.py", *sys.argv[1:]]), "",
        f"Machine: {kit.machine()}. Persistent stores on a fresh journaled ext4 on a loop "
        "device, volatile state on tmpfs, for every tool. Times in ms: median of the runs, "
        "min and max; n is the number of timed runs (after one warm-up where a row says "
        "so in the method, bench.py).", "",
        "Images (local registry on 127.0.0.1):", *images, "",
        "Versions:", *[f"- {k}: {v}" for k, v in versions.items()], "",
        "## Ratios (same run)", *[f"- {r}" for r in res.ratios], "",
        "## All figures", res.markdown(), "",
    ])
    with open(args.out, "w") as f:
        f.write(report)
    print(report)
    if not args.no_readme and os.path.abspath(args.out) == readme.RESULTS:
        readme.main_write()


if __name__ == "__main__":
    main()
