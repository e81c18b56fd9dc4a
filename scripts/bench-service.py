#!/usr/bin/env python3
"""The service path, measured as a user runs it (issue #19), next to its peers in the same run.

Generates N events to a file, then prints, in one run on this machine:
  1. `analytics-hub bench rollup` on the file (the in-process bench path);
  2. DuckDB `read_ndjson` + the same rollup (scripts/bench-duckdb.py);
  3. `serve` (fresh data dir, every shipped rollup running): HTTP batch ingest of the file as
     NDJSON bodies of BODY lines from CLIENTS concurrent clients, acknowledged events/s, and the
     peak RSS (VmHWM) of the Hub;
  4. single-event `POST /api/v1/events` with wrk (32 connections, WRK_SECONDS), req/s and
     latency percentiles, plus the mean WAL group size (group commit) from /metrics;
  5. freshness with a fast event clock: events in 30 s event-time steps over 2 h 10 min; after
     each acknowledged step, how long until every 1m / 5m / 1h window the watermark closed is
     visible in SQL;
  6. live freshness (LIVE seconds of live-timestamped traffic): wall-clock delay between a
     1m / 5m window's end and its row appearing (the allowed lateness, 5 s, is part of it).
  `--stream-clients K` (issue #20): K `GET /api/v1/stream?topic=events` clients read every row
     during the ingest phases; prints the rows each received (the cost of the live feed).
  `--postgres URL` (issue #19): after the ingest phases, the same batch ingest and single
     events into a second Hub writing the PostgreSQL rollup sink (a fresh database on the server
     at URL, dropped after), then checks every rollup row the Hub emitted is in PostgreSQL with
     the same request counts: the cost of the sink, measured next to the Hub without it.
  `--only export` (issue #18): the batch ingest, then a Parquet snapshot of every event
     (partitioned by date and model) through `POST /api/v1/exports`, rows/s and the Hub's peak
     RSS during the export (VmHWM reset just before it), next to DuckDB writing the same rows
     (read from the Hub's snapshot) with the same partitioning.

  python3 scripts/bench-service.py [--bin PATH] [--events N] [--body LINES] [--clients C]
                                   [--wrk-seconds S] [--live SECONDS]
"""
import argparse
import http.client
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone

target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/llm-analytics-hub-target")
ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(target, "release", "analytics-hub"))
ap.add_argument("--events", type=int, default=1_000_000)
ap.add_argument("--body", type=int, default=10_000)
ap.add_argument("--clients", type=int, default=2)
ap.add_argument("--wrk-seconds", type=int, default=15)
ap.add_argument("--live", type=int, default=130, help="seconds of live traffic (330 to see a 5m window)")
ap.add_argument("--hub-config", help="TOML file passed to serve --config (e.g. to compare settings)")
ap.add_argument("--only", choices=["batch", "export", "ingest"],
                help="run only the HTTP batch phase (then the export); ingest: batch and single-event phases")
ap.add_argument("--stream-clients", type=int, default=0,
                help="Server-Sent Events clients following the events topic during the ingest phases (issue #20)")
ap.add_argument("--input", help="NDJSON file of --events events to use instead of generating one")
ap.add_argument("--postgres", help="PostgreSQL server URL without a database (postgres://user@host:port): "
                "also measure ingest with the rollup sink into a fresh database there")
