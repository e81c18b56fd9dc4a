-- LLM calls per tenant, provider and model, 1 hour windows, merged from llm_tenant_model_1m (no raw events are re-read).
CREATE CONTINUOUS QUERY llm_tenant_model_1h AS
SELECT window_start, window_end, tenant, provider, model,
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
FROM llm_tenant_model_1m
GROUP BY tumble(window_start, INTERVAL '1 hour'), tenant, provider, model;
