#!/usr/bin/env python3
"""Reference point for `analytics-hub bench rollup`: DuckDB's batch read_ndjson + GROUP BY of
the same 1-minute per-model rollup over the same file. Usage:
  pip install duckdb && python3 scripts/bench-duckdb.py events.ndjson
"""
import sys
import time

import duckdb

path = sys.argv[1]
con = duckdb.connect()
con.execute("SET threads TO 2")
sql = f"""
SELECT time_bucket(INTERVAL '1 minute', CAST(timestamp AS TIMESTAMPTZ)) AS window_start,
       payload.provider AS provider, payload.model AS model,
       count(*) AS requests, sum(payload.input_tokens) AS input_tokens, sum(payload.cost_usd) AS cost_usd,
       avg(payload.latency_ms) AS avg_latency_ms,
       approx_quantile(payload.latency_ms, 0.5) AS p50_ms,
       approx_quantile(payload.latency_ms, 0.95) AS p95_ms,
       approx_quantile(payload.latency_ms, 0.99) AS p99_ms,
       avg(CASE WHEN payload.status <> 'ok' THEN 1.0 ELSE 0.0 END) AS error_rate
FROM read_ndjson('{path}', columns = {{
    'timestamp': 'VARCHAR',
    'payload': 'STRUCT(provider VARCHAR, model VARCHAR, input_tokens BIGINT, cost_usd DOUBLE, latency_ms DOUBLE, status VARCHAR)'
}}, maximum_object_size = 1048576)
GROUP BY ALL
"""
events = sum(1 for _ in open(path, "rb"))
start = time.perf_counter()
rows = con.execute(sql).fetchall()
elapsed = time.perf_counter() - start
print(f"duckdb {duckdb.__version__}: {events} events, {len(rows)} output rows, {elapsed:.3f} s, {events / elapsed:,.0f} events/s")
