//! `analytics-hub bench rollup`: pushes an NDJSON file through decode and the 1-minute
//! per-model rollup in process and reports throughput and peak memory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;

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

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.seconds.max(f64::EPSILON);
        writeln!(f, "events:        {} ({} rejected)", self.events, self.rejected)?;
        writeln!(
            f,
            "input:         {:.1} MB ({} bytes/event)",
            self.bytes as f64 / 1e6,
            self.bytes / self.events.max(1)
        )?;
        writeln!(f, "output rows:   {}", self.output_rows)?;
        writeln!(f, "elapsed:       {:.3} s", self.seconds)?;
        writeln!(
            f,
            "throughput:    {:.0} events/s ({:.1} MB/s)",
            self.events as f64 / secs,
            self.bytes as f64 / 1e6 / secs
        )?;
        match self.peak_rss_bytes {
            Some(b) => writeln!(f, "peak RSS:      {:.1} MB", b as f64 / 1e6),
            None => writeln!(f, "peak RSS:      unavailable"),
        }
    }
}

fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads NDJSON in chunks of about `rows` lines (whole lines only).
fn read_chunks(mut input: impl BufRead, rows: usize, mut emit: impl FnMut(Vec<u8>) -> bool) -> Result<usize, String> {
    let mut bytes = 0;
    loop {
        let mut chunk = Vec::with_capacity(rows * 600);
        let mut lines = 0;
        while lines < rows {
            let n = input
                .read_until(b'\n', &mut chunk)
                .map_err(|e| format!("reading input: {e}"))?;
            if n == 0 {
                break;
            }
            lines += 1;
        }
        if chunk.is_empty() {
            return Ok(bytes);
        }
        bytes += chunk.len();
        if !emit(chunk) {
            return Ok(bytes);
        }
    }
}

/// Runs the benchmark. A reader thread cuts the file into chunks, decoder threads (one per
/// core) turn them into Arrow batches, and the rollup consumes them in file order on the
/// calling task, so reading, decoding and aggregation overlap.
pub async fn run_rollup(
    input: impl Read + Send + 'static,
    batch_rows: usize,
    sql: &str,
) -> Result<BenchReport, String> {
    let def = CqDefinition {
        name: "bench_rollup".into(),
        sql: sql.into(),
        options: CqOptions {
            allowed_lateness_ms: 5_000,
            max_future_ms: u64::MAX / 4_000,
            ..CqOptions::default()
        },
        paused: false,
        created_at_us: 0,
    };
    let mut rt = CqRuntime::new(def, &events_schema()).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let decoders = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(decoders * 2);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::channel::<Result<(u64, usize, usize, RecordBatch), String>>(decoders * 2);
    let reader = std::thread::spawn(move || {
        let mut seq = 0u64;
        read_chunks(BufReader::with_capacity(1 << 20, input), batch_rows.max(1), |chunk| {
            seq += 1;
            work_tx.send((seq - 1, chunk)).is_ok()
        })
    });
    let mut workers = Vec::new();
    for _ in 0..decoders {
        let rx = Arc::clone(&work_rx);
        let tx = done_tx.clone();
        workers.push(std::thread::spawn(move || {
            loop {
                let next = rx.lock().map_err(|_| ()).and_then(|r| r.recv().map_err(|_| ()));
                let Ok((seq, chunk)) = next else { break };
                let result = decode_batch_body(&chunk, 0)
                    .map(|out| (seq, out.total, out.rejected.len(), out.batch))
                    .map_err(|e| e.to_string());
                if tx.blocking_send(result).is_err() {
                    break;
                }
            }
        }));
    }
    drop(done_tx);
    let now = crate::event::time::now_micros();
    let (mut events, mut rejected, mut output_rows) = (0, 0, 0);
    let mut next_seq = 0u64;
    let mut reorder: BTreeMap<u64, RecordBatch> = BTreeMap::new();
    while let Some(result) = done_rx.recv().await {
        let (seq, total, bad, batch) = result?;
        events += total;
        rejected += bad;
        reorder.insert(seq, batch);
        while let Some(batch) = reorder.remove(&next_seq) {
            next_seq += 1;
            let p = rt.on_batch(&batch, now, false).await.map_err(|e| e.to_string())?;
            output_rows += p.output.iter().map(RecordBatch::num_rows).sum::<usize>();
        }
    }
    output_rows += rt
        .finish()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(RecordBatch::num_rows)
        .sum::<usize>();
    let bytes = reader.join().map_err(|_| "reader thread panicked".to_string())??;
    for w in workers {
        w.join().map_err(|_| "decoder thread panicked".to_string())?;
    }
    Ok(BenchReport {
        events,
        rejected,
        bytes,
        output_rows,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss(),
    })
}