args = ap.parse_args()
HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """The release binary on a free loopback port with a fresh data directory."""

    def __init__(self, database_url=None):
        self.data = tempfile.mkdtemp(prefix="hub-bench-service-")
        self.port = free_port()
        env = dict(os.environ, PGWIRE_ENABLED="false", LOG_LEVEL="warn")
        env.pop("DATABASE_URL", None)
        if database_url:
            env["DATABASE_URL"] = database_url
        config = ["--config", args.hub_config] if args.hub_config else []
        self.proc = subprocess.Popen(
            [args.bin, *config, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", self.data],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.request("GET", "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("the Hub did not become ready in 60 s")

    def request(self, method, path, body=None, content_type="application/json", conn=None):
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        c.request(method, path, body=body, headers={"content-type": content_type})
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data

    def sql(self, q):
        status, data = self.request("POST", "/api/v1/sql", json.dumps({"sql": q}).encode())
        if status != 200:
            raise SystemExit(f"SQL answered {status}: {data[:300]!r}")
        return json.loads(data)["rows"]

    def peak_rss_mb(self, field="VmHWM"):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def reset_peak_rss(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def metric(self, name):
        _, text = self.request("GET", "/metrics")
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def buckets(self, prefix):
        """Cumulative counts by `le` of the histogram series starting with `prefix`."""
        _, text = self.request("GET", "/metrics")
        out = {}
        for line in text.decode().splitlines():
            if line.startswith(prefix):
                le = re.search(r'le="([^"]+)"', line).group(1)
                out[le] = float(line.rsplit(" ", 1)[1])
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def ts_us(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1_000_000)


def bench_rollup(path):
    out = subprocess.run([args.bin, "bench", "rollup", "--input", path], check=True, capture_output=True, text=True)
    m = re.search(r"throughput:\s+([0-9.]+) events/s", out.stdout)
    return float(m.group(1)) if m else float("nan")


def duckdb_rollup(path):
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench-duckdb.py"), path], check=True,
                         capture_output=True, text=True)
    m = re.search(r"([0-9,]+) events/s", out.stdout)
    return float(m.group(1).replace(",", "")) if m else float("nan"), out.stdout.split(":")[0]


def batch_ingest(hub, path):
    """The file through HTTP batch ingest; every line must be stored. Returns (events/s, s)."""
    sent, elapsed = stream_ingest(hub, path)
    stored = hub.sql("SELECT count(*) AS n FROM events")[0]["n"]
    if stored != sent:
        raise SystemExit(f"stored {stored} of {sent} events")
    return sent / elapsed, elapsed


class StreamClients:
    """K Server-Sent Events clients reading the events topic, counting rows, until stopped."""

    def __init__(self, hub, k):
        self.counts = [0] * k
        self.done = [False] * k
        self.stop = False
        self.conns = []
        self.threads = []
        for i in range(k):
            c = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=600)
            c.request("GET", "/api/v1/stream?topic=events")
            r = c.getresponse()
            if r.status != 200:
                raise SystemExit(f"stream answered {r.status}")
            self.conns.append(c)
            t = threading.Thread(target=self.read, args=(i, r), daemon=True)
            t.start()
            self.threads.append(t)

    def read(self, i, response):
        try:
            while not self.stop:
                line = response.readline()
                if not line:
                    return
                if line.startswith(b"event: row"):
                    self.counts[i] += 1
                elif line.startswith(b"event: close"):
                    print(f"  stream client {i} was cut off after {self.counts[i]:,} rows: "
                          f"{response.readline()[:160]!r}")
                    return
        except OSError:
            return
        finally:
            self.done[i] = True

    def wait_for(self, total, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline and not all(d or c >= total for d, c in zip(self.done, self.counts)):
            time.sleep(0.05)
        return list(self.counts)

    def close(self):
        self.stop = True
        for c in self.conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def single_events(hub, template):
    template = json.loads(template)
    template["event_id"] = "%s"
    body = json.dumps(template).replace("%", "%%").replace('"%%s"', '"%s"')
    lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    lua.write(
        """
local n = 0
local threads = {}
setup = function(thread) thread:set("tid", n); n = n + 1 end
local counter = 0
local template = [==[%s]==]
request = function()
  counter = counter + 1
  local id = string.format("%%08x-0000-4000-8000-%%012x", tid, counter)
  return wrk.format("POST", "/api/v1/events", {["Content-Type"] = "application/json"}, string.format(template, id))
end
response = function(status, headers, body)
  if status ~= 200 then error("status " .. status .. ": " .. body) end
end
""" % body
    )
    lua.close()
    groups0 = (hub.metric("wal_commit_group_batches_sum"), hub.metric("wal_commit_group_batches_count"))
    served0 = hub.buckets(SINGLE_SERIES)
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{args.wrk_seconds}s", "--latency", "-s", lua.name, f"http://127.0.0.1:{hub.port}"],
        check=True, capture_output=True, text=True,
    ).stdout
    groups1 = (hub.metric("wal_commit_group_batches_sum"), hub.metric("wal_commit_group_batches_count"))
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))

    def lat(p):
        m = re.search(rf"\s{p}%\s+([0-9.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    mean_group = (groups1[0] - groups0[0]) / max(1.0, groups1[1] - groups0[1])
    served = {le: n - served0.get(le, 0.0) for le, n in hub.buckets(SINGLE_SERIES).items()}
    return rps, lat(50), lat(99), int(non2xx.group(1)) if non2xx else 0, mean_group, served


# The Hub's own latency histogram of single-event POSTs: from the request's arrival in the
# handler stack to its answer (durable append included), without the load generator's and the
# kernel's queueing on the same cores, which dominate wrk's tail on a 2-core machine.
SINGLE_SERIES = 'http_request_duration_seconds_bucket{method="POST",route="/api/v1/events",status_code="200",'


def served_summary(served):
    """p99 as the histogram bucket that holds it, and the share of requests over 10 ms."""
    bounds = sorted((float("inf") if le == "+Inf" else float(le), n) for le, n in served.items())
    total = bounds[-1][1] if bounds else 0
    if total <= 0:
        return "no samples"
    p99 = next(le for le, n in bounds if n >= 0.99 * total)
    over10 = total - next(n for le, n in bounds if le >= 0.01)
    return f"served p99 <= {p99 * 1000:g} ms, {100 * over10 / total:.2f} % over 10 ms ({int(total)} requests)"


LEVELS = [("1m", 60), ("5m", 300), ("1h", 3600)]


def psql(url, sql):
    return subprocess.run(["psql", url, "-Atc", sql], check=True, capture_output=True, text=True).stdout.strip()


def close_windows(hub, template, table):
    """One event at the wall clock closes every generated window (no model: no row of its own);
    returns the seconds from its ack until `table` has the window of the last event."""
    closing = json.loads(template)
    closing["event_id"] = str(uuid.uuid4())
    closing["timestamp"] = datetime.now(timezone.utc).isoformat()
    closing.get("payload", {}).pop("model", None)
    last = hub.sql("SELECT CAST(max(timestamp) AS VARCHAR) AS t FROM events WHERE model IS NOT NULL")[0]["t"]
    status, _ = hub.request("POST", "/api/v1/events", json.dumps(closing).encode())
    if status != 200:
        raise SystemExit(f"closing event refused: {status}")
    acked = time.time()
    while not hub.sql(f"SELECT count(*) AS n FROM {table} WHERE window_end > TIMESTAMP '{last}'")[0]["n"]:
        if time.time() > acked + 120:
            raise SystemExit(f"{table}: the window of the last event ({last}) was not emitted in 120 s")
        time.sleep(0.05)
    return time.time() - acked


def postgres_phase(path, template, rate_without, rps_without):
    """Batch ingest and single events with the PostgreSQL sink, then the rows checked."""
    db = f"hub_bench_{uuid.uuid4().hex[:12]}"
    url = f"{args.postgres.rstrip('/')}/{db}"
    hub = Hub(database_url=url)
    try:
        rate, elapsed = batch_ingest(hub, path)
        print(f"serve + PostgreSQL sink, HTTP batch ingest: {rate:12,.0f} events/s ({elapsed:.1f} s) "
              f"= {rate / rate_without:.2f}x without the sink")
        print(f"  peak RSS after {args.events} events: {hub.peak_rss_mb():.0f} MB")
        table = "llm_provider_model_1m"
        waited = close_windows(hub, template, table)
        print(f"  every generated window emitted {waited:.2f} s after the closing event's ack")
        if args.only != "batch":
            rps, p50, p99, non2xx, group, served = single_events(hub, template)
            print(f"  single-event POST, wrk 32 conns {args.wrk_seconds} s: {rps:10,.0f} req/s  p50 {p50:.2f} ms  "
                  f"p99 {p99:.2f} ms  non-2xx {non2xx} = {rps / rps_without:.2f}x without the sink")
            print(f"    in the Hub (its own histogram): {served_summary(served)}")
        q = f"SELECT count(*) AS n, CAST(sum(requests) AS BIGINT) AS r FROM {table}"
        deadline = time.time() + 30
        while True:
            hub_rows = hub.sql(q)[0]
            pg = psql(url, q.replace(" AS n", "").replace(" AS r", "")).split("|")
            if [str(hub_rows["n"]), str(hub_rows["r"])] == pg and hub_rows["n"] > 0:
                break
            if time.time() > deadline:
                raise SystemExit(f"{table}: the Hub has {hub_rows}, PostgreSQL {pg}")
            time.sleep(0.2)
        print(f"  {table}: {hub_rows['n']} rows, {hub_rows['r']:,} requests in the Hub and in PostgreSQL alike")
    finally:
        hub.stop()
        subprocess.run(["psql", f"{args.postgres.rstrip('/')}/postgres", "-qc",
                        f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=False, capture_output=True)


def fast_clock_freshness(hub):
    """Event time runs far ahead of the wall clock: 30 s of events per step, 100 events/s."""
    gen = subprocess.run(
        [args.bin, "generate", "--count", str(100 * 60 * 130), "--events-per-sec", "100", "--seed", "7"],
        check=True, capture_output=True,
    ).stdout.splitlines()
    start = ts_us(json.loads(gen[0])["timestamp"])
    waits = {name: [] for name, _ in LEVELS}
    closed = {name: 0 for name, _ in LEVELS}
    step = 100 * 30
    for k in range(0, len(gen), step):
        chunk = gen[k:k + step]
        status, data = hub.request("POST", "/api/v1/events/batch", b"\n".join(chunk), "application/x-ndjson")
        if status != 200:
            raise SystemExit(f"fast-clock post answered {status}: {data[:200]!r}")
        acked = time.perf_counter()
        watermark = ts_us(json.loads(chunk[-1])["timestamp"]) - 5_000_000
        for name, secs in LEVELS:
            want = (watermark - start) // (secs * 1_000_000)
            if want <= closed[name]:
                continue
            # A window of this level closed with this step: time until every closed one is visible.
            while True:
                have = hub.sql(f"SELECT count(DISTINCT window_start) AS n FROM llm_provider_model_{name}")[0]["n"]
                if have >= want:
                    break
                if time.perf_counter() - acked > 30:
                    raise SystemExit(f"{name}: {have} of {want} windows visible 30 s after the watermark passed")
                time.sleep(0.002)
            closed[name] = want
            waits[name].append((time.perf_counter() - acked) * 1000)
    return waits


def live_freshness(hub, template):
    """Live-timestamped traffic at ~1000 events/s; when does each window's row appear?"""
    base = json.loads(template)
    stop = threading.Event()

    def send():
        conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)
        while not stop.is_set():
            now = datetime.now(timezone.utc)
            lines = []
            for i in range(100):
                e = dict(base)
                e["event_id"] = str(uuid.uuid4())
                e["timestamp"] = now.isoformat().replace("+00:00", "Z")
                lines.append(json.dumps(e))
            hub.request("POST", "/api/v1/events/batch", "\n".join(lines).encode(), "application/x-ndjson", conn)
            time.sleep(0.1)

    sender = threading.Thread(target=send)
    sender.start()
    seen = {"1m": set(), "5m": set()}
    delays = {"1m": [], "5m": []}
    end = time.time() + args.live
    while time.time() < end:
        for name in seen:
            for row in hub.sql(f"SELECT DISTINCT window_end FROM llm_provider_model_{name}"):
                w = row["window_end"]
                if w not in seen[name]:
                    seen[name].add(w)
                    delays[name].append(time.time() - ts_us(w) / 1e6)
        time.sleep(0.05)
    stop.set()
    sender.join()
    return delays


DUCKDB_COPY = """
import duckdb, resource, sys, time
src, dst = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_parquet('{src}/**/*.parquet', hive_partitioning = true)) TO '{dst}' "
            "(FORMAT parquet, PARTITION_BY (date, model), COMPRESSION zstd)")
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, duckdb.__version__)
"""


def stream_ingest(hub, path):
    """Posts the file as NDJSON bodies of BODY lines from CLIENTS threads, reading it as it goes
    (10M events do not fit in this script's memory as one list)."""
    lock = threading.Lock()
    sent = [0]
    errors = []
    f = open(path, "rb")

    def next_body():
        with lock:
            lines = list(itertools.islice(f, args.body))
            sent[0] += len(lines)
        return b"".join(lines) if lines else None

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=300)
        while not errors:
            body = next_body()
            if body is None:
                return
            status, data = hub.request("POST", "/api/v1/events/batch", body, "application/x-ndjson", conn)
            if status != 200:
                errors.append((status, data[:200]))

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    f.close()
    if errors:
        raise SystemExit(f"batch ingest failed: {errors[0]}")
    return sent[0], elapsed


