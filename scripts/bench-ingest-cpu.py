#!/usr/bin/env python3
"""CPU the running service spends per batch-ingested event, flush to Parquet included.

Starts BIN (`serve`, fresh data directory, free loopback port, optional --config), posts the
NDJSON file in bodies of --body lines from --clients threads, stops the Hub with SIGTERM (which
flushes the last segment to Parquet) and prints: events/s as acknowledged, the Hub's CPU
(utime + stime from /proc) during the posts and up to its exit, peak RSS and the bytes of
Parquet it wrote. Throughput on a shared 2-core VM is noisy; CPU per event is what to compare
between builds or settings (run them alternately).

    python3 scripts/bench-ingest-cpu.py --bin target/release/analytics-hub --input events.ndjson \\
        [--config hub.toml] [--runs 3]
"""

import argparse
import glob
import http.client
import itertools
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True)
p.add_argument("--input", required=True)
p.add_argument("--config")
p.add_argument("--body", type=int, default=10_000)
p.add_argument("--clients", type=int, default=2)
p.add_argument("--runs", type=int, default=1)
args = p.parse_args()
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def post_file(port):
    lock = threading.Lock()
    f = open(args.input, "rb")
    sent = [0]
    errors = []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while not errors:
            with lock:
                lines = list(itertools.islice(f, args.body))
            if not lines:
                return
            conn.request("POST", "/api/v1/events/batch", body=b"".join(lines),
                         headers={"content-type": "application/x-ndjson"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                errors.append((r.status, data[:200]))
                return
            with lock:
                sent[0] += len(lines)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    f.close()
    if errors:
        raise SystemExit(f"ingest failed: {errors[0]}")
    return sent[0], elapsed


def run():
    data = tempfile.mkdtemp(prefix="hub-bench-cpu-")
    port = free_port()
    env = dict(os.environ, PGWIRE_ENABLED="false", LOG_LEVEL="warn")
    env.pop("DATABASE_URL", None)
    config = ["--config", args.config] if args.config else []
    hub = subprocess.Popen([args.bin, *config, "serve", "--host", "127.0.0.1", "--port", str(port),
                            "--data-dir", data], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("the Hub did not become ready in 60 s")
            time.sleep(0.1)
        before = cpu_seconds(hub.pid)
        events, elapsed = post_file(port)
        during = cpu_seconds(hub.pid) - before
        rss = peak_rss_mb(hub.pid)
        hub.send_signal(signal.SIGTERM)
        # The last reading before the process is reaped: its CPU up to the end of the flush.
        total = during + before
        while hub.poll() is None:
            try:
                total = cpu_seconds(hub.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.01)
        hub.wait(timeout=120)
        parquet = sum(os.path.getsize(p) for p in glob.glob(os.path.join(data, "events", "*.parquet")))
        per_m = 1e6 / events
        print(f"{events:,} events in {elapsed:.2f} s = {events / elapsed:,.0f} events/s acknowledged; "
              f"Hub CPU per 1M events: {during * per_m:.2f} s during the posts, "
              f"{(total - before) * per_m:.2f} s to exit (final flush included); "
              f"peak RSS {rss:.0f} MB; Parquet {parquet / 1e6:.1f} MB")
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
        subprocess.run(["rm", "-rf", data], check=False)


print(f"machine: {os.cpu_count()} cores; binary {args.bin}; config {args.config or '(defaults)'}")
for _ in range(args.runs):
    run()
