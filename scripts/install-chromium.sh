#!/usr/bin/env bash
# Installs what the browser end-to-end tests need, idempotently:
#   - Debian's Chromium (apt, --no-install-recommends) when `chromium` is missing;
#     test tools must not download a browser of their own.
#   - tests-e2e/node_modules (playwright-core, centrifuge; exact versions pinned in
#     tests-e2e/package.json + package-lock.json) with `npm ci` when missing or
#     older than the lockfile.
# Then checks that Chromium starts headless. Prints the Chromium binary path on
# stdout, messages on stderr. Launch it from Playwright with
#   chromium.launch({ executablePath: <that path>, args: [--no-sandbox, --disable-gpu,
#     --disable-quic, --disable-background-networking, --disable-component-update, --disable-sync] })
# (the background-networking flags stop Chromium from trying to reach Google's hosts).
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

E2E_DIR="$NEXUS_ROOT/tests-e2e"

command -v chromium >/dev/null 2>&1 || apt_install chromium
CHROMIUM="$(command -v chromium)"

command -v npm >/dev/null 2>&1 || die "npm (Node.js >= 20) is required for tests-e2e"
if [ ! -f "$E2E_DIR/node_modules/.package-lock.json" ] \
    || [ "$E2E_DIR/package-lock.json" -nt "$E2E_DIR/node_modules/.package-lock.json" ]; then
    start=$SECONDS
    log "npm ci in tests-e2e"
    (cd "$E2E_DIR" && npm ci --no-audit --no-fund >&2) || die "npm ci in $E2E_DIR failed"
    log "npm ci done in $((SECONDS - start))s"
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# The Debian launcher script prints a harmless "[: ... unexpected operator" on
# some machines (its /dev/shm size check); the real errors are in $out.
if ! out="$(timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update \
    --disable-sync --user-data-dir="$profile" --dump-dom about:blank 2>&1)" \
    || ! grep -q '<body></body>' <<<"$out"; then
    printf '%s\n' "$out" | tail -n 20 >&2
    die "headless Chromium ($CHROMIUM) did not render about:blank"
fi
log "$("$CHROMIUM" --version 2>/dev/null) starts headless"
echo "$CHROMIUM"
