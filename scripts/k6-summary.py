#!/usr/bin/env python3
"""Turns a k6 --summary-export JSON into markdown table rows, one per scenario tag found.

Usage: k6-summary.py NAME SUMMARY.json [SCENARIO_DURATION]
With SCENARIO_DURATION (k6 syntax: 20s, 1m, 1m30s), the rate column is requests divided by it,
the rate while the scenario ran; without it, k6's own rate, which divides by the whole run
(setup and the other scenarios included).
"""
import json
import re
import sys

TARGETS = {"login": "p99 < 500 ms (argon2id-bound)", "profile": "p95 < 200 ms, p99 < 500 ms",
           "publisher": "p95 < 200 ms, p99 < 500 ms", "booking": "p95 < 200 ms, p99 < 500 ms; p99 < 50 ms at 500 req/s",
           "records": "p95 < 200 ms, p99 < 500 ms; p99 < 50 ms at 500 req/s", "incident_write": "p95 < 200 ms, p99 < 500 ms",
           "incident_bbox": "p95 < 200 ms, p99 < 500 ms", "map": "p95 < 200 ms, p99 < 500 ms",
           "issuer": "p95 < 200 ms, p99 < 500 ms", "reporter": "p95 < 200 ms, p99 < 500 ms"}
# What each end-to-end trend measures (publish → WebSocket receipt).
DELIVERY = {"gateway_delivery_ms": "server API publish → WebSocket",
            "alert_delivery_ms": "CAP alert POST → WebSocket (`alerts`)",
            "event_delivery_ms": "incident POST → outbox → bus → WebSocket (`incidents`)"}

name, path = sys.argv[1], sys.argv[2]
metrics = json.load(open(path))["metrics"]


def seconds(text):
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    return sum(float(n) * units[u] for n, u in parts) or None


stage = seconds(sys.argv[3]) if len(sys.argv) > 3 else None
for key, m in sorted(metrics.items()):
    if not key.startswith("http_req_duration{scenario:"):
        continue
    scenario = key[len("http_req_duration{scenario:"):-1]
    reqs = metrics.get(f"http_reqs{{scenario:{scenario}}}", {})
    failed = metrics.get(f"http_req_failed{{scenario:{scenario}}}", {}).get("value", 0.0)
    count = int(m.get('count', reqs.get('count', 0)))
    rate = reqs.get('count', count) / stage if stage else reqs.get('rate', 0)
    print(f"| {name}/{scenario} | {count} | {rate:.0f} | "
          f"{m['med']:.2f} | {m['p(95)']:.2f} | {m['p(99)']:.2f} | {failed * 100:.2f}% | {TARGETS.get(scenario, 'p95 < 200 ms')} |")

# Custom end-to-end delivery trends (publish → WebSocket receive), one row each.
for key, m in sorted(metrics.items()):
    if key.endswith("_delivery_ms") and "{" not in key:
        what = DELIVERY.get(key, key)
        print(f"| {name}/{key} ({what}) | {int(m.get('count', 0))} deliveries | – | {m['med']:.2f} | {m['p(95)']:.2f} | "
              f"{m['p(99)']:.2f} | – | end to end < 1000 ms |")
