//! `analytics-hub bench rollup`: pushes an NDJSON file through decode and the 1-minute
//! per-model rollup in process and reports throughput and peak memory.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;

use crate::event::{DecodeOptions, DecoderKind, Projection, decode_batch_body_with, events_schema};
use crate::stream::catalog::{CqDefinition, CqOptions};
use crate::stream::query::{CqRuntime, Prepared};

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

/// How the benchmark decodes.
#[derive(Debug, Clone)]
pub struct RollupOptions {
    /// Events per decoded batch.
    pub batch_rows: usize,
    /// The JSON reader.
    pub decoder: DecoderKind,
    /// Build every column instead of only those the query reads.
    pub all_columns: bool,
}

impl Default for RollupOptions {
    fn default() -> Self {
        Self {
            batch_rows: 16_384,
            decoder: DecoderKind::default(),
            all_columns: false,
        }
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct BenchReport {
    /// The reader used.
    pub decoder: DecoderKind,
    /// Columns decoded (all 25 unless projected).
    pub columns: Vec<String>,
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
        let reader = match self.decoder {
            DecoderKind::Serde => "serde",
            DecoderKind::Scan => "scan",
        };
        writeln!(
            f,
            "decoder:       {reader}, {} columns ({})",
            self.columns.len(),
            self.columns.join(", ")
        )?;
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

/// Reads NDJSON in chunks of about `rows` lines (whole lines only): large reads cut at the
/// last newline, the rest carried into the next chunk. Each chunk is read into a buffer from
/// `buffer` (an empty one, or one handed back by a consumer: reusing them spares the page
/// faults of fresh allocations).
fn read_chunks(
    mut input: impl Read,
    rows: usize,
    mut buffer: impl FnMut() -> Vec<u8>,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> Result<usize, String> {
    let target = rows.saturating_mul(540).max(1 << 16);
    let mut carry: Vec<u8> = Vec::new();
    let mut bytes = 0;
    loop {
        let mut chunk = buffer();
        chunk.clear();
        chunk.reserve(target + carry.len() + 1024);
        chunk.append(&mut carry);
        let limit = if chunk.len() >= target {
            chunk.len() + target
        } else {
            target
        };
        let want = (limit - chunk.len()) as u64;
        let n = (&mut input)
            .take(want)
            .read_to_end(&mut chunk)
            .map_err(|e| format!("reading input: {e}"))?;
        let eof = (n as u64) < want;
        if !eof {
            match memchr::memrchr(b'\n', &chunk) {
                Some(i) => carry = chunk.split_off(i + 1),
                None => {
                    carry = chunk;
                    continue;
                }
            }
        }
        if chunk.is_empty() {
            return Ok(bytes);
        }
        bytes += chunk.len();
        if !emit(chunk) || eof {
            return Ok(bytes);
        }
    }
}

/// Runs the benchmark. A reader thread cuts the file into chunks, worker threads (one per
/// core) decode them into Arrow batches and run the query's partial aggregate on them, and the
/// rollup takes the state rows in file order on the calling task (watermark, lateness, window
/// merge and emission), so reading, decoding and aggregation overlap.
pub async fn run_rollup(
    input: impl Read + Send + 'static,
    sql: &str,
    options: &RollupOptions,
) -> Result<BenchReport, String> {
    let batch_rows = options.batch_rows;
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
    let full = CqRuntime::new(def.clone(), &events_schema())
        .await
        .map_err(|e| e.to_string())?;
    let projection = Arc::new(if options.all_columns {
        Projection::all()
    } else {
        Projection::new(full.input_columns()).map_err(|e| e.to_string())?
    });
    let mut rt = if options.all_columns {
        full
    } else {
        CqRuntime::new(def, &projection.schema())
            .await
            .map_err(|e| e.to_string())?
    };
    let decode = Arc::new(DecodeOptions {
        kind: options.decoder,
        projection: (!options.all_columns).then(|| Arc::clone(&projection)),
        ..DecodeOptions::default()
    });
    let started = Instant::now();
    let decoders = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(decoders * 2);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::channel::<Result<(u64, usize, usize, Prepared), String>>(decoders * 2);
    let runtime = tokio::runtime::Handle::current();
    let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut seq = 0u64;
        let buffer = || recycle_rx.try_recv().unwrap_or_default();
        read_chunks(input, batch_rows.max(1), buffer, |chunk| {
            seq += 1;
            work_tx.send((seq - 1, chunk)).is_ok()
        })
    });
    let mut workers = Vec::new();
    for _ in 0..decoders {
        let rx = Arc::clone(&work_rx);
        let tx = done_tx.clone();
        let decode = Arc::clone(&decode);
        let preparer = rt.preparer();
        let runtime = runtime.clone();
        let recycle = recycle_tx.clone();
        workers.push(std::thread::spawn(move || {
            loop {
                let next = rx.lock().map_err(|_| ()).and_then(|r| r.recv().map_err(|_| ()));
                let Ok((seq, chunk)) = next else { break };
                // Decode and partially aggregate here, in parallel; the runtime below takes
                // the state rows in file order (watermark, lateness and windows stay serial).
                let result = decode_batch_body_with(&chunk, 0, &decode)
                    .map_err(|e| e.to_string())
                    .and_then(|out| {
                        let prepared = runtime
                            .block_on(preparer.prepare(out.batch))
                            .map_err(|e| e.to_string())?;
                        Ok((seq, out.total, out.rejected.len(), prepared))
                    });
                // The reader may be done already; then the buffer is simply freed.
                let _ = recycle.send(chunk);
                if tx.blocking_send(result).is_err() {
                    break;
                }
            }
        }));
    }
    drop(done_tx);
    drop(recycle_tx);
    let now = crate::event::time::now_micros();
    let (mut events, mut rejected, mut output_rows) = (0, 0, 0);
    let mut next_seq = 0u64;
    let mut reorder: BTreeMap<u64, Prepared> = BTreeMap::new();
    while let Some(result) = done_rx.recv().await {
        let (seq, total, bad, prepared) = result?;
        events += total;
        rejected += bad;
        reorder.insert(seq, prepared);
        while let Some(prepared) = reorder.remove(&next_seq) {
            next_seq += 1;
            let p = rt.on_prepared(prepared, now, false).await.map_err(|e| e.to_string())?;
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
        decoder: options.decoder,
        columns: projection.columns(),
        events,
        rejected,
        bytes,
        output_rows,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss(),
    })
}

/// Single-threaded decode-only throughput of one reader over in-memory chunks, events/s.
pub fn decode_rate(chunks: &[Vec<u8>], options: &DecodeOptions) -> Result<(usize, f64), String> {
    let started = Instant::now();
    let mut events = 0;
    for chunk in chunks {
        let out = decode_batch_body_with(chunk, 0, options).map_err(|e| e.to_string())?;
        events += out.total;
    }
    let secs = started.elapsed().as_secs_f64().max(f64::EPSILON);
    Ok((events, events as f64 / secs))
}

/// Cuts NDJSON text into chunks of `rows` lines.
pub fn chunks_of(input: impl Read, rows: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    read_chunks(input, rows.max(1), Vec::new, |c| {
        out.push(c);
        true
    })?;
    Ok(out)
}

pub mod compare;

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_hold_whole_lines_in_order() {
        let text: String = (0..50_000)
            .map(|i| format!("line {i} {}\n", "x".repeat(i % 700)))
            .collect();
        let chunks = super::chunks_of(text.as_bytes(), 100).expect("reads");
        assert!(chunks.len() > 10);
        assert!(chunks.iter().all(|c| c.ends_with(b"\n")));
        assert_eq!(chunks.concat(), text.as_bytes());
        let unterminated = "a\nb\nc";
        assert_eq!(
            super::chunks_of(unterminated.as_bytes(), 1).expect("reads").concat(),
            b"a\nb\nc"
        );
    }
}