def export_phase(hub, rows):
    out = tempfile.mkdtemp(prefix="hub-bench-export-")
    hub.reset_peak_rss()
    before = hub.peak_rss_mb("VmRSS")
    start = time.perf_counter()
    request = {"table": "events", "destination": f"file://{out}/", "partition_by": ["date", "model"]}
    status, data = hub.request("POST", "/api/v1/exports", json.dumps(request).encode())
    if status != 202:
        raise SystemExit(f"export refused: {status} {data[:300]!r}")
    export_id = json.loads(data)["id"]
    while True:
        _, data = hub.request("GET", f"/api/v1/exports/{export_id}")
        done = json.loads(data)
        if done["status"] != "running":
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    if done["status"] != "succeeded" or done["manifest"]["total_rows"] != rows:
        raise SystemExit(f"export ended {done['status']}: {str(done)[:300]}")
    m = done["manifest"]
    print(f"serve, Parquet snapshot of {rows} events: {rows / elapsed:12,.0f} rows/s ({elapsed:.1f} s; "
          f"{len(m['files'])} files, {m['total_bytes'] / 1e6:.0f} MB, partitioned by date, model)")
    print(f"  Hub RSS before {before:.0f} MB, peak during the export {hub.peak_rss_mb():.0f} MB "
          f"(+{hub.peak_rss_mb() - before:.0f} MB)")
    peer = subprocess.run([sys.executable, "-c", DUCKDB_COPY, out, tempfile.mkdtemp(prefix="hub-bench-duck-") + "/x"],
                          check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1].split()
    secs, rss, version = float(peer[0]), float(peer[1]), peer[2]
    print(f"DuckDB {version} COPY ... PARTITION_BY of the same rows: {rows / secs:12,.0f} rows/s ({secs:.1f} s), "
          f"peak RSS {rss:.0f} MB")


