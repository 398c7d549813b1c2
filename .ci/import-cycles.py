#!/usr/bin/env python3
"""Module import graph of the pdx crates: fails when modules of one crate import
each other in a cycle (ARCHITECTURE.md: the layering is one-way).

An edge A -> B is any `crate::B` (or `super::B` resolved) path in A's code,
comments and doc comments excluded. Modules are files: `a/b.rs` and `a/b/mod.rs`
are `a::b`. An edge to `a::b::c` counts as an edge to the module `a::b::c` if it
exists, else to the longest existing prefix. Edges from a module to its own
descendants and ancestors are ignored (a parent re-exporting its children is
not a cycle of responsibilities).
"""
import os
import re
import sys

CRATES = sys.argv[1:] or ["node/src", "cli/src"]
PATH_RE = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\b(crate|super)::\{([^}]*)\}", re.S)


def module_of(root, path):
    rel = os.path.relpath(path, root)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text):
    out = []
    for line in text.splitlines():
        s = line.lstrip()
        if s.startswith("//"):
            continue
        i = line.find("//")
        if i >= 0 and line.count('"', 0, i) % 2 == 0:
            line = line[:i]
        out.append(line)
    return "\n".join(out)


def resolve(modules, base, segs):
    path = list(base) + segs
    while path and tuple(path) not in modules:
        path.pop()
    return tuple(path)


def graph(root):
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                files[module_of(root, p)] = p
    modules = set(files)
    edges = {m: set() for m in modules}
    for m, p in files.items():
        text = strip_comments(open(p, encoding="utf-8").read())
        refs = []
        for kind, tail in PATH_RE.findall(text):
            refs.append((kind, [s for s in tail.split("::") if s]))
        for kind, group in USE_GROUP_RE.findall(text):
            for item in group.split(","):
                segs = [s for s in item.strip().split("::") if s and re.match(r"^[a-z_][a-z0-9_]*$", s)]
                if segs:
                    refs.append((kind, segs))
        for kind, segs in refs:
            if kind == "crate":
                target = resolve(modules, (), segs)
            else:
                target = resolve(modules, m[:-1], segs)
            if not target or target == m:
                continue
            if target[: len(m)] == m or m[: len(target)] == target:
                continue
            edges[m].add(target)
    return edges


def cycles(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
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
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def name(m):
    return "::".join(m) or "(root)"


bad = False
for root in CRATES:
    if not os.path.isdir(root):
        print(f"{root}: missing", file=sys.stderr)
        bad = True
        continue
    edges = graph(root)
    found = cycles(edges)
    n_edges = sum(len(v) for v in edges.values())
    if found:
        bad = True
        for comp in found:
            members = sorted(comp)
            detail = "; ".join(
                f"{name(a)} -> {name(b)}" for a in members for b in sorted(edges[a]) if b in comp
            )
            print(f"{root}: import cycle between {', '.join(name(c) for c in members)}: {detail}")
    else:
        print(f"{root}: {len(edges)} modules, {n_edges} import edges, no cycle")
sys.exit(1 if bad else 0)
