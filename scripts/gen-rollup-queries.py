#!/usr/bin/env python3
"""Writes the shipped rollup queries in queries/.

Three families: per provider/model and per source_module/event_type (windows 1m ... 1 month),
and per tenant/provider/model (1m and 1h: what a tenant's dashboard needs; every shipped raw
rollup costs ingest throughput, so the tenant family stays short).
The 1-minute query reads raw events; every coarser window reads the next finer rollup and
merges its partial states (counts, sums, sums of squares, min/max, DDSketch latency sketches),
so no coarse rollup re-reads raw events. Run: python3 scripts/gen-rollup-queries.py
"""
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "queries"
WINDOWS = [  # (suffix, interval, source suffix)
    ("1m", "1 minute", None),
    ("5m", "5 minutes", "1m"),
    ("15m", "15 minutes", "5m"),
    ("1h", "1 hour", "15m"),
    ("6h", "6 hours", "1h"),
    ("1d", "1 day", "6h"),
    ("1w", "7 days", "1d"),
    ("1mo", "1 month", "1d"),
]
TENANT_WINDOWS = [("1m", "1 minute", None), ("1h", "1 hour", "1m")]
FAMILIES = [
    ("llm_provider_model", ["provider", "model"], "model IS NOT NULL",
     "LLM calls per provider and model", WINDOWS),
    ("llm_module_type", ["source_module", "event_type"], None,
     "all events per source module and event type", WINDOWS),
    # Tenant-bound keys read only tables with a `tenant` column (docs/security.md).
    ("llm_tenant_model", ["tenant", "provider", "model"], "model IS NOT NULL AND tenant IS NOT NULL",
     "LLM calls per tenant, provider and model", TENANT_WINDOWS),
]

RAW = """\
-- {title}, {interval} windows, from raw events.
-- Partial states (latency_count/sum/sum_sq, latency_sketch) are kept so coarser rollups merge them.
CREATE CONTINUOUS QUERY {name} AS
SELECT window_start, window_end, {keys},
       count(*) AS requests,
       sum(CASE WHEN status IN ('error', 'timeout') THEN 1 ELSE 0 END) AS errors,
       avg(CASE WHEN status IN ('error', 'timeout') THEN 1.0 ELSE 0.0 END) AS error_rate,
       count(latency_ms) AS latency_count,
       sum(latency_ms) AS latency_sum,
       sum(latency_ms * latency_ms) AS latency_sum_sq,
       avg(latency_ms) AS avg_latency_ms,
       min(latency_ms) AS min_latency_ms,
       max(latency_ms) AS max_latency_ms,
       stddev(latency_ms) AS stddev_latency_ms,
       quantile_sketch(latency_ms) AS latency_sketch,
       sketch_quantile(quantile_sketch(latency_ms), 0.5) AS p50_latency_ms,
       sketch_quantile(quantile_sketch(latency_ms), 0.95) AS p95_latency_ms,
       sketch_quantile(quantile_sketch(latency_ms), 0.99) AS p99_latency_ms,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(total_tokens) AS total_tokens,
       sum(cost_usd) AS cost_usd
FROM events{where}
GROUP BY tumble(timestamp, INTERVAL '{interval}'), {keys};
"""

MERGED = """\
-- {title}, {interval} windows, merged from {source} (no raw events are re-read).
CREATE CONTINUOUS QUERY {name} AS
SELECT window_start, window_end, {keys},
       sum(requests) AS requests,
       sum(errors) AS errors,
       CAST(sum(errors) AS DOUBLE) / sum(requests) AS error_rate,
       sum(latency_count) AS latency_count,
       sum(latency_sum) AS latency_sum,
       sum(latency_sum_sq) AS latency_sum_sq,
       sum(latency_sum) / sum(latency_count) AS avg_latency_ms,
       min(min_latency_ms) AS min_latency_ms,
       max(max_latency_ms) AS max_latency_ms,
       CASE WHEN sum(latency_count) > 1
            THEN sqrt(greatest(sum(latency_sum_sq) - sum(latency_sum) * sum(latency_sum) / sum(latency_count), 0.0)
                      / (sum(latency_count) - 1))
       END AS stddev_latency_ms,
       sketch_merge(latency_sketch) AS latency_sketch,
       sketch_quantile(sketch_merge(latency_sketch), 0.5) AS p50_latency_ms,
       sketch_quantile(sketch_merge(latency_sketch), 0.95) AS p95_latency_ms,
       sketch_quantile(sketch_merge(latency_sketch), 0.99) AS p99_latency_ms,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(total_tokens) AS total_tokens,
       sum(cost_usd) AS cost_usd
FROM {source}
GROUP BY tumble(window_start, INTERVAL '{interval}'), {keys};
"""

for family, keys, where, title, windows in FAMILIES:
    for suffix, interval, source in windows:
        name = f"{family}_{suffix}"
        args = dict(name=name, keys=", ".join(keys), interval=interval, title=title[0].upper() + title[1:],
                    where=f"\nWHERE {where}" if where else "", source=f"{family}_{source}" if source else None)
        text = (RAW if source is None else MERGED).format(**args)
        (OUT / f"{name}.sql").write_text(text)
        print(OUT / f"{name}.sql")
