#!/usr/bin/env python3
"""The dependency rules of ARCHITECTURE.md, checked against `cargo metadata`.

- Sans-IO crates (geo engine, CAP codec, SFU core) pull in no tokio, axum, sqlx or rdkafka,
  not even transitively (as resolved for the crate alone, `cargo tree -p`).
- Only the store crate depends on sqlx; only the Kafka adapter on rdkafka; only the server
  binary on anyhow.
- The gateway never depends on the SFU; the SFU never depends on axum.
"""
import json
import subprocess
import sys

SANS_IO = {"nexus-geo", "nexus-cap", "nexus-sfu-core"}
FORBIDDEN_IN_SANS_IO = {"tokio", "axum", "sqlx", "rdkafka", "hyper", "mio"}
ONLY = {"sqlx": {"nexus-store"}, "rdkafka": {"nexus-kafka"}, "anyhow": {"nexus"}}
NEVER = [("nexus-gateway", "nexus-sfu-core"), ("nexus-gateway", "nexus-sfu-net"),
         ("nexus-sfu-core", "axum"), ("nexus-sfu-net", "axum")]

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--locked"], text=True))
packages = {p["id"]: p for p in meta["packages"]}
members = set(meta["workspace_members"])
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}


def name(pid):
    return packages[pid]["name"]


def normal_deps(pid):
    """Direct dependencies that are not dev-only."""
    out = []
    for dep in nodes[pid]["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if kinds - {"dev"}:
            out.append(dep["pkg"])
    return out


def closure(pid):
    seen, stack = set(), [pid]
    while stack:
        for d in normal_deps(stack.pop()):
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return {name(d) for d in seen}


errors = []
for pid in members:
    pkg = name(pid)
    direct = {name(d) for d in normal_deps(pid)}
    everything = closure(pid)
    if pkg in SANS_IO:
        # `cargo tree -p` resolves features for this crate alone, as a user of the crate gets
        # them; the workspace-wide graph would blame it for features other members turn on.
        tree = subprocess.check_output(
            ["cargo", "tree", "-p", pkg, "-e", "normal", "--prefix", "none", "--format", "{p}", "--locked"],
            text=True)
        own = {line.split()[0] for line in tree.splitlines() if line.strip()}
        bad = own & FORBIDDEN_IN_SANS_IO
        if bad:
            errors.append(f"{pkg} is sans-IO but depends on {sorted(bad)}")
    for dep, allowed in ONLY.items():
        if dep in direct and pkg not in allowed:
            errors.append(f"{pkg} depends on {dep}; only {sorted(allowed)} may")
    for a, b in NEVER:
        if pkg == a and b in everything:
            errors.append(f"{a} must never depend on {b}")

present = {name(p) for p in members}
for pkg in sorted(SANS_IO & present):
    print(f"layering: {pkg} is sans-IO: ok" if not any(e.startswith(pkg) for e in errors) else f"layering: {pkg}: FAILED")
if errors:
    for e in errors:
        print(f"layering: error: {e}", file=sys.stderr)
    sys.exit(1)
print(f"layering: {len(present)} workspace crates checked, rules hold")
