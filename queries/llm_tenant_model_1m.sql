-- LLM calls per tenant, provider and model, 1 minute windows, from raw events.
-- Partial states (latency_count/sum/sum_sq, latency_sketch) are kept so coarser rollups merge them.
CREATE CONTINUOUS QUERY llm_tenant_model_1m AS
SELECT window_start, window_end, tenant, provider, model,
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
FROM events
WHERE model IS NOT NULL AND tenant IS NOT NULL
GROUP BY tumble(timestamp, INTERVAL '1 minute'), tenant, provider, model;
