#!/usr/bin/env python3
"""berth's benchmarks against podman and containerd, in one run.

    sudo bench/bench.py [pull] [start] [mem] [--runs N] [--out FILE]

Sections:
  pull   cold pull + unpack of a 6-layer ~270 MB image (and a 1 MB one):
         berth pull, podman pull, ctr image pull; floors: curl of all blobs,
         tar -xzf of the layers 2 in parallel.
See benchkit.py for the method. Needs root, podman, containerd, skopeo,
docker-registry (`scripts/install-deps.sh --bench`) and a release build of
berth (`cargo build --release`).
"""

import argparse
import concurrent.futures
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
        values = []
        for i in range(runs + 1):  # the first run is a warm-up
            prepare()
            kit.sh("sync")
            gate.wait()
            ms = kit.timed(action)
            if i:
                values.append(ms)
        return values

    for name in ("big", "tiny"):
        ref = refs[name]
        sec = f"pull {name}"
        if "berth" in tools:
            res.add(sec, "berth", "berth pull (download+unpack)", "ms",
                    cold(berth.wipe,
                         lambda: kit.sh(berth.cmd("pull", "--hosts-dir", berth.hosts_dir, ref))),
                    gate.note())
        if "podman" in tools:
            res.add(sec, "podman", "podman pull", "ms",
                    cold(podman.reset, lambda: podman.run("pull", "-q", ref)), gate.note())

        def ctr_prepare():
            ctrd.wipe()
            ctrd.start()
        if "ctr" in tools:
            res.add(sec, "ctr", "ctr image pull", "ms",
                    cold(ctr_prepare, lambda: ctrd.run("image", "pull", "--plain-http", ref)),
                    gate.note())
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
        res.add(sec, "floor", "curl all blobs (1 connection)", "ms",
                cold(floor_prepare, curl_all), "no verification")

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
        res.add(sec, "floor", "tar -xzf layers, 2 in parallel", "ms",
                cold(untar_prepare, untar_all), "whiteouts kept as files, no fsync")
        floor_prepare()
        if "berth" not in tools:
            continue

        ctr = res.median(sec, "ctr", "ctr image pull")
        ours = res.median(sec, "berth", "berth pull (download+unpack)")
        floor = (res.median(sec, "floor", "curl all blobs (1 connection)")
                 + res.median(sec, "floor", "tar -xzf layers, 2 in parallel"))
        res.ratios.append(f"{sec}: berth/ctr = {ours / ctr:.2f}, "
                          f"berth/podman = {ours / res.median(sec, 'podman', 'podman pull'):.2f}, "
                          f"berth/(curl+tar floor) = {ours / floor:.2f}")


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
