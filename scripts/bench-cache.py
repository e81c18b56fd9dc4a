#!/usr/bin/env python3
"""Dashboard workload against the running service, with and without the result cache.

The shipped Grafana dashboard's queries (deploy/grafana/dashboards/llm-operations.json), with
`$__timeFilter(window_start)` expanded as Grafana does for the dashboard's rounded range
(now-6h/m .. now/m), are sent by N simulated viewers every R seconds over HTTP
(POST /api/v1/sql) while events stream in; 6 hours of history are loaded first.

Prints: requests, hit rate (X-Cache), p50/p95 latency, errors, and Redis memory.

  scripts/bench-cache.py [--bin PATH] [--viewers 20] [--refresh 5] [--secs 60]
                         [--rate 2000] [--history-rate 5] [--mode redis|memory|off] [--wire]

--wire sends the queries over the Postgres wire endpoint (psycopg 3, simple protocol as
Grafana's driver does) instead of HTTP; the hit rate then comes from /metrics.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def panel_sqls():
    with open(os.path.join(ROOT, "deploy/grafana/dashboards/llm-operations.json")) as f:
        d = json.load(f)
    return [t["rawSql"] for p in d["panels"] for t in p.get("targets", []) if t.get("rawSql")]


def expand(sql, now):
    # Grafana's now-6h/m .. now/m: from rounds down to the minute, to up to its end.
    start = (now - timedelta(hours=6)).replace(second=0, microsecond=0)
    end = now.replace(second=59, microsecond=999000)
    f = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return sql.replace("$__timeFilter(window_start)", f"window_start BETWEEN '{f(start)}' AND '{f(end)}'")


def post(url, body, headers):
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.headers.get("x-cache", ""), r.read()


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--bin", default=os.path.join(target, "release", "analytics-hub"))
    ap.add_argument("--viewers", type=int, default=20)
    ap.add_argument("--refresh", type=float, default=5.0)
    ap.add_argument("--secs", type=float, default=60.0)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--history-rate", type=float, default=5.0)
    ap.add_argument("--mode", choices=["redis", "memory", "off"], default="redis")
    ap.add_argument("--wire", action="store_true")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-cache-")
    procs = []
    try:
        env = dict(os.environ, LOG_LEVEL="warn", PGWIRE_ENABLED="false")
        env.pop("REDIS_URL", None)
        redis_port = None
        if a.mode == "redis":
            redis_port = free_port()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--maxmemory", "2gb", "--maxmemory-policy", "allkeys-lru"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp))
            wait("redis", lambda: subprocess.run(["redis-cli", "-p", str(redis_port), "PING"],
                                                 capture_output=True, text=True).stdout.strip() == "PONG")
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}"
        elif a.mode == "off":
            env["CACHE_ENABLED"] = "false"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        wire_port = free_port()
        if a.wire:
            env.update(PGWIRE_ENABLED="true", PGWIRE_PORT=str(wire_port), PGWIRE_USER="bench",
                       PGWIRE_PASSWORD="bench-Secret-1")
        hub = subprocess.Popen([a.bin, "serve", "--port", str(port), "--data-dir", os.path.join(tmp, "data")],
                               env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "hub.log"), "w"))
        procs.append(hub)
        wait("the hub", lambda: urllib.request.urlopen(base + "/ready", timeout=2).status == 200)

        now = datetime.now(timezone.utc)
        count = int(6 * 3600 * a.history_rate)
        history = os.path.join(tmp, "history.ndjson")
        start = (now - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
        subprocess.run([a.bin, "generate", "--count", str(count), "--events-per-sec", str(a.history_rate),
                        "--start", start, "--output", history], check=True, stdout=subprocess.DEVNULL)
        with open(history, "rb") as f:
            lines = f.read().splitlines()
        for i in range(0, len(lines), 10000):
            post(base + "/api/v1/events/batch", b"\n".join(lines[i:i + 10000]),
                 {"content-type": "application/x-ndjson"})
        print(f"history: {count} events over 6 h loaded")

        live = subprocess.Popen([a.bin, "generate", "--target", base, "--count", "0",
                                 "--events-per-sec", str(a.rate), "--batch-size", "200"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(live)
        sqls = panel_sqls()
        results = []  # (latency_s, x_cache, ok)
        lock = threading.Lock()
        stop_at = time.time() + a.secs

        def metric(name):
            text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
            return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + "{"))

        hits0, misses0 = metric("cache_hits_total"), metric("cache_misses_total")

        def viewer(k):
            time.sleep(k * a.refresh / a.viewers)  # viewers spread over the refresh period
            conn = None
            if a.wire:
                import psycopg
                conn = psycopg.connect(host="127.0.0.1", port=wire_port, user="bench",
                                       password="bench-Secret-1", dbname="hub", autocommit=True)
            while time.time() < stop_at:
                began = time.time()
                t = datetime.now(timezone.utc)
                for sql in sqls:
                    q0 = time.perf_counter()
                    try:
                        if conn is not None:
                            # Simple protocol (no parameters), like Grafana's driver.
                            conn.execute(expand(sql, t).encode(), prepare=False).fetchall()
                            cache, ok = "", True
                        else:
                            status, cache, _ = post(base + "/api/v1/sql", json.dumps({"sql": expand(sql, t)}).encode(),
                                                    {"content-type": "application/json"})
                            ok = status == 200
                    except Exception as e:
                        print("query failed:", e)
                        cache, ok = "", False
                    with lock:
                        results.append((time.perf_counter() - q0, cache, ok))
                time.sleep(max(0.0, a.refresh - (time.time() - began)))

        threads = [threading.Thread(target=viewer, args=(k,)) for k in range(a.viewers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lat = sorted(r[0] * 1000 for r in results if r[2])
        hits = sum(1 for r in results if r[1] == "hit")
        cacheable = sum(1 for r in results if r[1] in ("hit", "miss"))
        errors = sum(1 for r in results if not r[2])
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
        print(f"path={'wire' if a.wire else 'http'} mode={a.mode} viewers={a.viewers} refresh={a.refresh}s secs={a.secs} live_rate={a.rate}/s "
              f"queries={len(results)} errors={errors}")
        if cacheable:
            print(f"hit rate: {hits / cacheable:.1%} ({hits}/{cacheable} cacheable; "
                  f"bypass {sum(1 for r in results if r[1] == 'bypass')})")
        elif a.mode != "off":
            h, m = metric("cache_hits_total") - hits0, metric("cache_misses_total") - misses0
            if h + m:
                print(f"hit rate (from /metrics): {h / (h + m):.1%} ({int(h)} hits, {int(m)} misses)")
        print(f"latency ms: p50 {q(0.5):.1f}  p95 {q(0.95):.1f}  p99 {q(0.99):.1f}  mean {statistics.fmean(lat):.1f}")
        if redis_port:
            info = subprocess.run(["redis-cli", "-p", str(redis_port), "INFO", "memory"],
                                  capture_output=True, text=True).stdout
            used = next((l.split(":")[1].strip() for l in info.splitlines() if l.startswith("used_memory_human")), "?")
            keys = subprocess.run(["redis-cli", "-p", str(redis_port), "DBSIZE"], capture_output=True, text=True).stdout.strip()
            print(f"redis: used_memory {used}, keys {keys}")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
