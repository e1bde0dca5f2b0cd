#!/usr/bin/env python3
"""Finds import circles between the modules of a Rust crate's src/.

For every module directory (the crate root, agent/, pod/, image/, ...) it
builds the graph of its direct child modules, where A -> B when code
anywhere under A names `crate::...::B` (or reaches it through `super::`),
and reports every strongly connected component with more than one module.
Exit code 1 when there is a circle.  Usage: module-cycles.py [SRC_DIR...]
"""
import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def module_path(src: Path, file: Path):
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def references(src: Path, file: Path, mods: set):
    here = module_path(src, file)
    # `mod.rs`/`lib.rs` files *are* the module; a plain file is its own module too.
    text = strip_comments(file.read_text())
    found = []

    def resolve(root, rest):
        segs = [s for s in rest.split("::") if s]
        if root == "crate":
            base = []
        elif root == "self":
            base = list(here)
        else:  # super (possibly repeated: super::super::x)
            base = list(here[:-1])
            while segs and segs[0] == "super":
                segs = segs[1:]
                base = base[:-1]
        path = base + segs
        # the longest prefix that is a module
        for n in range(len(path), 0, -1):
            if tuple(path[:n]) in mods:
                return tuple(path[:n])
        return None

    for m in USE_GROUP_RE.finditer(text):
        root, prefix, group = m.group(1), m.group(2), m.group(3)
        for item in re.split(r"[,{}]", group):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self":
                target = resolve(root, prefix + "::" + item.replace(" ", ""))
                if target:
                    found.append(target)
    for m in PATH_RE.finditer(text):
        target = resolve(m.group(1), m.group(2))
        if target:
            found.append(target)
    return tuple(here), found


def sccs(nodes, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def check(src: Path) -> int:
    files = [f for f in src.rglob("*.rs")]
    mods = {tuple(module_path(src, f)) for f in files}
    mods |= {m[:n] for m in mods for n in range(1, len(m))}
    refs = [references(src, f, mods) for f in files]
    circles = 0
    for parent in sorted(mods | {()}):
        children = {m for m in mods if len(m) == len(parent) + 1 and m[: len(parent)] == parent}
        if len(children) < 2:
            continue
        edges, why = {}, {}
        for here, targets in refs:
            if here[: len(parent)] != parent or len(here) <= len(parent):
                continue
            a = here[: len(parent) + 1]
            for t in targets:
                if t[: len(parent)] != parent or len(t) <= len(parent):
                    continue
                b = t[: len(parent) + 1]
                if a != b:
                    edges.setdefault(a, set()).add(b)
                    why.setdefault((a, b), "::".join(here) or "<root>")
        for comp in sccs(sorted(children), edges):
            if len(comp) > 1:
                circles += 1
                names = sorted("::".join(c) for c in comp)
                print(f"{src}: import circle between {', '.join(names)}")
                for a in comp:
                    for b in comp:
                        if (a, b) in why:
                            print(f"    {'::'.join(a)} -> {'::'.join(b)} (in {why[(a, b)]})")
    return circles


def main():
    dirs = [Path(d) for d in sys.argv[1:]] or [Path("agent/src")]
    total = sum(check(d) for d in dirs)
    if total:
        print(f"{total} import circle(s)")
        return 1
    print("no import circles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
