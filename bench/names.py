"""The names of the figures bench.py records, shared with readme.py, which
looks them up in bench/RESULTS.md."""

import re


BERTH_PULL = "berth pull (download+unpack)"
PODMAN_PULL = "podman pull"
CTR_PULL_RESTARTED = "ctr image pull, daemon restarted before each pull"
CTR_PULL_WARM = "ctr image pull, warm daemon"
FLOOR_PIPELINED = "curl | tar -xz per layer, all layers at once, then syncfs"

CTR_START = "ctr run -d -> marker, crun, no network"
FLOOR_START = "mount(2) overlay + crun run -d of a prepared bundle"

BERTH_EXIT = "manifest written -> exited, manifest removed -> pod gone, crun"
PODMAN_EXIT = "podman run --rm true, crun, network none"
CTR_EXIT = "ctr run --rm true, crun"
FLOOR_EXIT = "mount(2) overlay + crun run of `true` + umount"

MEM_COUNTS = (0, 5, 50)


def berth_start(network):
    return f"manifest written -> marker, crun, network {network}"


def podman_start(network):
    return f"podman run -d -> marker, crun, network {network}"


def start_figure(tool, n):
    """Starting n containers at once, until all run."""
    return {
        "berth": f"{n} pods written at once -> all running, crun",
        "podman": f"podman play kube of {n} pods -> all running, crun",
        "ctr": f"{n} x ctr run -d -> all running, crun",
    }[tool]


def total_figure(n):
    return f"total PSS, {n} containers"


def outage_figure(tool, n):
    return {
        "berth": f"power cut -> {n} pods running again (agent started)",
        "podman": f"power cut -> {n} containers running again (podman start --all)",
    }[tool]


def converge_figure(n):
    return f"{n} pods written at once -> all running, runc"


def react_figure(n):
    return f"one file edited among {n} -> its container replaced, runc"


scale_figures = (converge_figure, react_figure)


# How RESULTS.md's table cells are written and read back.
def cell_text(text):
    """A Markdown table cell: a `|` in it (`curl | tar`) is escaped, or it would split the row."""
    return str(text).replace("|", "\\|")


def cells_of(line):
    """The cells of a Markdown table row, `\\|` read back as `|`."""
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.strip().replace("\\|", "|") for p in parts]
