//! PostgreSQL/TimescaleDB rollup sink: every continuous query's output lands in a table named
//! after it, written from the states of the windows the streaming engine emits and merged
//! across instances ([`rollup`]); the Kafka source's offsets, dead letters and batch claims are
//! written in one transaction per consumed batch ([`offsets`], [`claims`]). Writes go through a
//! circuit breaker ([`CircuitBreaker`]) and are retried by their caller.

mod claims;
pub mod columns;
pub mod config;
pub mod migrate;
mod offsets;
pub mod rollup;
mod tables;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;

pub use config::PostgresConfig;

use self::tables::Tables;
use super::{DeadLetter, EventClaim, RollupSink, SinkError, SourcePosition};
use crate::metrics::Metrics;
use crate::resilience::{BreakerState, CircuitBreaker, RetryPolicy};
use crate::stream::catalog::CqDefinition;
use crate::stream::state_sink::QueryEmissions;

/// Advisory lock every sink transaction takes first: writers of all instances are serialized,
/// so merges of the same row never interleave and lock order cannot deadlock.
const WRITE_LOCK: i64 = 0x4c4c_4d48_5542; // "LLMHUB"

/// Classifies a database error: connection-level and transient server errors are
/// transient (retry), the rest are bugs; the error itself is kept as the source.
pub fn classify_db(e: sqlx::Error) -> SinkError {
    let (transient, sqlstate) = match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.to_string()).unwrap_or_default();
            let transient = code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "40001"
                || code == "40P01"
                || code == "55P03";
            (transient, Some(code))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => (true, None),
        _ => (false, None),
    };
    SinkError::Database {
        transient,
        sqlstate,
        source: Box::new(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sink.
#[derive(Debug)]
pub struct PostgresSink {
    pool: PgPool,
    group: String,
    instance: String,
    /// This data directory's id: the `_store` of its parts of every rollup.
    store_id: String,
    retry: RetryPolicy,
    breaker: CircuitBreaker,
    metrics: Metrics,
    tables: tokio::sync::Mutex<Tables>,
    /// Per owned partition, the stored next offset this instance continues from
    /// (None = no row yet). Writes compare-and-set against it.
    expected: Mutex<HashMap<(String, i32), Option<i64>>>,
    writes: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Snapshot of the tables' status (the tables themselves are locked while writing).
    table_status: Mutex<serde_json::Value>,
}

impl PostgresSink {
    /// Builds the pool (connections are opened lazily, so the Hub starts while the database is
    /// down), creates the database if configured, and applies the migrations when reachable.
    pub async fn connect(
        config: &PostgresConfig,
        group: &str,
        store_id: &str,
        queries: watch::Receiver<Vec<CqDefinition>>,
        metrics: Metrics,
    ) -> Result<Self, SinkError> {
        let url = config
            .url
            .clone()
            .ok_or_else(|| SinkError::Config("postgres.url is not set".into()))?;
        if config.create_database
            && let Err(e) = migrate::create_database(&url).await
        {
            tracing::warn!(error = %e, "could not check or create the database; will retry on first write");
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .connect_lazy(&url)
            .map_err(|e| SinkError::Config(format!("invalid postgres url: {e}")))?;
        let sink = Self {
            pool,
            group: group.to_string(),
            instance: config.instance(),
            store_id: store_id.to_string(),
            retry: RetryPolicy {
                initial: Duration::from_millis(config.retry_initial_ms),
                multiplier: config.retry_multiplier as f32,
                max: Duration::from_millis(config.retry_max_ms),
                attempts: config.retry_max_attempts,
            },
            breaker: CircuitBreaker::new(
                config.breaker_failure_threshold,
                Duration::from_secs(config.breaker_open_secs),
                config.breaker_half_open_successes,
            )
            .named("postgres"),
            metrics,
            tables: tokio::sync::Mutex::new(Tables::new(queries, config.migrate_on_start)),
            expected: Mutex::new(HashMap::new()),
            writes: AtomicU64::new(0),
            last_error: Mutex::new(None),
            table_status: Mutex::new(serde_json::Value::Null),
        };
        let mut tables = sink.tables.lock().await;
        if let Err(e) = tables.prepare(&sink.pool, &sink.metrics).await {
            tracing::warn!(error = %e, "postgres is not ready yet; rollups are written once it is");
        }
        *lock(&sink.table_status) = tables.status();
        drop(tables);
        Ok(sink)
    }

    /// Runs one write through the circuit breaker, timing it as `query_type` and counting its
    /// outcome.
    async fn guarded<F: std::future::Future<Output = Result<(), SinkError>>>(
        &self,
        query_type: &str,
        write: impl FnOnce() -> F,
    ) -> Result<(), SinkError> {
        let outcome = match self.breaker.allow() {
            Err(left) => Err(SinkError::Unavailable(format!(
                "circuit breaker open for another {:.1} s",
                left.as_secs_f64()
            ))),
            Ok(()) => {
                let started = Instant::now();
                let r = write().await;
                self.observe(query_type, started);
                match &r {
                    Err(e) if e.is_unavailable() => self.breaker.failure(),
                    _ => self.breaker.success(),
                }
                r
            }
        };
        self.metrics.db_circuit_breaker_state.set(self.breaker.state().gauge());
        let result = match &outcome {
            Ok(()) => "ok",
            Err(e) if e.is_unavailable() => "unavailable",
            Err(SinkError::Fenced(_)) => "fenced",
            Err(_) => "error",
        };
        self.metrics.db_writes_total.with_label_values(&[result]).inc();
        match &outcome {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                *lock(&self.last_error) = Some(e.to_string());
            }
        }
        outcome
    }

    /// A transaction holding the sink's write lock ([`WRITE_LOCK`]).
    async fn begin_locked(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, SinkError> {
        let mut tx = self.pool.begin().await.map_err(classify_db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(classify_db)?;
        Ok(tx)
    }

    fn expected(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Option<i64>>> {
        lock(&self.expected)
    }

    fn observe(&self, query_type: &str, started: Instant) {
        self.metrics
            .db_query_duration_seconds
            .with_label_values(&[query_type])
            .observe(started.elapsed().as_secs_f64());
    }

    async fn write_txn(
        &self,
        dead_letters: &[DeadLetter],
        positions: &[SourcePosition],
        claim: Option<&EventClaim>,
    ) -> Result<(), SinkError> {
        self.tables
            .lock()
            .await
            .migrate_if_needed(&self.pool, &self.metrics)
            .await?;
        let expected: Vec<Option<Option<i64>>> = {
            let map = self.expected();
            positions
                .iter()
                .map(|p| map.get(&(p.topic.clone(), p.partition)).copied())
                .collect()
        };
        let mut tx = self.begin_locked().await?;
        for (p, expected) in positions.iter().zip(&expected) {
            let Some(expected) = expected else {
                return Err(SinkError::Fenced(format!(
                    "{}/{} is not owned by this instance",
                    p.topic, p.partition
                )));
            };
            offsets::advance(&mut tx, &self.group, p, *expected, &self.instance).await?;
        }
        offsets::dead_letters(&mut tx, dead_letters).await?;
        if let Some(claim) = claim {
            claims::insert(&mut tx, claim).await?;
        }
        tx.commit().await.map_err(classify_db)?;
        // Only partitions still owned: a write that finishes after a rebalance made this
        // instance forget a partition must not bring its stale offset back.
        let mut map = self.expected();
        for p in positions {
            if let Some(e) = map.get_mut(&(p.topic.clone(), p.partition)) {
                *e = Some(p.next);
            }
        }
        Ok(())
    }
}

impl PostgresSink {
    /// Creates the tables of queries as they are registered (not only at their first emitted
    /// window), so a dashboard can point at a table as soon as its query exists. Ends with the
    /// sink or the registry.
    pub fn follow_registry(self: &Arc<Self>, mut queries: watch::Receiver<Vec<CqDefinition>>) {
        let sink = Arc::downgrade(self);
        tokio::spawn(async move {
            while queries.changed().await.is_ok() {
                let Some(sink) = sink.upgrade() else { break };
                let mut tables = sink.tables.lock().await;
                if let Err(e) = tables.prepare(&sink.pool, &sink.metrics).await {
                    tracing::debug!(error = %e, "rollup tables not created yet; they are at the next write");
                }
                *lock(&sink.table_status) = tables.status();
            }
        });
    }

    /// One transaction: this instance's part of query `name`'s emitted windows, and the merged
    /// rows they touch.
    /// Every query's emissions in one transaction (one commit per engine step, not one per
    /// query). Each table is written under a savepoint: a write that can never succeed (a table
    /// changed under the Hub) is rolled back alone, logged and kept in the sink's status, and
    /// the others commit; a lost connection fails the whole step, retried by the engine.
    async fn states_txn(&self, queries: &[QueryEmissions<'_>]) -> Result<(), SinkError> {
        let mut tables = self.tables.lock().await;
        tables.prepare(&self.pool, &self.metrics).await?;
        *lock(&self.table_status) = tables.status();
        // A query without a table is not stored: its reason is in the status (`prepare` has
        // just rebuilt the tables for every registered query, this one included).
        let targets: Vec<_> = queries
            .iter()
            .filter_map(|q| {
                let table = tables.list().iter().find(|t| t.name == q.name)?;
                Some((table, q.emissions))
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_locked().await?;
        let mut written = Vec::with_capacity(targets.len());
        let applied = async {
            for (table, emissions) in &targets {
                sqlx::query("SAVEPOINT hub_query").execute(&mut *tx).await.map_err(classify_db)?;
                match table.write_states(&mut tx, &self.store_id, emissions).await {
                    Ok(()) => {
                        sqlx::query("RELEASE SAVEPOINT hub_query")
                            .execute(&mut *tx)
                            .await
                            .map_err(classify_db)?;
                        written.push(*table);
                    }
                    Err(e) if e.is_unavailable() => return Err(e),
                    Err(e) => {
                        sqlx::query("ROLLBACK TO SAVEPOINT hub_query")
                            .execute(&mut *tx)
                            .await
                            .map_err(classify_db)?;
                        table.settle(false);
                        tracing::error!(query = %table.name, error = %e, "emitted windows not stored in PostgreSQL; its table there misses them");
                        *lock(&self.last_error) = Some(format!("{}: {e}", table.name));
                    }
                }
            }
            tx.commit().await.map_err(classify_db)
        }
        .await;
        // Partitions created in a rolled-back transaction are gone: only committed ones count.
        for table in written {
            table.settle(applied.is_ok());
        }
        applied
    }
}

#[async_trait]
impl crate::stream::state_sink::StateSink for PostgresSink {
    async fn write_states(
        &self,
        queries: &[QueryEmissions<'_>],
    ) -> Result<(), crate::stream::state_sink::StateSinkError> {
        if queries
            .iter()
            .flat_map(|q| q.emissions.iter().flatten())
            .all(|b| b.num_rows() == 0)
        {
            return Ok(());
        }
        match self.guarded("write_states", || self.states_txn(queries)).await {
            Err(e) if e.is_unavailable() => Err(e.into()),
            // Retrying cannot help (a bug): the Hub's own tables must not wait forever; the
            // error stays in the sink's status and the log.
            Err(e) => {
                tracing::error!(error = %e, "emitted windows not stored in PostgreSQL; its tables there miss them");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}

#[async_trait]
impl RollupSink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn write(
        &self,
        dead_letters: &[DeadLetter],
        positions: &[SourcePosition],
        claim: Option<&EventClaim>,
    ) -> Result<(), SinkError> {
        self.guarded("write_txn", || self.write_txn(dead_letters, positions, claim))
            .await
    }
    async fn load_positions(&self, partitions: &[(String, i32)]) -> Result<Vec<Option<i64>>, SinkError> {
        let started = Instant::now();
        {
            let mut tables = self.tables.lock().await;
            tables.migrate_if_needed(&self.pool, &self.metrics).await?;
        }
        let stored = offsets::load(&self.pool, &self.group, partitions).await?;
        self.observe("load_offsets", started);
        let mut map = self.expected();
        for (p, o) in partitions.iter().zip(&stored) {
            map.insert(p.clone(), *o);
        }
        Ok(stored)
    }

    async fn claims(&self, store_id: &str) -> Result<std::collections::HashSet<u64>, SinkError> {
        {
            let mut tables = self.tables.lock().await;
            tables.migrate_if_needed(&self.pool, &self.metrics).await?;
        }
        claims::load(&self.pool, store_id).await
    }

    async fn is_claimed(&self, claim: &EventClaim) -> Result<bool, SinkError> {
        claims::exists(&self.pool, claim).await
    }

    async fn forget_claims(&self, store_id: &str, oldest_seq: u64) -> Result<u64, SinkError> {
        claims::forget(&self.pool, store_id, oldest_seq).await
    }

    async fn registered(&self) -> Result<Vec<CqDefinition>, SinkError> {
        self.tables
            .lock()
            .await
            .migrate_if_needed(&self.pool, &self.metrics)
            .await?;
        tables::registered(&self.pool).await
    }

    fn forget_positions(&self, partitions: &[(String, i32)]) {
        let mut map = self.expected();
        for p in partitions {
            map.remove(p);
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    fn status(&self) -> serde_json::Value {
        let tables = self
            .tables
            .try_lock()
            .map(|t| t.status())
            .unwrap_or(serde_json::Value::Null);
        let state: BreakerState = self.breaker.state();
        json!({
            "sink": "postgres",
            "circuit_breaker": state,
            "transactions": self.writes.load(Ordering::Relaxed),
            "last_error": *lock(&self.last_error),
            "owned_partitions": self.expected().len(),
            "tables": tables,
        })
    }

    fn ready(&self) -> bool {
        self.breaker.state() != BreakerState::Open
    }
}
