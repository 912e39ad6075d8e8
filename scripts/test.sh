#!/usr/bin/env bash
# `make test`: everything CI checks, in order of cost. Installs and starts the engines the tests
# use (PostgreSQL/PostGIS, Redis, the Kafka broker, Chromium and the Node test clients) when
# missing, then: formatting, lints, the whole test suite against real engines, docs, that the
# fuzz targets compile, deploy manifests, layering.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)" >&2; }

step "build dependencies"
scripts/build-deps.sh

step "test services"
scripts/services.sh start
eval "$(scripts/services.sh env)"
export NEXUS_TEST_REQUIRE_ENGINES=1

step "browser and Node test clients"
NEXUS_CHROMIUM="$(scripts/install-chromium.sh)"
export NEXUS_CHROMIUM

step "independent Kafka client (confluent-kafka) for the bus checks"
# shellcheck source=scripts/common.sh
(. scripts/common.sh && venv_require "$NEXUS_PY_KAFKA")

step "local SMTP server for the alert e-mail tests"
scripts/install-aiosmtpd.sh >/dev/null

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "fuzz targets compile (a workspace of its own; running them needs nightly)"
(cd fuzz && cargo fmt -- --check && cargo check --bins --locked)

step "deploy manifests"
deploy/validate.sh

step "layering"
python3 scripts/check-layering.py

step "all checks passed"
