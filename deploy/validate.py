#!/usr/bin/env python3
"""Validates the deployment files in deploy/ (called by deploy/validate.sh, in the project venv).

Checks, one output line per checked file:
  k8s        every resource file of deploy/k8s/base, and the rendered base and overlays
             (`kubectl kustomize`), against the Kubernetes JSON schemas bundled in
             kubernetes-validate (strict: unknown fields are errors), for the oldest and newest
             Kubernetes versions we support; Strimzi resources against the CRD schemas in
             deploy/schemas/strimzi (strict), plus cross-references (topics, node pools, KRaft).
  env        every NEXUS_* variable that compose.yaml and the manifests set is a key of
             server/src/config.rs (nexus refuses unknown NEXUS_* variables at start).
  compose    cross-references of deploy/compose.yaml (its schema check is check-jsonschema's).
  grafana    deploy/grafana/*.json dashboard structure, and every metric it queries exists.
  prometheus deploy/prometheus/alerts.yaml rule structure, scrape.yaml jobs, metric names.
Metric names are those the Rust sources register (grepped from string literals, plus the
`nexus_sfu_{name}` rows of the SFU's text exposition and the prometheus crate's process
collector) and Prometheus' own `up`.

  config     with a built nexus binary: `nexus config check` accepts the environment each
             workload (and the compose service) gives it, secrets' placeholders swapped for
             dummies of valid length.

Usage: validate.py KUBECTL [NEXUS_BINARY]   (exit 1 on any failure, one ERROR line per problem)
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSIONS = ["1.30", "1.37"]  # oldest supported (preStop sleep action is on by default), newest
KAFKA_DOMAINS = ["users", "healthcare", "education", "economic", "crisis", "system"]
STRIMZI_GROUP = "kafka.strimzi.io"

failures: list[str] = []


def rel(p: Path | str) -> str:
    return os.path.relpath(p, ROOT)


def ok(name: str, what: str) -> None:
    print(f"{name}: ok ({what})")


def fail(name: str, msg: str) -> None:
    failures.append(f"{name}: {msg}")
    print(f"{name}: ERROR: {msg}")


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# ---------------------------------------------------------------------------------------------
# Kubernetes

# kubernetes-validate re-reads its ~1 MB definitions file per resource; cache it.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def strict_crd_schema(schema: dict) -> dict:
    """An openAPIV3Schema as JSON Schema, strict: objects with `properties` and without
    x-kubernetes-preserve-unknown-fields get additionalProperties: false."""
    if isinstance(schema, dict):
        out = {k: strict_crd_schema(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict_crd_schema(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], tuple[dict, str]]:
    """(apiVersion, kind) -> (strict JSON schema, CRD file) from deploy/schemas/strimzi."""
    out = {}
    for path in sorted((DEPLOY / "schemas" / "strimzi").glob("*.yaml")):
        for crd in load_yaml_docs(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                schema = strict_crd_schema(v["schema"]["openAPIV3Schema"])
                out[(f"{group}/{v['name']}", kind)] = (schema, rel(path))
    return out


def validate_resource(res: dict) -> list[str]:
    """Errors of one resource (empty when valid)."""
    if not isinstance(res, dict) or "apiVersion" not in res or "kind" not in res:
        return ["not a Kubernetes resource (no apiVersion/kind)"]
    name = f"{res['kind']}/{res.get('metadata', {}).get('name', '?')}"
    api = res["apiVersion"]
    if api.split("/")[0] == STRIMZI_GROUP:
        entry = crd_schemas().get((api, res["kind"]))
        if entry is None:
            return [f"{name}: no CRD schema for {api} {res['kind']} in deploy/schemas/strimzi"]
        schema, crd_file = entry
        errs = []
        for e in jsonschema.Draft7Validator(schema).iter_errors(res):
            path = ".".join(str(p) for p in e.absolute_path) or "(root)"
            hint = ""
            if e.validator == "additionalProperties":
                hint = f" (not in the hand-written subset {crd_file}: add its schema from Strimzi's CRD)"
            errs.append(f"{name}: {path}: {e.message}{hint}")
        return errs
    errs = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(res, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(root)"
            errs.append(f"{name}: Kubernetes {version}: {path}: {e.message}")
        except kv_utils.SchemaNotFoundError as e:
            errs.append(f"{name}: {e.message}")
    return errs


def check_resources(label: str, resources: list[dict], what: str) -> bool:
    errs = [e for r in resources for e in validate_resource(r)]
    for e in errs:
        fail(label, e)
    if not errs:
        kinds = sorted({r["kind"] for r in resources})
        ok(label, f"{len(resources)} resources [{', '.join(kinds)}], {what}")
    return not errs


def strimzi_semantics(label: str, resources: list[dict]) -> None:
    """Cross-references kustomize and the schemas cannot see."""
    kafkas = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Kafka"}
    pools = [r for r in resources if r["kind"] == "KafkaNodePool"]
    topics = [r for r in resources if r["kind"] == "KafkaTopic"]
    if not kafkas:
        return
    problems = []
    for r in pools + topics:
        cluster = r["metadata"].get("labels", {}).get("strimzi.io/cluster")
        if cluster not in kafkas:
            problems.append(f"{r['kind']}/{r['metadata']['name']} names cluster {cluster!r}, not a Kafka here")
    for name, k in kafkas.items():
        roles = {role for p in pools if p["metadata"]["labels"].get("strimzi.io/cluster") == name
                 for role in p["spec"]["roles"]}
        if not {"controller", "broker"} <= roles:
            problems.append(f"Kafka/{name}: KRaft needs node pools with both controller and broker roles (has {sorted(roles)})")
        brokers = sum(p["spec"].get("replicas", 0) for p in pools if "broker" in p["spec"]["roles"])
        for t in topics:
            if t["spec"].get("replicas", 1) > brokers:
                problems.append(f"KafkaTopic/{t['metadata']['name']}: {t['spec']['replicas']} replicas > {brokers} brokers")
    names = {t["spec"].get("topicName", t["metadata"]["name"]) for t in topics}
    want = {f"nexus.{d}{s}" for d in KAFKA_DOMAINS for s in ("", ".retry", ".dlq")}
    if want - names:
        problems.append(f"missing KafkaTopics: {sorted(want - names)}")
    for p in problems:
        fail(label, p)
    if not problems:
        ok(label + " (Strimzi)", f"Kafka {sorted(kafkas)}, {len(pools)} node pools, {len(topics)} topics: cross-references hold")


def kustomize(kubectl: str, path: Path) -> list[dict] | None:
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(rel(path), f"kubectl kustomize failed: {proc.stderr.strip()}")
        return None
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def check_k8s(kubectl: str) -> dict[str, list[dict]]:
    """Validates base files one by one, the CRD schema files, and every rendered kustomization.
    Returns the rendered resources of each kustomization directory."""
    rendered_all = {}
    for path in sorted((DEPLOY / "schemas" / "strimzi").glob("*.yaml")):
        check_resources(rel(path), load_yaml_docs(path), "CustomResourceDefinition, Kubernetes schemas")
    for kust in sorted(DEPLOY.glob("k8s/**/kustomization.yaml")):
        d = kust.parent
        spec = yaml.safe_load(kust.read_text())
        if kust.parent.name == "base":
            for res in spec.get("resources", []):
                p = d / res
                if p.is_file():
                    check_resources(rel(p), load_yaml_docs(p), "strict, Kubernetes " + "/".join(K8S_VERSIONS) + " + Strimzi CRDs")
        rendered = kustomize(kubectl, d)
        if rendered is None:
            continue
        files = sorted(rel(p) for p in d.iterdir() if p.is_file())
        if check_resources(f"{rel(d)} (kubectl kustomize)", rendered, f"rendered from {len(files)} files, strict"):
            strimzi_semantics(f"{rel(d)} (kubectl kustomize)", rendered)
        workloads = [r for r in rendered if r["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]
        for w in workloads:
            check_workload_policy(f"{rel(d)}: {w['kind']}/{w['metadata']['name']}", w)
        rendered_all[rel(d)] = rendered
    return rendered_all


def check_workload_policy(label: str, w: dict) -> None:
    """The deployment rules of issue 9: probes, limits, non-root, read-only root, no caps."""
    pod = w["spec"]["template"]["spec"]
    problems = []
    if pod.get("enableServiceLinks") is not False:
        problems.append("enableServiceLinks must be false (service links inject unknown NEXUS_* variables)")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problems.append("securityContext.runAsNonRoot must be true")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c['name']}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{c['name']}: capabilities must drop ALL")
        res = c.get("resources", {})
        for k in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(k, {})):
                problems.append(f"{c['name']}: resources.{k} needs cpu and memory")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"{c['name']}: readinessProbe must GET /readyz")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"{c['name']}: livenessProbe must GET /healthz")
    for p in problems:
        fail(label, p)


# ---------------------------------------------------------------------------------------------
# NEXUS_* variables

def config_env_names() -> set[str]:
    """NEXUS_* names accepted by server/src/config.rs: top-level fields of `Config` that are not
    sections, and `<section>_<field>` for the section structs."""
    src = (ROOT / "server/src/config.rs").read_text()
    sections = re.search(r"const SECTIONS: &\[&str\] = &\[(.*?)\];", src, re.S)
    section_names = re.findall(r'"([a-z_]+)"', sections.group(1)) if sections else []
    structs = {m.group(1): re.findall(r"^\s*pub (\w+):", m.group(2), re.M)
               for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", src, re.S)}
    if "Config" not in structs:
        raise SystemExit("validate.py: cannot find `pub struct Config` in server/src/config.rs")
    names = set()
    for field in structs["Config"]:
        if field in section_names:
            struct = next((s for s in structs if s.lower() == field.replace("_", "") + "config"), None)
            for sub in structs.get(struct, []):
                names.add(f"NEXUS_{field}_{sub}".upper())
        else:
            names.add(f"NEXUS_{field}".upper())
    return names


def check_env(rendered: list[dict], compose: dict | None) -> None:
    known = config_env_names()
    used: dict[str, set[str]] = {}

    def use(name: str, where: str) -> None:
        if name.startswith("NEXUS_"):
            used.setdefault(name, set()).add(where)

    for r in rendered:
        where = f"k8s {r['kind']}/{r['metadata']['name']}"
        if r["kind"] in ("ConfigMap", "Secret") and r["metadata"]["name"].startswith("nexus-"):
            for k in list(r.get("data", {})) + list(r.get("stringData", {})):
                use(k, where)
        if r["kind"] in ("Deployment", "DaemonSet"):
            for c in r["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    use(e["name"], where)
    if compose:
        env = compose["services"]["nexus"].get("environment", {})
        for k in (env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]):
            use(k, "compose nexus")
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for k in re.findall(r"\b(NEXUS_[A-Z0-9_]+)=", dockerfile):
        use(k, "Dockerfile ENV")
    unknown = sorted(set(used) - known)
    for k in unknown:
        fail("NEXUS_* variables", f"{k} (set in {', '.join(sorted(used[k]))}) is not a key of server/src/config.rs: nexus would refuse to start")
    if not unknown:
        ok("NEXUS_* variables", f"{len(used)} names set by compose, Dockerfile and manifests, all keys of server/src/config.rs")


DUMMY_SECRET = "validate-dummy-secret-0123456789abcdef"


def nexus_config_check(binary: str, label: str, env: dict[str, str]) -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([binary, "config", "check"], cwd=tmp, capture_output=True, text=True,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, timeout=60)
    if proc.returncode != 0:
        fail(label, f"`nexus config check` refuses its environment: {proc.stderr.strip() or proc.stdout.strip()}")
    else:
        ok(label, f"`nexus config check` accepts its {len(env)} NEXUS_* variables")


def check_config(binary: str, rendered: dict[str, list[dict]], compose: dict | None) -> None:
    import base64
    for d, resources in rendered.items():
        maps = {}
        for r in resources:
            if r["kind"] == "ConfigMap":
                maps[("configMap", r["metadata"]["name"])] = dict(r.get("data", {}))
            if r["kind"] == "Secret":
                maps[("secret", r["metadata"]["name"])] = {
                    k: base64.b64decode(v).decode() for k, v in r.get("data", {}).items()}
        for w in resources:
            if w["kind"] not in ("Deployment", "DaemonSet"):
                continue
            for c in w["spec"]["template"]["spec"]["containers"]:
                env = {}
                for src in c.get("envFrom", []):
                    for kind in ("configMap", "secret"):
                        ref = src.get(kind + "Ref")
                        if ref:
                            env.update(maps.get((kind, ref["name"]), {}))
                for e in c.get("env", []):
                    env[e["name"]] = e.get("value", "10.0.0.1")  # downward API: an address
                env = {k: v for k, v in env.items() if k.startswith("NEXUS_")}
                # Placeholders are meant to be refused; the rest of the config must parse.
                for k in ("NEXUS_JWT_SECRET", "NEXUS_GATEWAY_API_KEY", "NEXUS_TURN_SECRET"):
                    if env.get(k) == "REPLACE_ME":
                        env[k] = DUMMY_SECRET
                nexus_config_check(binary, f"{d}: {w['kind']}/{w['metadata']['name']}", env)
    if compose:
        env = {}
        for k, v in compose["services"]["nexus"].get("environment", {}).items():
            v = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
            v = re.sub(r"\$\{\w+:\?[^}]*\}", DUMMY_SECRET, v)
            env[k] = v.replace("$$", "$")
        nexus_config_check(binary, "deploy/compose.yaml: service nexus", env)


# ---------------------------------------------------------------------------------------------
# Compose

def check_compose() -> dict | None:
    path = DEPLOY / "compose.yaml"
    label = rel(path)
    c = yaml.safe_load(path.read_text())
    services = c.get("services", {})
    problems = []
    for name, s in services.items():
        deps = s.get("depends_on", {})
        for dep, cond in (deps.items() if isinstance(deps, dict) else [(d, {}) for d in deps]):
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
            elif cond.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if src and not src.startswith((".", "/")) and src not in (c.get("volumes") or {}):
                problems.append(f"{name} mounts undeclared volume {src}")
        if "healthcheck" not in s and s.get("restart") != "no":
            problems.append(f"{name} has no healthcheck")
    nexus_env = services.get("nexus", {}).get("environment", {})
    for k in ("NEXUS_DATABASE_URL", "NEXUS_REDIS_URL", "NEXUS_KAFKA_BROKERS", "NEXUS_TURN_URLS",
              "NEXUS_TURN_SECRET", "NEXUS_SFU_PUBLIC_IP"):
        if k not in nexus_env:
            problems.append(f"nexus does not set {k}")
    secret_ref = re.match(r"\$\{(\w+)", str(nexus_env.get("NEXUS_TURN_SECRET", "")))
    coturn_cmd = " ".join(services.get("coturn", {}).get("command", []))
    if not secret_ref or f"--static-auth-secret=${{{secret_ref.group(1)}" not in coturn_cmd:
        problems.append("coturn's --static-auth-secret must come from the same variable as NEXUS_TURN_SECRET")
    if "--use-auth-secret" not in coturn_cmd:
        problems.append("coturn must run with --use-auth-secret (REST-API credentials)")
    for p in problems:
        fail(label, p)
    if not problems:
        ok(label + " (cross-references)", f"{len(services)} services: depends_on, healthchecks, volumes, env wiring, TURN secret shared with coturn")
    return c


# ---------------------------------------------------------------------------------------------
# Metrics

def exported_metrics() -> tuple[set[str], str]:
    names: set[str] = set()
    string_lit = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
    token = re.compile(r"\b(nexus_[a-z0-9_]*[a-z0-9])\b(?![{a-z0-9_])")
    for path in ROOT.glob("**/*.rs"):
        parts = path.relative_to(ROOT).parts
        if "target" in parts or parts[0] in ("fuzz", "loadtests") or "node_modules" in parts:
            continue
        src = path.read_text(errors="replace")
        for lit in string_lit.findall(src):
            names.update(token.findall(lit))
        # Text expositions built from rows: ("rooms", "gauge", ...) + "nexus_sfu_{name}".
        for prefix in set(re.findall(r"(nexus_[a-z0-9_]*_)\{name\}", src)):
            for row in re.findall(r'\(\s*"([a-z0-9_]+)"\s*,\s*"(?:gauge|counter|histogram|summary)"', src):
                names.add(prefix + row)
    # The prometheus crate's process collector (registered in server/src/metrics.rs).
    lock = (ROOT / "Cargo.lock").read_text()
    m = re.search(r'name = "prometheus"\nversion = "([^"]+)"', lock)
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = glob.glob(str(cargo_home / f"registry/src/*/prometheus-{m.group(1)}/src/process_collector.rs")) if m else []
    if found:
        process = set(re.findall(r'"(process_[a-z_]+)"', Path(found[0]).read_text()))
        source = f"prometheus {m.group(1)} process collector source"
    else:
        process = {"process_cpu_seconds_total", "process_max_fds", "process_open_fds",
                   "process_resident_memory_bytes", "process_start_time_seconds",
                   "process_threads", "process_virtual_memory_bytes"}
        source = "built-in list of the prometheus crate's process metrics (crate source not found)"
    names |= process
    names |= {n + s for n in list(names) for s in ("_bucket", "_sum", "_count")}
    names.add("up")
    return names, source


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
    "unless", "inf", "nan",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects (strings, label matchers, ranges, functions and
    grouping clauses removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\w+", " ", e)
    out = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", word) or (m.start() > 0 and e[m.start() - 1].isdigit()):
            continue
        out.add(word)
    return out


def check_metrics_in(label: str, exprs: list[tuple[str, str]], exported: set[str]) -> int:
    bad = 0
    for where, expr in exprs:
        for name in sorted(promql_metrics(expr) - exported):
            fail(label, f"{where}: metric {name} is not exported by nexus (not found in the Rust sources)")
            bad += 1
    return bad


def check_grafana(exported: set[str]) -> None:
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        label = rel(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            fail(label, f"not JSON: {e}")
            continue
        problems = []
        for k, t in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list), ("templating", dict)):
            if not isinstance(d.get(k), t):
                problems.append(f"top-level `{k}` must be a {t.__name__}")
        variables = {v["name"] for v in d.get("templating", {}).get("list", [])} | {
            "__rate_interval", "__interval", "__range"}
        ids, exprs = set(), []
        panels = list(d.get("panels", []))
        for p in list(panels):
            panels += p.get("panels", [])
        for p in panels:
            pid = p.get("id")
            if pid in ids:
                problems.append(f"panel id {pid} used twice")
            ids.add(pid)
            gp = p.get("gridPos", {})
            if not all(isinstance(gp.get(k), int) for k in "xywh") or gp.get("x", 0) + gp.get("w", 0) > 24:
                problems.append(f"panel {pid} ({p.get('title')}): bad gridPos {gp}")
            if p.get("type") == "row":
                continue
            if not p.get("title") or not p.get("targets"):
                problems.append(f"panel {pid}: needs a title and targets")
            refs = [t.get("refId") for t in p.get("targets", [])]
            if len(set(refs)) != len(refs) or None in refs:
                problems.append(f"panel {pid}: refIds must be present and unique")
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                if not expr.strip():
                    problems.append(f"panel {pid} target {t.get('refId')}: empty expr")
                for v in re.findall(r"\$\{?(\w+)", expr):
                    if v not in variables:
                        problems.append(f"panel {pid}: uses undefined variable ${v}")
                exprs.append((f"panel {pid} '{p.get('title')}' {t.get('refId')}", expr))
        for p in problems:
            fail(label, p)
        bad = check_metrics_in(label, exprs, exported)
        if not problems and not bad:
            names = set().union(*(promql_metrics(e) for _, e in exprs))
            ok(label, f"Grafana dashboard, {len(panels)} panels, {len(exprs)} queries over {len(names)} exported metrics")


def check_prometheus(exported: set[str]) -> None:
    path = DEPLOY / "prometheus" / "alerts.yaml"
    label = rel(path)
    d = yaml.safe_load(path.read_text())
    problems, exprs, nrules = [], [], 0
    duration = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
    groups = d.get("groups") if isinstance(d, dict) else None
    if not isinstance(groups, list) or not groups:
        problems.append("needs a non-empty `groups` list")
        groups = []
    seen_groups = set()
    for g in groups:
        if set(g) - {"name", "interval", "rules", "limit", "labels", "query_offset"}:
            problems.append(f"group {g.get('name')}: unknown keys {sorted(set(g) - {'name', 'interval', 'rules'})}")
        if g.get("name") in seen_groups or not g.get("name"):
            problems.append(f"group name {g.get('name')!r} missing or repeated")
        seen_groups.add(g.get("name"))
        for r in g.get("rules", []):
            nrules += 1
            rid = r.get("alert") or r.get("record")
            if bool(r.get("alert")) == bool(r.get("record")):
                problems.append(f"rule {rid}: exactly one of alert/record")
            if set(r) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}:
                problems.append(f"rule {rid}: unknown keys")
            if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                problems.append(f"rule {rid}: needs expr")
                continue
            if r["expr"].count("(") != r["expr"].count(")"):
                problems.append(f"rule {rid}: unbalanced parentheses")
            if "for" in r and not duration.match(str(r["for"])):
                problems.append(f"rule {rid}: `for` {r['for']!r} is not a duration")
            if r.get("alert"):
                if r.get("labels", {}).get("severity") not in ("page", "ticket", "info"):
                    problems.append(f"rule {rid}: labels.severity must be page, ticket or info")
                if not r.get("annotations", {}).get("summary"):
                    problems.append(f"rule {rid}: annotations.summary missing")
            exprs.append((f"rule {rid}", r["expr"]))
    for p in problems:
        fail(label, p)
    bad = check_metrics_in(label, exprs, exported)
    if not problems and not bad:
        ok(label, f"{len(groups)} groups, {nrules} rules, structure and metric names")

    path = DEPLOY / "prometheus" / "scrape.yaml"
    label = rel(path)
    d = yaml.safe_load(path.read_text())
    jobs = [j.get("job_name") for j in d.get("scrape_configs", [])]
    problems = []
    if not jobs or len(set(jobs)) != len(jobs) or not all(j and j.startswith("nexus") for j in jobs):
        problems.append(f"job names must be unique and start with `nexus` (alerts select up{{job=~\"nexus.*\"}}): {jobs}")
    paths = {j.get("metrics_path", "/metrics") for j in d.get("scrape_configs", [])}
    if not {"/metrics", "/metrics/sfu"} <= paths:
        problems.append(f"must scrape /metrics and /metrics/sfu (has {sorted(paths)})")
    for p in problems:
        fail(label, p)
    if not problems:
        ok(label, f"scrape jobs {jobs}")


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    kubectl = sys.argv[1]
    rendered = check_k8s(kubectl)
    compose = check_compose()
    check_env([r for rs in rendered.values() for r in rs], compose)
    if len(sys.argv) == 3:
        check_config(sys.argv[2], rendered, compose)
    exported, source = exported_metrics()
    print(f"metrics: {len(exported)} names exported (Rust sources' string literals, SFU rows, {source}, up)")
    check_grafana(exported)
    check_prometheus(exported)
    if failures:
        print(f"\nvalidate.py: {len(failures)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
