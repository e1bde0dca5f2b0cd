#!/usr/bin/env python3
"""berth's benchmarks against podman and containerd, in one run.

    sudo bench/bench.py [pull] [start] [mem] [--runs N] [--out FILE]

Sections:
  pull   cold pull + unpack of a 6-layer ~270 MB image (and a 1 MB one):
         berth pull, podman pull, ctr image pull; floors: curl of all blobs,
         tar -xzf of the layers 2 in parallel.
  start  image present: from "manifest written" (berth: an atomic rename into
         the watched directory, debounce included) or "command issued"
         (podman run -d, ctr run -d) until a marker file the container writes
         appears on the host; same runtime (crun) and network mode; floor:
         mount an overlay and crun run -d a prepared bundle.
  exit   run `true` to its exit: podman run --rm, ctr run --rm; berth: from
         manifest written until berth's status shows the container terminated.
  mem    berth-shim VmRSS/PSS with 5 containers running, and the agent's
         VmRSS idle with those 5 pods, against conmon and containerd.
See benchkit.py for the method. Needs root, podman, containerd, skopeo,
docker-registry (`scripts/install-deps.sh --bench`) and a release build of
berth (`cargo build --release`).
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
from peers import Containerd, Podman  # noqa: E402

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
        starts, busy = gate.starts, gate.busy_starts
        for i in range(runs + 1):  # the first run is a warm-up
            prepare()
            kit.sh("sync")
            gate.wait()
            ms = kit.timed(action)
            if i:
                values.append(ms)
        n = gate.starts - starts
        return values, f"{n - (gate.busy_starts - busy)}/{n} quiet starts"

    for name in ("big", "tiny"):
        ref = refs[name]
        sec = f"pull {name}"
        if "berth" in tools:
            values, quiet = cold(berth.wipe,
                                 lambda: kit.sh(berth.cmd("pull", "--hosts-dir", berth.hosts_dir, ref)))
            res.add(sec, "berth", "berth pull (download+unpack)", "ms", values,
                    f"{quiet}; blobs verified, layers unpacked while downloading, one syncfs")
        if "podman" in tools:
            values, quiet = cold(podman.reset, lambda: podman.run("pull", "-q", ref))
            res.add(sec, "podman", "podman pull", "ms", values, quiet)

        def ctr_prepare():
            ctrd.wipe()
            ctrd.start()
        if "ctr" in tools:
            values, quiet = cold(ctr_prepare,
                                 lambda: ctrd.run("image", "pull", "--plain-http", ref))
            res.add(sec, "ctr", "ctr image pull", "ms", values, quiet)
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
        floor_prepare()
        if "berth" not in tools:
            continue

        ours = res.median(sec, "berth", "berth pull (download+unpack)")
        floor = (res.median(sec, "floor", "curl all blobs (1 connection)")
                 + res.median(sec, "floor", "tar -xzf layers, 2 in parallel"))
        ratios = []
        for tool, figure, target in (("ctr", "ctr image pull", " (target <= 0.5)"),
                                     ("podman", "podman pull", "")):
            theirs = res.median(sec, tool, figure)
            if theirs:
                ratios.append(f"berth/{tool} = {ours / theirs:.2f}{target}")
        ratios.append(f"berth/(curl+tar floor) = {ours / floor:.2f} (target <= 1.3)")
        res.ratios.append(f"{sec}: " + ", ".join(ratios))


# ---------------------------------------------------------------- start / exit / mem

def ensure_crun_can_run():
    """crun 1.8 refuses to run while cgroup2 holds a controller (hugetlb on
    this VM); a cgroup-v1 hugetlb hierarchy is what a plain v1 host has."""
    target = "/sys/fs/cgroup/hugetlb"
    with open("/proc/self/mountinfo") as f:
        if any(line.split()[4] == target for line in f):
            return
    os.makedirs(target, exist_ok=True)
    if kit.sh(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", target], check=False).returncode:
        kit.log("could not mount a v1 hugetlb hierarchy: crun may refuse to run")


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


class BerthAgent:
    """`berth run` on the loop fs, with a given runtime handler and network driver."""

    def __init__(self, base, registry_addr, tag, handler="crun", network="none"):
        self.cli = Berth(base, registry_addr)
        self.manifests = os.path.join(base, "berth", f"manifests-{tag}")
        os.makedirs(self.manifests, exist_ok=True)
        config = os.path.join(base, "berth", f"agent-{tag}.toml")
        with open(config, "w") as f:
            f.write(f"""[runtime]
