#!/usr/bin/env python3
"""The README's performance table, written from bench/RESULTS.md.

    bench/readme.py --write   replace the table in README.md (bench.py does this)
    bench/readme.py --check   exit 1 when README.md's table is not the one
                              RESULTS.md gives (make check runs this)

No figure in the README is typed by hand: every cell is a median from the
last run's "All figures" table, looked up by the same (section, tool,
figure) names bench.py writes.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from names import (  # noqa: E402
    BERTH_EXIT, BERTH_PULL, CTR_EXIT, CTR_PULL_RESTARTED, CTR_PULL_WARM, CTR_START, FLOOR_EXIT,
    FLOOR_PIPELINED, FLOOR_START, MEM_COUNTS, PODMAN_EXIT, PODMAN_PULL, berth_start, outage_figure,
    cells_of, podman_start, scale_figures, start_figure, total_figure)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "RESULTS.md")
README = os.path.join(REPO, "README.md")
BEGIN = "<!-- bench table: written by bench/readme.py from bench/RESULTS.md; do not edit -->"
END = "<!-- end of bench table -->"
BIG = 50  # MEM_COUNTS[-1], the count the scale and supervisor rows use


def parse(text):
    """(section, tool, figure) -> (median, unit) of RESULTS.md's rows, and its header lines."""
    figures = {}
    for line in text.splitlines():
        cells = cells_of(line)
        if len(cells) == 9 and cells[4].startswith("**"):
            section, tool, figure, unit = cells[:4]
            figures[(section, tool, figure)] = (float(cells[4].strip("*")), unit)
    return figures


def shown(value, unit):
    if unit == "ms":
        return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"
    if unit == "kB":
        return f"{value:.0f} kB" if value < 1024 else f"{value / 1024:.1f} MB"
    return f"{value:g} {unit}"


def table(text):
    figures = parse(text)

    def cell(*keys, sep=" / "):
        values = [figures.get(k) for k in keys]
        if not any(values):
            return "–"
        return sep.join(shown(*v) if v else "–" for v in values)

    def noted(value, note):
        return value if value == "–" else f"{value} ({note})"

    def pss_and_rss(tool, name):
        pss = figures.get(("mem", tool, f"{name} PSS, {BIG} containers"))
        rss = figures.get(("mem", tool, f"{name} VmRSS, {BIG} containers"))
        return f"{shown(*pss)} ({shown(*rss)})" if pss and rss else "–"

    big = re.search(r"bench/big: (\d+) layers, ([\d.]+) MB", text)
    big_label = f"{big.group(1)} layers, {big.group(2)} MB compressed" if big else "bench/big"
    counts = " / ".join(str(n) for n in MEM_COUNTS)
    sizes = (10, 100, 500)
    rows = [
        ("what", "berth", "podman", "containerd (`ctr`)", "floor"),
        (f"cold pull + unpack, {big_label}", cell(("pull big", "berth", BERTH_PULL)),
         cell(("pull big", "podman", PODMAN_PULL)),
         noted(cell(("pull big", "ctr", CTR_PULL_WARM)),
               cell(("pull big", "ctr", CTR_PULL_RESTARTED)) + " with the daemon restarted"),
         noted(cell(("pull big", "floor", FLOOR_PIPELINED)),
               "`curl \\| tar` per layer, then syncfs")),
        ("manifest written / command issued → container running (crun, no network)",
         cell(("start", "berth", berth_start("none"))), cell(("start", "podman", podman_start("none"))),
         cell(("start", "ctr", CTR_START)), cell(("start", "floor", FLOOR_START))),
        ("the same with a bridge network", cell(("start", "berth", berth_start("bridge"))),
         cell(("start", "podman", podman_start("bridge"))), "–", "–"),
        ("run `true` to its exit, removed", cell(("exit", "berth", BERTH_EXIT)),
         cell(("exit", "podman", PODMAN_EXIT)), cell(("exit", "ctr", CTR_EXIT)),
         cell(("exit", "floor", FLOOR_EXIT))),
        (f"{BIG} containers started at once → all running (podman: `play kube`)",
         *(cell(("scale", tool, start_figure(tool, BIG))) for tool in ("berth", "podman", "ctr")),
         "–"),
        (f"supervisor per container, PSS (VmRSS), {BIG} running",
         *(pss_and_rss(tool, name) for tool, name in (
             ("berth", "berth-shim"), ("podman", "conmon"), ("ctr", "containerd-shim-runc-v2"))),
         "–"),
        (f"daemon idle with {counts} containers, PSS",
         cell(*(("mem", "berth", f"berth agent PSS, idle, {n} containers") for n in MEM_COUNTS)),
         "no daemon",
         cell(*(("mem", "ctr", f"containerd PSS, idle, {n} containers") for n in MEM_COUNTS)), "–"),
        (f"every process of the tool with {counts} containers, PSS",
         *(cell(*(("mem", tool, total_figure(n)) for n in MEM_COUNTS))
           for tool in ("berth", "podman", "ctr")), "–"),
    ]
    for n in (20, 50):
        rows.append((f"power cut → {n} pods running again (agent started / `podman start --all`)",
                     cell(("outage", "berth", outage_figure("berth", n))),
                     cell(("outage", "podman", outage_figure("podman", n))), "–", "–"))
    converge, react = scale_figures
    rows.append((f"{' / '.join(map(str, sizes))} pods written at once → all running (runc)",
                 cell(*(("scale", "berth", converge(n)) for n in sizes)), "–", "–", "–"))
    rows.append((f"one file edited among {' / '.join(map(str, sizes))} pods → container "
                 "replaced (1 s grace included)",
                 cell(*(("scale", "berth", react(n)) for n in sizes)), "–", "–", "–"))
    lines = []
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(row) + " |")
        if i == 0:
            lines.append("|---|---:|---:|---:|---:|")
    stamp = re.search(r"^# berth benchmarks \((.*)\)$", text, re.M)
    command = re.search(r"^Command: (.*)$", text, re.M)
    source = (f"From the run of {stamp.group(1) if stamp else '?'}"
              f" (`{command.group(1) if command else 'bench/bench.py'}`), medians; "
              "ratios and every figure with its min, max and n are in bench/RESULTS.md.")
    return "\n".join([BEGIN, source, "", *lines, END])


def replaced(readme, new_table):
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < 0:
        sys.exit(f"{README}: the markers of the bench table are missing")
    return readme[:start] + new_table + readme[end + len(END):]


def current_and_updated():
    with open(RESULTS) as f:
        new_table = table(f.read())
    with open(README) as f:
        readme = f.read()
    return readme, replaced(readme, new_table)


def main_write():
    readme, updated = current_and_updated()
    if updated != readme:
        with open(README, "w") as f:
            f.write(updated)


def main():
    if sys.argv[1:] == ["--write"]:
        main_write()
        return
    readme, updated = current_and_updated()
    if updated != readme:
        sys.exit("README.md's bench table is not the one bench/RESULTS.md gives: "
                 "run bench/readme.py --write (or make bench)")


if __name__ == "__main__":
    main()
