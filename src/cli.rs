//! Command-line interface: `serve`, `generate`, `config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::generate::GeneratorConfig;

/// `--version`: the release, the git commit, the optional components built in (cargo features
/// `kafka`, `postgres`, `pgwire`) and those always present.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("HUB_GIT_HASH"),
    "; features: ",
    env!("HUB_FEATURES"),
    "; always: http, storage, continuous queries, redis-cache, object-store; datafusion 55)"
);

/// LLM Analytics Hub: streaming SQL analytics for LLM telemetry.
#[derive(Debug, Parser)]
#[command(name = "analytics-hub", version = VERSION, about)]
pub struct Cli {
    /// TOML configuration file (see `analytics-hub config` for every key).
    #[arg(long, global = true, env = "HUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (standalone: local storage, in-process cache).
    Serve(ServeArgs),
    /// Generate synthetic LLM telemetry as NDJSON, or post it to a running Hub.
    Generate(GenerateArgs),
    /// Export a table's time range or a query's rows as Parquet to a directory or S3, through
    /// a running Hub (`POST /api/v1/exports`), showing progress until it ends.
    Export(crate::exports::client::ExportArgs),
    /// Manage API keys: `keys create --name NAME --role read|ingest|admin [--tenant T]
    /// [--expires 90d]`, `keys list`, `keys revoke --name NAME`.
    #[command(subcommand)]
    Keys(crate::auth::cli::KeysCommand),
    /// Print the effective configuration (defaults + file + environment) as TOML.
    Config,
    /// Create the PostgreSQL database if missing and apply `migrations/` (needs `DATABASE_URL`,
    /// `DB_HOST`... or `[postgres] url`).
    Migrate,
    /// Benchmarks that print numbers.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Decode an NDJSON file and run the 1-minute per-model rollup (p50/p95/p99) in process;
    /// prints events/s and peak RSS.
    Rollup {
        /// NDJSON file of events (`analytics-hub generate --count 1000000 > events.ndjson`).
        #[arg(long)]
        input: PathBuf,
        /// Events per decoded batch.
        #[arg(long, default_value_t = 16384)]
        batch_rows: usize,
        /// Run this SELECT (grouped by tumble/hop) instead of the built-in rollup.
        #[arg(long)]
        sql: Option<String>,
        /// JSON reader: `scan` (the single-pass scanner, default) or `serde`.
        #[arg(long, default_value = "scan")]
        decoder: crate::event::DecoderKind,
        /// Compare the readers: single-threaded decode-only rates (serde, scanner, scanner with
        /// projection), then the rollup once with each reader.
        #[arg(long)]
        decoders: bool,
        /// Decode every column instead of only those the query reads.
        #[arg(long)]
        all_columns: bool,
    },
    /// Produce N events to a Kafka topic, then compare a raw librdkafka consume of it with the
    /// Hub's consume + decode pipeline; prints both rates.
    Kafka {
        /// Bootstrap brokers.
        #[arg(long, env = "KAFKA_BROKERS")]
        brokers: String,
        /// Topic (default: a new `hub-bench-<time>` topic).
        #[arg(long)]
        topic: Option<String>,
        /// Events to produce and consume.
        #[arg(long, default_value_t = 500_000)]
        count: u64,
        /// Partitions of the created topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Do not produce: the topic already holds `--count` events.
        #[arg(long)]
        no_produce: bool,
    },
}

/// Flags of `serve`; each overrides the file and the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind.
    #[arg(long)]
    pub host: Option<String>,
    /// Port to bind (0 = any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Data directory for the WAL and Parquet files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Generate demo traffic in-process.
    #[arg(long)]
    pub demo: bool,
    /// Demo events per second.
    #[arg(long)]
    pub demo_rate: Option<u32>,
    /// Log filter (e.g. `info`, `debug`).
    #[arg(long)]
    pub log_level: Option<String>,
}

impl ServeArgs {
    /// Applies the flags on top of `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(v) = &self.host {
            config.http.host.clone_from(v);
        }
        if let Some(v) = self.port {
            config.http.port = v;
        }
        if let Some(v) = &self.data_dir {
            config.storage.data_dir.clone_from(v);
        }
        if self.demo {
            config.demo.enabled = true;
        }
        if let Some(v) = self.demo_rate {
            config.demo.events_per_sec = v;
        }
        if let Some(v) = &self.log_level {
            config.log.level.clone_from(v);
        }
    }
}

/// Flags of `generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of events (with `--target`, 0 = until interrupted).
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// RNG seed; the same seed and `--start` give the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Events per second: event-time spacing for files, sending rate for `--target`.
    #[arg(long, default_value_t = 100.0)]
    pub events_per_sec: f64,
    /// Timestamp of the first event (RFC 3339) for file output.
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub start: String,
    /// Up to this many ms of timestamp disorder (out-of-order events).
    #[arg(long, default_value_t = 0)]
    pub disorder_ms: u64,
    /// Inject a gpt-4o latency spike starting this many seconds after `--start`.
    #[arg(long)]
    pub spike_at: Option<u64>,
    /// Length of the spike in seconds.
    #[arg(long, default_value_t = 300)]
    pub spike_secs: u64,
    /// Latency multiplier during the spike.
    #[arg(long, default_value_t = 5.0)]
    pub spike_factor: f64,
    /// Share of deliberately invalid events (0.0..=1.0).
    #[arg(long, default_value_t = 0.0)]
    pub invalid_ratio: f64,
    /// Output file (`-` = stdout). Ignored with `--target`.
    #[arg(long, default_value = "-")]
    pub output: String,
    /// Base URL of a running Hub to post to (e.g. http://127.0.0.1:3000).
    #[arg(long)]
    pub target: Option<String>,
    /// Events per HTTP request with `--target`.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
}

impl GenerateArgs {
    /// The generator configuration, or a message naming the bad flag.
    pub fn generator_config(&self) -> Result<GeneratorConfig, String> {
        let start = chrono::DateTime::parse_from_rfc3339(&self.start)
            .map_err(|e| format!("--start must be RFC 3339: {e}"))?
            .timestamp_micros();
        if !(0.0..=1.0).contains(&self.invalid_ratio) {
            return Err("--invalid-ratio must be between 0 and 1".into());
        }
        if self.events_per_sec <= 0.0 || self.events_per_sec.is_nan() {
            return Err("--events-per-sec must be > 0".into());
        }
        Ok(GeneratorConfig {
            seed: self.seed,
            start_us: start,
            events_per_sec: self.events_per_sec,
            spike_secs: if self.spike_at.is_some() { self.spike_secs } else { 0 },
            spike_at_secs: self.spike_at.unwrap_or(0),
            spike_factor: self.spike_factor,
            disorder_ms: self.disorder_ms,
            invalid_ratio: self.invalid_ratio,
        })
    }
}