default-handler = "{handler}"
[network]
driver = "{network}"
[source]
debounce = "10ms"
[images]
hosts-dir = "{self.cli.hosts_dir}"
""")
        log_file = open(os.path.join(base, "berth", f"agent-{tag}.log"), "w")
        self.proc = subprocess.Popen(self.cli.cmd("--manifests", self.manifests, "run",
                                                  "--config", config),
                                     stdout=log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        kit.on_exit(self.stop)
        kit.wait_for("the agent to be ready", lambda: self.status().get("agent", {})
                     .get("state") == "Ready", timeout=60)

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
        tmp = os.path.join(self.manifests, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.manifests, f"{name}.yaml"))

    def remove(self, name):
        os.unlink(os.path.join(self.manifests, f"{name}.yaml"))
        kit.wait_for(f"pod {name} to be removed", lambda: self.pod(name) is None, timeout=60)

    def pids(self):
        shims = os.path.join(self.cli.run_root, "shims")
        found = []
        for cid in os.listdir(shims) if os.path.isdir(shims) else []:
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(shims, cid, "shim.pid")) as f:
                    found.append(int(f.read().split()[0]))
        return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def terminated(pod):
    details = (pod or {}).get("details", {}).get("pod", {})
    for container in details.get("containers", []):
        if "terminated" in container.get("state", {}):
            return True
    return False


def section_start(res, gate, base, registry, refs, runs, tools):
    ensure_crun_can_run()
    image = refs["tiny"]
    out_dir = os.path.join(base, "out")
    os.makedirs(out_dir, exist_ok=True)
    ready = os.path.join(out_dir, "ready")
    marker_cmd = ["sh", "-c", "touch /out/ready; sleep 30"]

    def measure(start, cleanup):
        values = []
        watch = kit.MarkerWatch(out_dir)
        try:
            for i in range(runs + 1):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ready)
                gate.wait()
                t0 = time.monotonic()
                start(i)
                t1 = watch.wait_for("ready")
                cleanup(i)
                if i:
                    values.append((t1 - t0) * 1000.0)
        finally:
            watch.close()
        return values

    if "berth" in tools:
        for network in ("none", "bridge"):
            kit.sh(Berth(base, registry.addr).cmd("pull", "--hosts-dir",
                                                 Berth(base, registry.addr).hosts_dir, image))
            agent = BerthAgent(base, registry.addr, f"start-{network}", network=network)
            res.add("start", "berth", f"manifest written -> marker, crun, network {network}", "ms",
                    measure(lambda i: agent.write(f"s{i}", pod_manifest(f"s{i}", image, marker_cmd,
                                                                          out_dir)),
                            lambda i: agent.remove(f"s{i}")), gate.note())
            if network == "none":
                exit_values = []
                for i in range(runs + 1):
                    gate.wait()
                    t0 = time.monotonic()
                    agent.write(f"e{i}", pod_manifest(f"e{i}", image, ["true"]))
                    kit.wait_for("the container to exit", lambda: terminated(agent.pod(f"e{i}")),
                                 timeout=60)
                    t1 = time.monotonic()
                    agent.remove(f"e{i}")
                    if i:
                        exit_values.append((t1 - t0) * 1000.0)
                res.add("exit", "berth", "manifest written -> exit seen in status, crun",
                        "ms", exit_values, gate.note())
            agent.stop()

    if "podman" in tools:
        podman = Podman(base, registry.addr, runtime="crun")
        podman.run("pull", "-q", image)
        for network in ("none", "bridge"):
            res.add("start", "podman", f"podman run -d -> marker, crun, network {network}", "ms",
                    measure(lambda i: podman.run("run", "-d", "--name", f"s{i}",
                                                 f"--network={network}", "-v", f"{out_dir}:/out",
                                                 image, *marker_cmd),
                            lambda i: podman.run("rm", "-f", "-t", "0", f"s{i}")), gate.note())
        values = []
        for i in range(runs + 1):
            gate.wait()
            ms = kit.timed(lambda: podman.run("run", "--rm", "--network=none", image, "true"))
            if i:
                values.append(ms)
        res.add("exit", "podman", "podman run --rm true, crun, network none", "ms", values,
                gate.note())

    if "ctr" in tools:
        ctrd = Containerd(base)
        ctrd.wipe()
        ctrd.start()
        ctrd.run("image", "pull", "--plain-http", image)
        mount = f"type=bind,src={out_dir},dst=/out,options=rbind:rw"
        res.add("start", "ctr", "ctr run -d -> marker, crun, no network", "ms",
                measure(lambda i: ctrd.run("run", "-d", "--runc-binary", "crun", "--mount", mount,
                                           image, f"s{i}", *marker_cmd),
                        lambda i: ctrd.remove_all_tasks()), gate.note())
        values = []
        for i in range(runs + 1):
            gate.wait()
            ms = kit.timed(lambda: ctrd.run("run", "--rm", "--runc-binary", "crun", image,
                                            f"e{i}", "true"))
            if i:
                values.append(ms)
        res.add("exit", "ctr", "ctr run --rm true, crun", "ms", values, gate.note())
        ctrd.stop()

    # floor: a prepared bundle (busybox rootfs, runc spec + /out bind), overlay + crun run -d
    floor = os.path.join(base, "floor-start")
    lower = os.path.join(floor, "lower")
    kit.busybox_root(lower)
    bundle = os.path.join(floor, "bundle")
    os.makedirs(bundle)
    kit.sh(["crun", "spec", "--bundle", bundle])
    with open(os.path.join(bundle, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = marker_cmd
    spec["root"] = {"path": "rootfs", "readonly": False}
    spec["mounts"].append({"destination": "/out", "type": "bind", "source": out_dir,
                           "options": ["rbind", "rw"]})
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs)

    def floor_start(i):
        upper, work = os.path.join(floor, f"u{i}"), os.path.join(floor, f"w{i}")
        os.makedirs(upper)
        os.makedirs(work)
        kit.sh(["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={lower},upperdir={upper},workdir={work}", rootfs])
        kit.sh(["crun", "--root", os.path.join(floor, "state"), "run", "-d", "--bundle", bundle,
                f"floor{i}"], stdin=subprocess.DEVNULL)

    def floor_cleanup(i):
        kit.sh(["crun", "--root", os.path.join(floor, "state"), "delete", "-f", f"floor{i}"],
               check=False)
        kit.sh(["umount", rootfs], check=False)
    res.add("start", "floor", "overlay mount + crun run -d of a prepared bundle", "ms",
            measure(floor_start, floor_cleanup), "no network, no image work")

    for network, peer in (("none", "podman run -d -> marker, crun, network none"),
                          ("bridge", "podman run -d -> marker, crun, network bridge")):
        ours = res.median("start", "berth", f"manifest written -> marker, crun, network {network}")
        theirs = res.median("start", "podman", peer)
        if ours and theirs:
            res.ratios.append(f"start, network {network}: berth/podman = {ours / theirs:.2f}")
    ours = res.median("start", "berth", "manifest written -> marker, crun, network none")
    floor_ms = res.median("start", "floor", "overlay mount + crun run -d of a prepared bundle")
    ctr_ms = res.median("start", "ctr", "ctr run -d -> marker, crun, no network")
    if ours and floor_ms:
        res.ratios.append(f"start: berth/floor = {ours / floor_ms:.2f}")
    if ours and ctr_ms:
        res.ratios.append(f"start: berth/ctr = {ours / ctr_ms:.2f}")


def rss_pss(pid):
    rss = pss = 0
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
    return rss, pss


def section_mem(res, base, registry, refs, tools):
    ensure_crun_can_run()
    image = refs["tiny"]
    n = 5
    if "berth" in tools:
        agent = BerthAgent(base, registry.addr, "mem", network="bridge")
        for i in range(n):
            agent.write(f"m{i}", pod_manifest(f"m{i}", image, ["sleep", "600"], restart="Always"))
        kit.wait_for("5 running shims", lambda: len(agent.pids()) >= n, timeout=120)
        kit.wait_for("5 running pods", lambda: all(
            (agent.pod(f"m{i}") or {}).get("phase") == "Running" for i in range(n)), timeout=120)
        time.sleep(2)  # settle: this is a measurement, not synchronisation
        shims = [rss_pss(pid) for pid in agent.pids()]
        res.add("mem", "berth", "berth-shim VmRSS, 5 running", "kB", [r for r, _ in shims])
        res.add("mem", "berth", "berth-shim PSS, 5 running", "kB", [p for _, p in shims])
        res.add("mem", "berth", "agent VmRSS, idle with 5 pods", "kB",
                [rss_pss(agent.proc.pid)[0] for _ in range(3)])
        for i in range(n):
            agent.remove(f"m{i}")
        agent.stop()
    if "podman" in tools:
        podman = Podman(base, registry.addr, runtime="crun")
        podman.run("pull", "-q", image)
        for i in range(n):
            podman.run("run", "-d", "--name", f"m{i}", "--network=none", image, "sleep", "600")
        pids = [int(p) for p in kit.out("pgrep -x conmon").split()]
        res.add("mem", "podman", "conmon VmRSS, 5 running", "kB", [rss_pss(p)[0] for p in pids])
        res.add("mem", "podman", "conmon PSS, 5 running", "kB", [rss_pss(p)[1] for p in pids])
        podman.reset()
    if "ctr" in tools:
        ctrd = Containerd(base)
        ctrd.wipe()
        ctrd.start()
        ctrd.run("image", "pull", "--plain-http", image)
        time.sleep(5)  # idle
        res.add("mem", "ctr", "containerd VmRSS, idle", "kB", [rss_pss(ctrd.proc.pid)[0]])
        for i in range(n):
            ctrd.run("run", "-d", image, f"m{i}", "sleep", "600")
        pids = [int(p) for p in kit.out(
            f"pgrep -f 'containerd-shim-runc-v2 .*-address {ctrd.sock}'").split()]
        res.add("mem", "ctr", "containerd-shim-runc-v2 VmRSS, 5 running", "kB",
                [rss_pss(p)[0] for p in pids])
        res.add("mem", "ctr", "containerd-shim-runc-v2 PSS, 5 running", "kB",
                [rss_pss(p)[1] for p in pids])
        ctrd.remove_all_tasks()
        ctrd.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sections", nargs="*", default=["pull"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tools", default="berth,podman,ctr",
                    help="comma-separated subset of berth,podman,ctr (floors always run)")
    ap.add_argument("--out", default=os.path.join(kit.REPO, "bench", "RESULTS.md"))
    ap.add_argument("--cache", default="/var/tmp/berth-bench-cache",
                    help="where image layouts and registry data are kept between runs")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py needs root (mounts, runtimes, podman/containerd stores)")
    for tool in ("podman", "ctr", "containerd", "skopeo", "docker-registry", "curl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/install-deps.sh --bench")
    tools = args.tools.split(",")
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
        section_start(res, gate, base, registry, refs, max(args.runs, 10), tools)
    if "mem" in args.sections:
        section_mem(res, base, registry, refs, tools)

    images = []
    for name in ("tiny", "big"):
        mdig, nlayers, size = kit.describe_layout(os.path.join(args.cache, "layouts", name))
        images.append(f"- bench/{name}: {nlayers} layers, {size / 1e6:.1f} MB compressed, manifest {mdig}")
    versions = {t: kit.out(f"{t} --version 2>&1 | head -1")
                for t in ("podman", "containerd", "crun", "runc", BERTH) if shutil.which(t)}
    report = "\n".join([
        f"# berth benchmarks ({started})", "",
        f"Machine: {os.cpu_count()} cores, kernel {os.uname().release}; stores on a fresh "
        "journaled ext4 on a loop device. Times in ms: median of the runs, min and max.", "",
        "Images (local registry on 127.0.0.1):", *images, "",
        "Versions:", *[f"- {k}: {v}" for k, v in versions.items()], "",
        "## Ratios (same run)", *[f"- {r}" for r in res.ratios], "",
        "## All figures", res.markdown(), "",
    ])
    with open(args.out, "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
