"""podman and containerd, each with its own state under the benchmark's loop fs
(persistent) and on a tmpfs (volatile: podman's runroot and tmp dir,
containerd's state dir), as on a host where /run is a tmpfs.

Nothing here touches /var/lib/containers or /var/lib/containerd: podman gets
its own containers.conf/storage.conf, containerd its own root, state and
socket. Both use the cgroupfs manager (no systemd here).
"""

import os
import shutil
import subprocess
import time

from benchkit import log, on_exit, sh, tmpfs, umount_under, wait_for


class Podman:
    def __init__(self, base, registry_addr, runtime="crun"):
        self.dir = os.path.join(base, "podman")
        for d in ("root", "net"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        self.volatile = [os.path.join(self.dir, d) for d in ("runroot", "tmp")]
        for path in self.volatile:
            tmpfs(path)
        self.env = dict(os.environ,
                        CONTAINERS_CONF=os.path.join(self.dir, "containers.conf"),
                        CONTAINERS_STORAGE_CONF=os.path.join(self.dir, "storage.conf"),
                        CONTAINERS_REGISTRIES_CONF=os.path.join(self.dir, "registries.conf"))
        with open(self.env["CONTAINERS_CONF"], "w") as f:
            # This host has no CAP_SYS_RESOURCE and a hard NOFILE of 20000:
            # podman's rootful default ulimits would fail in setrlimit.
            f.write(f"""[containers]
log_driver = "k8s-file"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_config_dir = "{self.dir}/net"
cni_plugin_dirs = ["/usr/lib/cni"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.dir}/events.log"
tmp_dir = "{self.dir}/tmp"
runtime = "{runtime}"
""")
        with open(self.env["CONTAINERS_STORAGE_CONF"], "w") as f:
            f.write(f"""[storage]
driver = "overlay"
graphroot = "{self.dir}/root"
runroot = "{self.dir}/runroot"
""")
        with open(self.env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
            f.write(f"""unqualified-search-registries = []
[[registry]]
location = "{registry_addr}"
insecure = true
""")
        on_exit(self.cleanup)

    def cmd(self, *args):
        return ["podman", *args]

    def run(self, *args, check=True):
        return sh(self.cmd(*args), env=self.env, check=check)

    def reset(self):
        self.run("rm", "-a", "-f", "-t", "0", check=False)
        self.run("pod", "rm", "-a", "-f", check=False)
        self.run("rmi", "-a", "-f", check=False)

    def reboot_volatile(self):
        """What a reboot does to podman's state: its mounts gone, its run
        root and tmp dir (tmpfs) empty again."""
        umount_under(os.path.join(self.dir, "root"))
        for path in self.volatile:
            umount_under(path)
            tmpfs(path)

    def conmon_pids(self):
        """This run's conmons: their command lines name its storage."""
        found = subprocess.run(["pgrep", "-f", f"^/usr/bin/conmon .*{self.dir}"],
                               capture_output=True, text=True).stdout.split()
        return [int(p) for p in found]

    def cleanup(self):
        self.run("rm", "-a", "-f", "-t", "0", check=False)
        self.run("system", "reset", "-f", check=False)
        umount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        # paths podman hard-codes outside its configured dirs
        for path in ("/run/containers/networks",):
            shutil.rmtree(path, ignore_errors=True)


class Containerd:
    def __init__(self, base):
        self.dir = os.path.join(base, "containerd")
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.proc = None
        on_exit(self.cleanup)

    def start(self):
        os.makedirs(os.path.join(self.dir, "root"), exist_ok=True)
        state = os.path.join(self.dir, "state")
        if not os.path.ismount(state):
            tmpfs(state)
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
""")
        logf = open(os.path.join(self.dir, "containerd.log"), "a")
        self.proc = subprocess.Popen(["containerd", "--config", config], stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("containerd to answer",
                 lambda: subprocess.run(self.cmd("version"), capture_output=True).returncode == 0,
                 timeout=20)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def wipe(self):
        """Stops containerd and empties its store (between cold pulls)."""
        self.stop()
        umount_under(self.dir)
        shutil.rmtree(os.path.join(self.dir, "root"), ignore_errors=True)
        shutil.rmtree(os.path.join(self.dir, "state"), ignore_errors=True)

    def remove_image(self, ref):
        """The image, its content and snapshots removed, the daemon kept
        running (a cold pull against a warm daemon)."""
        self.run("image", "rm", "--sync", ref, check=False)

    def shim_pids(self):
        found = subprocess.run(["pgrep", "-f", f"containerd-shim-runc-v2 .*-address {self.sock}"],
                               capture_output=True, text=True).stdout.split()
        return [int(p) for p in found]

    def cmd(self, *args):
        return ["ctr", "--address", self.sock, "--namespace", "bench", *args]

    def run(self, *args, check=True):
        return sh(self.cmd(*args), check=check)

    def remove_all_tasks(self):
        ids = subprocess.run(self.cmd("task", "ls", "-q"), capture_output=True, text=True).stdout.split()
        for cid in ids:
            self.run("task", "kill", "-s", "SIGKILL", cid, check=False)
        deadline = time.monotonic() + 10
        for cid in ids:
            while self.run("task", "rm", "-f", cid, check=False).returncode != 0 \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
        for cid in subprocess.run(self.cmd("container", "ls", "-q"), capture_output=True,
                                  text=True).stdout.split():
            self.run("container", "rm", cid, check=False)

    def cleanup(self):
        if self.proc:
            self.remove_all_tasks()
        self.stop()
        umount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        log("containerd stopped")
