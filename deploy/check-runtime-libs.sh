#!/usr/bin/env bash
# Checks that the runtime stage of deploy/Dockerfile provides every shared library a built
# `nexus` binary needs, without a Docker engine: `ldd` lists the binary's libraries, `dpkg -S`
# names the Debian package that ships each one, and every such package must be in the base
# image's set (Essential or Priority required packages and what they depend on, which is what
# debian:bookworm-slim holds) or in the runtime stage's `apt-get install` list (plus its
# dependencies).
#
#   deploy/check-runtime-libs.sh [BINARY]
#
# BINARY defaults to ${CARGO_TARGET_DIR:-target}/release/nexus, or the debug build when there is
# no release build. Run it on Debian bookworm (the Dockerfile's release): package names differ
# between releases (libssl3 became libssl3t64 in trixie). Exit 0 when all are provided, 1 when one
# is missing or unresolved, 2 on bad usage.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dockerfile=deploy/Dockerfile
target="${CARGO_TARGET_DIR:-target}"
bin="${1:-}"
if [ -z "$bin" ]; then
    bin="$target/release/nexus"
    [ -x "$bin" ] || bin="$target/debug/nexus"
fi
[ -x "$bin" ] || { echo "check-runtime-libs: no nexus binary at $bin (build it with 'cargo build -p nexus', or pass its path)" >&2; exit 2; }
for tool in ldd dpkg dpkg-query; do
    command -v "$tool" >/dev/null || { echo "check-runtime-libs: needs $tool (a Debian system)" >&2; exit 2; }
done

. /etc/os-release 2>/dev/null || true
if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
    echo "check-runtime-libs: warning: this system is ${PRETTY_NAME:-unknown}, the runtime image is bookworm; package names may differ" >&2
fi

# The runtime stage's apt packages: words after `apt-get install` in the last stage, options and
# version pins dropped.
runtime_pkgs="$(awk '
    /^FROM /            { stage = $0; pkgs = "" }
    /apt-get install/   { grab = 1; sub(/.*apt-get install/, "") }
    grab {
        line = $0; cont = (line ~ /\\[[:space:]]*$/)
        sub(/&&.*/, "", line); if (line != $0) cont = 0
        gsub(/\\/, "", line)
        n = split(line, w, /[[:space:]]+/)
        for (i = 1; i <= n; i++) if (w[i] != "" && w[i] !~ /^-/) { sub(/=.*/, "", w[i]); pkgs = pkgs " " w[i] }
        if (!cont) grab = 0
    }
    END { print pkgs }' "$dockerfile")"
[ -n "${runtime_pkgs// /}" ] || { echo "check-runtime-libs: no apt-get install list in the last stage of $dockerfile" >&2; exit 1; }

# The base set: Essential/required packages and what they depend on (Depends and Pre-Depends,
# every alternative counted), which is what debian:bookworm-slim holds; the image set adds the
# runtime stage's packages and their dependencies. One dpkg-query pass each.
closure() {
    dpkg-query -W -f '${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\n' 2>/dev/null |
    awk -F'\t' -v seeds="$1" '
        { deps[$1] = $4; if ($2 == "yes" || $3 == "required") queue[++n] = $1 }
        END {
            m = split(seeds, s, " "); for (i = 1; i <= m; i++) queue[++n] = s[i]
            for (i = 1; i <= n; i++) {
                p = queue[i]; if (p in seen) continue; seen[p] = 1; print p
                k = split(deps[p], d, /[,|]/)
                for (j = 1; j <= k; j++) {
                    x = d[j]; sub(/\(.*\)/, "", x); sub(/:any/, "", x); gsub(/[[:space:]]/, "", x)
                    if (x != "" && !(x in seen)) queue[++n] = x
                }
            }
        }'
}
declare -A base=() have=()
while read -r p; do base[$p]=1; done < <(closure "")
while read -r p; do have[$p]=1; done < <(closure "$runtime_pkgs")

status=0
checked=0
while read -r soname path; do
    checked=$((checked + 1))
    if [ -z "$path" ] || [ ! -e "$path" ]; then
        echo "MISSING $soname: not found on this system either (ldd: not found)"
        status=1; continue
    fi
    real="$(readlink -f "$path")"
    owner="$(dpkg -S "$path" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true)"
    pkg="${owner%%:*}"
    if [ -z "$pkg" ]; then
        echo "UNOWNED $soname ($path): no Debian package ships it; the runtime image will not have it"
        status=1
    elif [ -n "${have[$pkg]:-}" ]; then
        where="dependency of the runtime packages"
        [ -n "${base[$pkg]:-}" ] && where="base image"
        case " $runtime_pkgs " in *" $pkg "*) where="Dockerfile apt list";; esac
        echo "ok      $soname -> $pkg ($where)"
    else
        echo "MISSING $soname -> $pkg: add '$pkg' to the runtime stage's apt-get install in $dockerfile"
        status=1
    fi
done < <(ldd "$bin" | awk '
    /=> not found/ { print $1, ""; next }
    /=>/           { print $1, $3; next }
    /^[[:space:]]*\// { print $1, $1 }')

[ "$checked" -gt 0 ] || { echo "check-runtime-libs: ldd listed no libraries for $bin (static binary?)" >&2; }
if [ "$status" -eq 0 ]; then
    echo "check-runtime-libs: $bin: $checked libraries, all provided by debian bookworm-slim + [${runtime_pkgs# }]"
else
    echo "check-runtime-libs: $bin: FAILED (runtime packages: ${runtime_pkgs# })" >&2
fi
exit "$status"
