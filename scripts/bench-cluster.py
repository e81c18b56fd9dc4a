#!/usr/bin/env python3
"""Shared history (issue #22, first increment), measured with two real instances on this machine.

Instance W (writer) ingests N generated events over HTTP and ships its flushed Parquet files to
the shared store (moto's S3 server, or a local directory with --remote file), recording them in
a PostgreSQL catalog (a fresh database on 127.0.0.1:5432). Instance R (reader, empty data dir)
then answers over W's events from shared storage. Prints, in one run:
  1. ingest events/s on W (cluster mode on), and how long after the last acknowledgement every
     file was shipped and visible to R;
  2. per query, the median of RUNS executions (result cache off): W over its local files, R over
     the shared files (its first run, which fills its file cache, then the median of the rest),
     R2 over the shared files with its file cache off (every scan reads the bucket), and DuckDB
     over W's local Parquet files (the same bytes, the peer);
  3. what the catalog holds (files, rows, bytes).

  python3 scripts/bench-cluster.py [--bin PATH] [--events N] [--remote s3|file] [--runs K]

With --scaling, distributed execution instead: one instance ingests the events and ships them;
then the same queries are timed on it with 1, 2 and 3 instances in the cluster (the new ones
join with empty data directories and take stage tasks as workers). Prints per query the median
time and scan throughput, and how many stage tasks each instance ran; DuckDB over the same files
in the same run is the peer.

  python3 scripts/bench-cluster.py --scaling [--events N] [--runs K]

With --cq, cluster-wide continuous-query tables: instances A and B (every shipped rollup
running) each ingest every other body of the file; a standalone instance C (no cluster)
ingests all of it. Once every window has closed (idle advance), the rollup tables are read on A
(every instance's rows, merged when read) and on C (one instance that saw everything): the
answers must agree, and the median times are printed side by side.

  python3 scripts/bench-cluster.py --cq [--events N] [--runs K]
"""
import argparse
import datetime
import http.client
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid

target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/llm-analytics-hub-target")
ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(target, "release", "analytics-hub"))
ap.add_argument("--events", type=int, default=1_000_000)
ap.add_argument("--body", type=int, default=10_000)
ap.add_argument("--remote", choices=["s3", "file"], default="s3")
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--input", help="NDJSON file of --events events to use instead of generating one")
ap.add_argument("--scaling", action="store_true",
                help="distributed execution: the same queries with 1, 2 and 3 instances in the cluster")
ap.add_argument("--tail", action="store_true",
                help="keep the writer's events in memory (no flush for an hour): the readers get them "
                     "from the writer at query time (recent data over HTTP)")
ap.add_argument("--cq", action="store_true",
                help="cluster-wide continuous-query tables: two instances' merged rollups vs one instance's")
args = ap.parse_args()

CQ_QUERIES = {
    "1m, last hour, per model": "SELECT window_start, model, requests, p99_latency_ms FROM llm_provider_model_1m "
                                "WHERE window_start >= (SELECT max(window_start) FROM llm_provider_model_1m) "
                                "- INTERVAL '1 hour' ORDER BY 1, 2",
    "1m, totals per model": "SELECT model, sum(requests) AS requests, sum(input_tokens) AS tokens "
                            "FROM llm_provider_model_1m GROUP BY model ORDER BY model",
    "1h, every row": "SELECT window_start, provider, model, requests, errors, input_tokens, p99_latency_ms "
                     "FROM llm_provider_model_1h ORDER BY 1, 2, 3",
}

