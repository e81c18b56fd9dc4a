//! The sink's view of the registered continuous queries: one [`RollupTable`] per query it can
//! store, rebuilt (and created in the database) whenever the registry changes.

use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use super::classify_db;
use super::migrate;
use super::rollup::RollupTable;
use crate::event::{EVENTS_TABLE, events_schema};
use crate::metrics::Metrics;
use crate::sinks::SinkError;
use crate::stream::catalog::CqDefinition;
use crate::stream::query::source_of;

/// How often the shared registry is re-read for queries registered on other instances.
const REGISTRY_REFRESH: Duration = Duration::from_secs(10);

/// The queries of the shared registry, oldest first, with the options they were registered
/// with (defaults for rows written before options were kept).
pub async fn registered(pool: &PgPool) -> Result<Vec<CqDefinition>, SinkError> {
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT name, sql, options::text FROM hub_continuous_queries ORDER BY registered_at, name")
            .fetch_all(pool)
            .await
            .map_err(classify_db)?;
    Ok(rows
        .into_iter()
        .map(|(name, sql, options)| CqDefinition {
            options: options.and_then(|o| serde_json::from_str(&o).ok()).unwrap_or_default(),
            name,
            sql,
            paused: false,
            created_at_us: 0,
        })
        .collect())
}

/// Tables in dependency order (a query after the query it reads).
#[derive(Debug)]
pub struct Tables {
    queries: watch::Receiver<Vec<CqDefinition>>,
    migrate: bool,
    migrated: bool,
    built: bool,
    refreshed: Option<Instant>,
    /// Names registered locally at the last rebuild (their removal deletes registry rows).
    local: Vec<String>,
    list: Vec<RollupTable>,
    storage: Vec<(String, String)>,
    skipped: Vec<(String, String)>,
}

impl Tables {
    /// Follows `queries`; applies migrations before first use when `migrate`.
    pub fn new(queries: watch::Receiver<Vec<CqDefinition>>, migrate: bool) -> Self {
        Self {
            queries,
            migrate,
            migrated: false,
            built: false,
            refreshed: None,
            local: Vec::new(),
            list: Vec::new(),
            storage: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// The tables, upstream before downstream.
    pub fn list(&self) -> &[RollupTable] {
        &self.list
    }

    /// Applies the migrations once.
    pub async fn migrate_if_needed(&mut self, pool: &PgPool, metrics: &Metrics) -> Result<(), SinkError> {
        if self.migrate && !self.migrated {
            let started = Instant::now();
            migrate::run(pool).await?;
            metrics
                .db_query_duration_seconds
                .with_label_values(&["migrate"])
                .observe(started.elapsed().as_secs_f64());
            self.migrated = true;
        }
        Ok(())
    }

    /// Migrations, then tables for the current registry: this instance's queries plus those
    /// other instances registered in `hub_continuous_queries` (re-read every 10 s), so every
    /// instance writes every stored query whatever it was told locally.
    pub async fn prepare(&mut self, pool: &PgPool, metrics: &Metrics) -> Result<(), SinkError> {
        self.migrate_if_needed(pool, metrics).await?;
        let changed = self.queries.has_changed().unwrap_or(false);
        let stale = self.refreshed.is_none_or(|t| t.elapsed() >= REGISTRY_REFRESH);
        if self.built && !changed && !stale {
            return Ok(());
        }
        let local = self.queries.borrow_and_update().clone();
        let mut defs = local.clone();
        for def in registered(pool).await? {
            if !defs.iter().any(|d| d.name == def.name) {
                defs.push(def);
            }
        }
        let mut known: Vec<&String> = self
            .list
            .iter()
            .map(|t| &t.name)
            .chain(self.skipped.iter().map(|(n, _)| n))
            .collect();
        let mut wanted: Vec<&String> = defs.iter().map(|d| &d.name).collect();
        known.sort();
        wanted.sort();
        if self.built && !changed && known == wanted {
            self.refreshed = Some(Instant::now());
            return Ok(());
        }
        let deleted: Vec<String> = self
            .local
            .iter()
            .filter(|n| !local.iter().any(|d| &d.name == *n))
            .cloned()
            .collect();
        defs.retain(|d| !deleted.contains(&d.name));
        self.rebuild(pool, &defs, &deleted).await?;
        self.local = local.iter().map(|d| d.name.clone()).collect();
        self.built = true;
        self.refreshed = Some(Instant::now());
        Ok(())
    }

    async fn rebuild(&mut self, pool: &PgPool, defs: &[CqDefinition], deleted: &[String]) -> Result<(), SinkError> {
        let mut list: Vec<RollupTable> = Vec::new();
        let mut storage = Vec::new();
        let mut skipped = Vec::new();
        let mut conn = pool.acquire().await.map_err(classify_db)?;
        for def in defs {
            let source = match source_of(&def.sql) {
                Ok(s) => s,
                Err(e) => {
                    skipped.push((def.name.clone(), e.to_string()));
                    continue;
                }
            };
            let schema: SchemaRef = if source == EVENTS_TABLE {
                events_schema()
            } else if let Some(up) = list.iter().find(|t| t.name == source) {
                up.user_schema()
            } else {
                skipped.push((
                    def.name.clone(),
                    format!("its source `{source}` is not stored in PostgreSQL"),
                ));
                continue;
            };
            let table = match RollupTable::new(def, &source, &schema).await {
                Ok(t) => t,
                Err(SinkError::Config(reason)) => {
                    tracing::warn!(query = %def.name, %reason, "continuous query not stored in postgres");
                    skipped.push((def.name.clone(), reason));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let kind = table.create(&mut conn).await?;
            table.create_parts(&mut conn).await?;
            if let Err(reason) = table.check_columns(&mut conn).await? {
                tracing::warn!(query = %def.name, %reason, "continuous query not stored in postgres");
                skipped.push((def.name.clone(), reason));
                continue;
            }
            let options = serde_json::to_string(&def.options)
                .map_err(|e| SinkError::Internal(crate::error::ErrorDetail::of(e)))?;
            sqlx::query(
                "INSERT INTO hub_continuous_queries (name, sql, source, output_table, storage, options)
                 VALUES ($1, $2, $3, $1, $4, $5::jsonb)
                 ON CONFLICT (name) DO UPDATE SET sql = EXCLUDED.sql, source = EXCLUDED.source,
                     storage = EXCLUDED.storage, options = EXCLUDED.options, updated_at = now()",
            )
            .bind(&def.name)
            .bind(&def.sql)
            .bind(&source)
            .bind(&kind)
            .bind(options)
            .execute(&mut *conn)
            .await
            .map_err(classify_db)?;
            storage.push((def.name.clone(), kind));
            list.push(table);
        }
        if !deleted.is_empty() {
            // Queries deleted here leave the registry; their tables (and data) stay.
            sqlx::query("DELETE FROM hub_continuous_queries WHERE name = ANY($1)")
                .bind(deleted)
                .execute(&mut *conn)
                .await
                .map_err(classify_db)?;
        }
        tracing::info!(
            stored = list.len(),
            skipped = skipped.len(),
            "postgres rollup tables ready"
        );
        self.list = list;
        self.storage = storage;
        self.skipped = skipped;
        Ok(())
    }

    /// Tables and skipped queries, for the status API.
    pub fn status(&self) -> serde_json::Value {
        json!({
            "migrated": self.migrated,
            "stored": self.storage.iter().map(|(n, k)| json!({"query": n, "storage": k})).collect::<Vec<_>>(),
            "skipped": self.skipped.iter().map(|(n, r)| json!({"query": n, "reason": r})).collect::<Vec<_>>(),
        })
    }
}
