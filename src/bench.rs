//! `analytics-hub bench rollup`: pushes an NDJSON file through decode and the 1-minute
//! per-model rollup in process and reports throughput and peak memory.

use std::io::Read;
use std::time::Instant;

use crate::event::{decode_batch_body, events_schema};
use crate::stream::catalog::{CqDefinition, CqOptions};
use crate::stream::query::CqRuntime;

/// The rollup the benchmark runs (the example, percentiles from one sketch per group).
pub const ROLLUP_SQL: &str = "SELECT window_start, window_end, provider, model,
       count(*) AS requests, sum(input_tokens) AS input_tokens, sum(cost_usd) AS cost_usd,
       avg(latency_ms) AS avg_latency_ms,
       sketch_quantile(quantile_sketch(latency_ms), 0.5) AS p50_ms,
       sketch_quantile(quantile_sketch(latency_ms), 0.95) AS p95_ms,
       sketch_quantile(quantile_sketch(latency_ms), 0.99) AS p99_ms,
       avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) AS error_rate
FROM events
GROUP BY tumble(timestamp, INTERVAL '1 minute'), provider, model";

/// What one run measured.
#[derive(Debug)]
pub struct BenchReport {
    /// Events in the file.
    pub events: usize,
    /// Events rejected by the decoder.
    pub rejected: usize,
    /// Bytes read.
    pub bytes: usize,
    /// Output rows (window x group).
    pub output_rows: usize,
    /// Seconds from first byte decoded to last window emitted.
    pub seconds: f64,
    /// Peak resident set size of the process, bytes (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
}

fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Splits NDJSON into chunks of about `rows` lines, on line boundaries.
fn chunks(data: &[u8], rows: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut lines = 0;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            lines += 1;
            if lines == rows {
                out.push(&data[start..=i]);
                start = i + 1;
                lines = 0;
            }
        }
    }
    if start < data.len() {
        out.push(&data[start..]);
    }
    out
}

/// Runs the benchmark: a decoder thread feeds batches through a bounded channel to the
/// rollup on the calling thread, so decode and aggregation overlap on two cores.
pub async fn run_rollup(mut input: impl Read, batch_rows: usize, sql: &str) -> Result<BenchReport, String> {
    let mut data = Vec::new();
    input.read_to_end(&mut data).map_err(|e| format!("reading input: {e}"))?;
    let def = CqDefinition {
        name: "bench_rollup".into(),
        sql: sql.into(),
        options: CqOptions { allowed_lateness_ms: 5_000, max_future_ms: u64::MAX / 4_000, ..CqOptions::default() },
        paused: false,
        created_at_us: 0,
    };
    let mut rt = CqRuntime::new(def, &events_schema()).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let data = std::sync::Arc::new(data);
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let decoder_data = std::sync::Arc::clone(&data);
    let decoder = std::thread::spawn(move || -> Result<(usize, usize), String> {
        let (mut events, mut rejected) = (0, 0);
        for chunk in chunks(&decoder_data, batch_rows.max(1)) {
            let out = decode_batch_body(chunk, 0).map_err(|e| e.to_string())?;
            events += out.total;
            rejected += out.rejected.len();
            if tx.blocking_send(out.batch).is_err() {
                break;
            }
        }
        Ok((events, rejected))
    });
    let mut output_rows = 0;
    let now = chrono::Utc::now().timestamp_micros();
    while let Some(batch) = rx.recv().await {
        let p = rt.on_batch(&batch, now, false).await.map_err(|e| e.to_string())?;
        output_rows += p.output.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    output_rows += rt.finish().await.map_err(|e| e.to_string())?.iter().map(|b| b.num_rows()).sum::<usize>();
    let (events, rejected) = decoder.join().map_err(|_| "decoder thread panicked".to_string())??;
    Ok(BenchReport { events, rejected, bytes: data.len(), output_rows, seconds: started.elapsed().as_secs_f64(), peak_rss_bytes: peak_rss() })
}
