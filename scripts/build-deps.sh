#!/usr/bin/env bash
# Installs what compiling Nexus needs from Debian when it is missing: a C compiler and make
# (ring, SQLite, librdkafka), pkg-config, and cmake + libcurl headers for librdkafka. Idempotent and quiet when everything is there.
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# rdkafka's `cmake-build` feature builds librdkafka from source (nexus-kafka).
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] \
    || missing+=(libcurl4-openssl-dev)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)  # str0m (SFU) DTLS/SRTP

if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi
command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs) first"