def main():
    if args.input:
        path = args.input
    else:
        work = tempfile.mkdtemp(prefix="hub-bench-input-")
        path = os.path.join(work, "events.ndjson")
        with open(path, "wb") as f:
            subprocess.run([args.bin, "generate", "--count", str(args.events)], check=True, stdout=f)
    with open(path, "rb") as f:
        template = f.readline().decode()
    size = os.path.getsize(path)
    print(f"machine: {os.cpu_count()} cores; binary {args.bin}")
    print(f"input: {args.events} events, {size / args.events:.0f} B/event, {size / 1e6:.0f} MB")

    if args.only == "export":
        hub = Hub()
        try:
            rate, elapsed = batch_ingest(hub, path)
            print(f"serve, HTTP batch ingest, acknowledged:  {rate:12,.0f} events/s ({elapsed:.1f} s)")
            print(f"  peak RSS after {args.events} events: {hub.peak_rss_mb():.0f} MB")
            export_phase(hub, args.events)
        finally:
            hub.stop()
        return
    bench = bench_rollup(path)
    duck, duck_version = duckdb_rollup(path)
    print(f"bench rollup (in-process path):          {bench:12,.0f} events/s")
    print(f"{duck_version} read_ndjson + rollup:        {duck:12,.0f} events/s")

    hub = Hub()
    streams = StreamClients(hub, args.stream_clients) if args.stream_clients else None
    try:
        rate, elapsed = batch_ingest(hub, path)
        print(f"serve, HTTP batch ingest, acknowledged:  {rate:12,.0f} events/s ({elapsed:.1f} s; "
              f"{args.body} lines/body, {args.clients} clients, shipped rollups on)"
              f"  = {rate / bench:.2f}x bench, {rate / duck:.2f}x DuckDB")
        print(f"  peak RSS after {args.events} events: {hub.peak_rss_mb():.0f} MB")
        if streams:
            got = streams.wait_for(args.events)
            print(f"  {len(got)} stream clients received {min(got):,}..{max(got):,} rows each")
        rps = float("nan")
        if args.only != "batch":
            if args.postgres:
                waited = close_windows(hub, template, "llm_provider_model_1m")
                print(f"  every generated window emitted {waited:.2f} s after the closing event's ack")
            rps, p50, p99, non2xx, group, served = single_events(hub, template)
            print(f"single-event POST, wrk 32 conns {args.wrk_seconds} s:   {rps:10,.0f} req/s  p50 {p50:.2f} ms  "
                  f"p99 {p99:.2f} ms  non-2xx {non2xx}  mean WAL group {group:.1f} requests/fdatasync")
            print(f"  in the Hub (its own histogram): {served_summary(served)}")
            if streams:
                print(f"  stream clients received {min(streams.counts):,}..{max(streams.counts):,} rows each in all")
    finally:
        if streams:
            streams.close()
        hub.stop()
    if args.postgres:
        postgres_phase(path, template, rate, rps)
    if args.only in ("batch", "ingest"):
        return

    hub = Hub()
    try:
        waits = fast_clock_freshness(hub)
        for name, xs in waits.items():
            print(f"fast-clock freshness {name:>3}: {len(xs)} windows closed; visible after ack "
                  f"p50 {percentile(xs, 0.5):.1f} ms, max {max(xs) if xs else float('nan'):.1f} ms")
    finally:
        hub.stop()

    if args.live > 0:
        hub = Hub()
        try:
            delays = live_freshness(hub, template)
            for name, xs in delays.items():
                if xs:
                    print(f"live freshness {name:>3}: {len(xs)} windows; row visible {min(xs):.2f}-{max(xs):.2f} s "
                          f"after the window end (allowed lateness 5 s)")
                else:
                    print(f"live freshness {name:>3}: no window closed in {args.live} s")
        finally:
            hub.stop()


if __name__ == "__main__":
    main()
