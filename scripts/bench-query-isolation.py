#!/usr/bin/env python3
"""Ingest latency while other clients run hostile queries (issue #15).

Starts the Hub binary on a free loopback port with a fresh data directory, then posts NDJSON
batches of BATCH events back to back from one client for SECONDS seconds, twice: alone, and
while one client loops a memory hog and another a CPU hog (a cartesian product cancelled by the
query timeout). Prints p50/p99/max batch latency and events/s for each phase.

  python3 scripts/bench-query-isolation.py [BINARY] [SECONDS] [BATCH]
  (defaults: $CARGO_TARGET_DIR or /var/tmp/llm-analytics-hub-target, release/analytics-hub, 20, 1000)
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/llm-analytics-hub-target")
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(target, "release", "analytics-hub")
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
BATCH = int(sys.argv[3]) if len(sys.argv) > 3 else 1000

MEMORY_HOG = "SELECT array_agg(repeat('x', 100000)) FROM generate_series(1, 200000)"
CPU_HOG = "SELECT count(*) FROM generate_series(1, 3000000) a, generate_series(1, 3000000) b"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, content_type, timeout=120):
    req = urllib.request.Request(url, data=body, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def ingest_phase(base, batches, seconds):
    latencies, events, i = [], 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        body = batches[i % len(batches)]
        i += 1
        t = time.perf_counter()
        status, _ = post(base + "/api/v1/events/batch", body, "application/x-ndjson")
        latencies.append(time.perf_counter() - t)
        if status != 200:
            raise SystemExit(f"ingest answered {status}")
        events += BATCH
    return latencies, events


def hog(base, sql, stop, outcomes):
    while not stop.is_set():
        status, _ = post(base + "/api/v1/sql", json.dumps({"sql": sql}).encode(), "application/json")
        outcomes.append(status)


def report(name, latencies, events, seconds):
    ms = [x * 1000 for x in latencies]
    print(
        f"{name:<22} batches {len(ms):5d}  events/s {events / seconds:9.0f}  "
        f"p50 {percentile(ms, 0.5):7.1f} ms  p99 {percentile(ms, 0.99):7.1f} ms  max {max(ms):7.1f} ms"
    )


def main():
    data = tempfile.mkdtemp(prefix="hub-isolation-")
    port = free_port()
    env = dict(os.environ, PGWIRE_ENABLED="false", QUERY_TIMEOUT_SECS="5", LOG_LEVEL="warn")
    hub = subprocess.Popen(
        [BIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", data],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/ready", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        gen = subprocess.run(
            [BIN, "generate", "--count", str(BATCH * 20)], check=True, capture_output=True
        ).stdout.splitlines()
        batches = [b"\n".join(gen[k : k + BATCH]) for k in range(0, len(gen), BATCH)]
        print(f"binary {BIN}; {BATCH} events per batch, {SECONDS:.0f} s per phase, {os.cpu_count()} cores")
        lat, n = ingest_phase(base, batches, SECONDS)
        report("ingest alone", lat, n, SECONDS)
        stop, outcomes = threading.Event(), {"memory": [], "cpu": []}
        hogs = [
            threading.Thread(target=hog, args=(base, MEMORY_HOG, stop, outcomes["memory"])),
            threading.Thread(target=hog, args=(base, CPU_HOG, stop, outcomes["cpu"])),
        ]
        for t in hogs:
            t.start()
        lat, n = ingest_phase(base, batches, SECONDS)
        stop.set()
        for t in hogs:
            t.join()
        report("ingest + 2 query hogs", lat, n, SECONDS)
        for name, codes in outcomes.items():
            print(f"  {name} hog answers: " + ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes))))
        with urllib.request.urlopen(base + "/health", timeout=5) as r:
            print("  /health after:", r.status)
    finally:
        hub.terminate()
        hub.wait(timeout=60)


if __name__ == "__main__":
    main()