QUERIES = {
    "count": "SELECT count(*) AS n FROM events",
    "per-model rollup": "SELECT model, count(*) AS n, sum(total_tokens) AS tokens, avg(latency_ms) AS latency "
                        "FROM events GROUP BY model ORDER BY model",
    "p99 by provider": "SELECT provider, approx_percentile_cont(latency_ms, 0.99) AS p99 FROM events "
                       "GROUP BY provider ORDER BY provider",
}
DUCKDB = {
    "count": "SELECT count(*) FROM read_parquet('{glob}')",
    "per-model rollup": "SELECT model, count(*), sum(total_tokens), avg(latency_ms) FROM read_parquet('{glob}') "
                        "GROUP BY model ORDER BY model",
    "p99 by provider": "SELECT provider, approx_quantile(latency_ms, 0.99) FROM read_parquet('{glob}') "
                       "GROUP BY provider ORDER BY provider",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


class Hub:
    def __init__(self, name, config):
        self.data = tempfile.mkdtemp(prefix=f"hub-bench-cluster-{name}-")
        self.port = free_port()
        path = os.path.join(self.data, "hub.toml")
        with open(path, "w") as f:
            f.write(config)
        env = dict(os.environ, PGWIRE_ENABLED="false", LOG_LEVEL="warn", CACHE_ENABLED="false", **S3_ENV)
        self.proc = subprocess.Popen(
            [args.bin, "--config", path, "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", self.data],
            env=env, stderr=subprocess.DEVNULL)
        wait(f"{name} to be ready", lambda: self.ready())

    def ready(self):
        try:
            return self.request("GET", "/ready")[0] == 200
        except OSError:
            return False

    def request(self, method, path, body=None, conn=None, content_type="application/json"):
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
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

    def shared(self):
        _, data = self.request("GET", "/ready")
        return json.loads(data)["components"][0]["detail"]["shared"]

    def worker_tasks(self):
        _, data = self.request("GET", "/metrics")
        for line in data.decode().splitlines():
            if line.startswith("cluster_worker_tasks_total "):
                return int(float(line.split()[1]))
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


def rounded(rows):
    """Rows with floats to 9 significant digits (parallel sums differ in the last bits)."""
    return [{k: float(f"{v:.9g}") if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def timed(f, runs):
    times = []
    out = None
    for _ in range(runs):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def psql(db, sql):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


S3_ENV = {}
db = f"hub_bench_cluster_{free_port()}"
psql("postgres", f"CREATE DATABASE {db}")
moto = None
cleanup = []
cleanup_dbs = []
try:
    if args.remote == "s3":
        port = free_port()
        moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        S3_ENV.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_ALLOW_HTTP="true", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")

        def bucket():
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("PUT", "/hub-bench")
                return c.getresponse().status == 200
            except OSError:
                return False
        wait("moto_server", bucket, 60)
        remote = "s3://hub-bench/history/"
    else:
        remote = "file://" + tempfile.mkdtemp(prefix="hub-bench-shared-") + "/"

    segment_age = 3600 if args.tail else 2

    def config(name, extra=""):
        # Without --scaling each instance answers by itself (what is measured is reading shared
        # storage, not splitting the work).
        distributed = "" if args.scaling else "distributed = false\n"
        stream = "" if args.cq else "[stream]\nenabled = false\n"
        return (f'[storage]\nsegment_max_age_secs = {segment_age}\n{stream}'
                f'[postgres]\nurl = "postgres://postgres@127.0.0.1:5432/{db}"\ninstance_id = "{name}"\n'
                f'[cluster]\nremote = "{remote}"\nsecret = "bench-cluster-secret"\n{distributed}{extra}')

    def closed(hub, rows):
        """Whether every window of hub's 1h rollup has closed (its rows sum to `rows`)."""
        got = hub.sql("SELECT coalesce(sum(requests), 0) AS n FROM llm_provider_model_1h")[0]["n"]
        return got == rows

    def cq_bench(lines):
        a = Hub("a", config("a"))
        cleanup.append(a)
        b = Hub("b", config("b"))
        cleanup.append(b)
        # C runs the same PostgreSQL rollup sink as A and B (into a database of its own), so
        # the ingest rates compare like with like.
        psql("postgres", f"CREATE DATABASE {db}_c")
        cleanup_dbs.append(f"{db}_c")
        c = Hub("standalone", f'[storage]\nsegment_max_age_secs = {segment_age}\n'
                              f'[postgres]\nurl = "postgres://postgres@127.0.0.1:5432/{db}_c"\ninstance_id = "c"\n')
        cleanup.append(c)
        conns = {h: http.client.HTTPConnection("127.0.0.1", h.port, timeout=600) for h in (a, b, c)}
        t0 = time.perf_counter()
        for n, i in enumerate(range(0, len(lines), args.body)):
            hub = (a, b)[n % 2]
            body = b"\n".join(lines[i:i + args.body])
            status, data = hub.request("POST", "/api/v1/events/batch", body, conns[hub], "application/x-ndjson")
            if status not in (200, 207):
                raise SystemExit(f"ingest answered {status}: {data[:200]!r}")
        split = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(lines), args.body):
            status, data = c.request("POST", "/api/v1/events/batch", b"\n".join(lines[i:i + args.body]),
                                     conns[c], "application/x-ndjson")
            if status not in (200, 207):
                raise SystemExit(f"ingest answered {status}: {data[:200]!r}")
        alone = time.perf_counter() - t0
        print(f"ingest with every shipped rollup running (and the PostgreSQL rollup sink on each): "
              f"A+B {len(lines) / split:,.0f} events/s (one client alternating), standalone C "
              f"{len(lines) / alone:,.0f} events/s")
        llm = c.sql("SELECT count(*) AS n FROM events WHERE model IS NOT NULL")[0]["n"]
        # One event a day after the last on each instance closes every window of the file there
        # (idle advance moves event time only as fast as the wall clock).
        last = c.sql("SELECT max(timestamp) AS t FROM events")[0]["t"]
        later = datetime.datetime.fromisoformat(last.replace("Z", "+00:00")) + datetime.timedelta(days=1)
        for hub in (a, b, c):
            closer = json.loads(lines[0])
            closer["event_id"] = str(uuid.uuid4())
            closer["timestamp"] = later.strftime("%Y-%m-%dT%H:%M:%SZ")
            status, data = hub.request("POST", "/api/v1/events", json.dumps(closer).encode())
            if status != 200:
                raise SystemExit(f"the closing event answered {status}: {data[:200]!r}")
        t0 = time.perf_counter()
        for name, hub in (("A", a), ("B", b), ("C", c)):
            try:
                wait("every window to close (idle advance)", lambda: closed(hub, llm), 120)
            except SystemExit:
                got = hub.sql("SELECT coalesce(sum(requests), 0) AS n FROM llm_provider_model_1h")[0]["n"]
                _, status = hub.request("GET", "/api/v1/continuous-queries")
                raise SystemExit(f"{name}: the 1h rows sum to {got}, not {llm}; {status[:3000]!r}")
        print(f"every 1h window closed and merged on A, B and C {time.perf_counter() - t0:.1f} s after "
              f"the last acknowledgement ({llm:,} LLM calls)")
        files, size = psql(db, "SELECT count(*), coalesce(sum(bytes), 0) FROM hub_files "
                               "WHERE table_name LIKE 'cq.%' AND removed_at IS NULL").split("|")
        print(f"shared continuous-query files in the catalog: {files}, {int(size) / 1e6:.2f} MB")
        print(f"\nmedian of {args.runs} runs, seconds (result cache off); answers of A, B and C checked equal "
              f"(counts and sums exact, p99 to 1 %):")
        print(f"{'query':<28}{'rows':>7}{'A, cluster-wide':>17}{'C, standalone':>15}")
        for name, q in CQ_QUERIES.items():
            merged, rows_a = timed(lambda: a.sql(q), args.runs)
            rows_b = b.sql(q)
            single, rows_c = timed(lambda: c.sql(q), args.runs)
            for x, y in ((rows_a, rows_c), (rows_b, rows_c)):
                if len(x) != len(y) or any(
                        (abs(u[k] - v[k]) > 0.01 * abs(v[k]) + 1e-9) if isinstance(v[k], float) else u[k] != v[k]
                        for u, v in zip(x, y) for k in v):
                    raise SystemExit(f"{name}: the cluster-wide table differs from the standalone one")
            print(f"{name:<28}{len(rows_c):>7}{merged:>17.3f}{single:>15.3f}")
        plan = "\n".join(row["plan"] for row in a.sql("EXPLAIN " + CQ_QUERIES["1m, totals per model"])
                         if row["plan_type"] == "physical_plan")
        print("\nEXPLAIN on A:\n" + plan)

    path = args.input
    if not path:
        path = os.path.join(tempfile.mkdtemp(prefix="hub-bench-cluster-"), "events.ndjson")
        with open(path, "w") as f:
            subprocess.run([args.bin, "generate", "--count", str(args.events)], check=True, stdout=f)
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    print(f"{len(lines):,} events, {os.path.getsize(path) / len(lines):.0f} B each; shared storage: "
          f"{'moto S3 server' if args.remote == 's3' else 'local directory'}; {os.cpu_count()} cores")

    if args.cq:
        cq_bench(lines)
        raise SystemExit(0)
    w = Hub("writer", config("writer"))
    cleanup.append(w)
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=600)
    t0 = time.perf_counter()
    for i in range(0, len(lines), args.body):
        status, data = w.request("POST", "/api/v1/events/batch", b"\n".join(lines[i:i + args.body]), conn,
                                 "application/x-ndjson")
        if status not in (200, 207):
            raise SystemExit(f"ingest answered {status}: {data[:200]!r}")
    acked = time.perf_counter()
    stored = w.sql("SELECT count(*) AS n FROM events")[0]["n"]
    print(f"writer: {stored:,} events acknowledged at {stored / (acked - t0):,.0f} events/s "
          "(cluster mode, continuous queries off)")
    r = Hub("reader", config("reader"))
    cleanup.append(r)
    r2 = Hub("reader-uncached", config("reader-uncached", "cache_max_bytes = 0\n"))
    cleanup.append(r2)
    if args.tail:
        for reader in (r, r2):
            wait("a reader to list the writer",
                 lambda: any(m["instance"] == "writer" for m in reader.shared()["members"]), 60)
        print("the writer's events stay in its memory: every reader query fetches them from the writer")
    else:
        # Every file shipped and listed: the readers' answers then come from shared storage only.
        wait("the writer to ship everything",
             lambda: w.shared()["shipper"]["pending_files"] == 0 and w.shared()["shipper"]["shipped_files"] > 0
             and int(psql(db, "SELECT coalesce(sum(rows), 0) FROM hub_files WHERE removed_at IS NULL")) == stored,
             600)
        for reader in (r, r2):
            wait("a reader to list every file",
                 lambda: reader.shared()["files_of_other_instances"] == int(psql(
                     db, "SELECT count(*) FROM hub_files WHERE removed_at IS NULL")), 60)
        visible = time.perf_counter()
        print(f"every event shipped and listed {visible - acked:.1f} s after the last acknowledgement "
              f"(segment_max_age_secs = 2, ship and refresh every 1 s; recent events are read from their "
              f"owner before that)")
        files, rows, size = psql(db, "SELECT count(*), sum(rows), sum(bytes) FROM hub_files").split("|")
        print(f"catalog: {files} files, {int(rows):,} rows, {int(size) / 1e6:.1f} MB "
              f"({int(size) / int(rows):.0f} B/event in Parquet)")

    import duckdb
    glob = os.path.join(w.data, "events", "events-*.parquet")
    con = duckdb.connect()
    if args.scaling:
        r.stop()
        r2.stop()
        cleanup.clear()
        cleanup.append(w)
        hubs = [w]
        print(f"\nanswers checked equal to DuckDB's (count, per-model rollup) at every size")
        print(f"the writer coordinates; median of {args.runs} runs after one run that fills the new "
              f"instances' file caches; seconds and million events scanned per second (result cache off):")
        print(f"{'query':<20}{'instances':>10}{'seconds':>10}{'M events/s':>12}{'tasks per instance':>24}"
              f"{'DuckDB':>9}")
        # DuckDB over the same files is the independent oracle of every answer that is exact.
        expected = {}
        n_duck = con.execute(DUCKDB["count"].format(glob=glob)).fetchall()[0][0]
        expected["count"] = rounded([{"n": n_duck}])
        expected["per-model rollup"] = rounded([
            {"model": m, "n": c, "tokens": t, "latency": l}
            for m, c, t, l in con.execute(DUCKDB["per-model rollup"].format(glob=glob)).fetchall()])
        for n in (1, 2, 3):
            while len(hubs) < n:
                h = Hub(f"worker{len(hubs)}", config(f"worker{len(hubs)}"))
                cleanup.append(h)
                hubs.append(h)
            wait(f"{n} workers in the writer's list", lambda: len(w.shared()["workers"]) == n, 60)
            for name, q in QUERIES.items():
                w.sql(q)
                before = [h.worker_tasks() for h in hubs]
                secs, rows = timed(lambda: w.sql(q), args.runs)
                tasks = [h.worker_tasks() - b for h, b in zip(hubs, before)]
                if name in expected and rounded(rows) != expected[name]:
                    raise SystemExit(f"{name} with {n} instances differs from DuckDB: {rows} vs {expected[name]}")
                duck, _ = timed(lambda: con.execute(DUCKDB[name].format(glob=glob)).fetchall(), args.runs)
                per_run = "/".join(f"{t / args.runs:g}" for t in tasks)
                print(f"{name:<20}{n:>10}{secs:>10.3f}{stored / secs / 1e6:>12.1f}{per_run:>24}{duck:>9.3f}")
        plan = "\n".join(row["plan"] for row in w.sql("EXPLAIN " + QUERIES["per-model rollup"])
                         if row["plan_type"] == "physical_plan")
        print("\nEXPLAIN of the per-model rollup with 3 instances:\n" + plan)
        raise SystemExit(0)
    print(f"\nmedian of {args.runs} runs, seconds (result cache off):")
    print(f"{'query':<20}{'writer, local':>15}{'reader, 1st':>13}{'reader, cached':>16}"
          f"{'reader, no cache':>18}{'DuckDB, files':>15}")
    for name, q in QUERIES.items():
        local, a = timed(lambda: w.sql(q), args.runs)
        first, b = timed(lambda: r.sql(q), 1)
        shared, b = timed(lambda: r.sql(q), args.runs)
        uncached, c = timed(lambda: r2.sql(q), args.runs)
        if name != "p99 by provider" and not (rounded(a) == rounded(b) == rounded(c)):
            raise SystemExit(f"{name}: the instances disagree: {a} / {b} / {c}")
        duck = float("nan")
        if not args.tail:
            duck, _ = timed(lambda: con.execute(DUCKDB[name].format(glob=glob)).fetchall(), args.runs)
        print(f"{name:<20}{local:>15.3f}{first:>13.3f}{shared:>16.3f}{uncached:>18.3f}{duck:>15.3f}")
finally:
    for h in cleanup:
        h.stop()
    if moto:
        moto.terminate()
        moto.wait()
    for name in [db] + cleanup_dbs:
        psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
