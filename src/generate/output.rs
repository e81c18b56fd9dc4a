//! Where generated events go: an NDJSON file/stdout, or a running Hub over HTTP at a rate.

use std::io::Write;
use std::time::{Duration, Instant};

use super::{Generator, GeneratorConfig};

/// Errors of the `generate` command.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Writing the output failed.
    #[error("writing events: {0}")]
    Io(#[from] std::io::Error),
    /// The target Hub could not be reached or refused the events.
    #[error("posting events to {url}: {message}")]
    Http {
        /// Target URL.
        url: String,
        /// What happened.
        message: String,
    },
}

/// Writes `count` events as NDJSON to `out`.
pub fn write_ndjson(config: GeneratorConfig, count: u64, out: &mut dyn Write) -> Result<(), GenerateError> {
    let mut generator = Generator::new(config);
    let mut buf = std::io::BufWriter::with_capacity(1 << 20, out);
    for _ in 0..count {
        buf.write_all(generator.next_event(None).as_bytes())?;
        buf.write_all(b"\n")?;
    }
    buf.flush()?;
    Ok(())
}

/// Posts `count` events (0 = forever) to `base_url` in NDJSON batches, paced at
/// `events_per_sec` of wall time, stamped with the current time.
pub async fn post_live(
    config: GeneratorConfig,
    base_url: &str,
    count: u64,
    batch_size: usize,
) -> Result<u64, GenerateError> {
    let url = format!("{}/api/v1/events/batch", base_url.trim_end_matches('/'));
    let rate = config.events_per_sec.max(0.001);
    let mut generator = Generator::new(config);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0u64;
    while count == 0 || sent < count {
        let n = if count == 0 {
            batch_size as u64
        } else {
            (count - sent).min(batch_size as u64)
        };
        let now = crate::event::time::now_micros();
        let body: String = (0..n).map(|_| generator.next_event(Some(now)) + "\n").collect();
        let response = client
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| GenerateError::Http {
                url: url.clone(),
                message: e.to_string(),
            })?;
        if response.status().is_server_error() {
            return Err(GenerateError::Http {
                url,
                message: format!("status {}", response.status()),
            });
        }
        sent += n;
        let due = Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(sent)
}
