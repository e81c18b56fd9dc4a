//! The catalog of shared files (`hub_files`, migration `0003`): which Parquet files are in
//! shared storage, from which data directory, with their row counts and event-time bounds. A
//! file is visible to other instances once its row is committed (after its upload completed).

use std::collections::HashSet;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::ClusterError;
use crate::sinks::postgres::{PostgresConfig, classify_db, migrate};

/// One shared file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogFile {
    /// Object key below `cluster.remote`.
    pub path: String,
    /// Data directory it came from.
    pub store_id: String,
    /// Rows.
    pub rows: i64,
    /// Size in bytes.
    pub bytes: i64,
    /// Event-time bounds (µs), when the file has statistics.
    pub min_event_time_us: Option<i64>,
    /// See `min_event_time_us`.
    pub max_event_time_us: Option<i64>,
}

type Row = (String, String, i64, i64, Option<i64>, Option<i64>);

fn db(e: sqlx::Error) -> ClusterError {
    ClusterError::Catalog(classify_db(e))
}

/// The catalog, in the database of `postgres.url`.
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: PgPool,
}

impl Catalog {
    /// Connects (creating the database and applying the migrations as `config` says).
    pub async fn connect(config: &PostgresConfig) -> Result<Self, ClusterError> {
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| ClusterError::Config("the catalog needs postgres.url (DATABASE_URL)".into()))?;
        if config.create_database {
            migrate::create_database(url).await.map_err(ClusterError::Catalog)?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_millis(config.acquire_timeout_ms.max(1)))
            .connect(url)
            .await
            .map_err(db)?;
        if config.migrate_on_start {
            migrate::run(&pool).await.map_err(ClusterError::Catalog)?;
        }
        Ok(Self { pool })
    }

    /// Paths `store_id` has recorded for `table`.
    pub async fn recorded_by(&self, table: &str, store_id: &str) -> Result<HashSet<String>, ClusterError> {
        let paths: Vec<String> =
            sqlx::query_scalar("SELECT path FROM hub_files WHERE table_name = $1 AND store_id = $2")
                .bind(table)
                .bind(store_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(paths.into_iter().collect())
    }

    /// Records an uploaded file (again is a no-op).
    pub async fn record(&self, table: &str, instance_id: &str, file: &CatalogFile) -> Result<(), ClusterError> {
        sqlx::query(
            "INSERT INTO hub_files (path, table_name, store_id, instance_id, rows, bytes, min_event_time_us, max_event_time_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (path) DO NOTHING",
        )
        .bind(&file.path)
        .bind(table)
        .bind(&file.store_id)
        .bind(instance_id)
        .bind(file.rows)
        .bind(file.bytes)
        .bind(file.min_event_time_us)
        .bind(file.max_event_time_us)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// How many files of `table` other data directories have recorded: rows are only added, so
    /// an unchanged count means an unchanged set (the cheap check before [`Self::others`]).
    pub async fn count_others(&self, table: &str, store_id: &str) -> Result<i64, ClusterError> {
        sqlx::query_scalar("SELECT count(*) FROM hub_files WHERE table_name = $1 AND store_id <> $2")
            .bind(table)
            .bind(store_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    /// Every file of `table` recorded by other data directories, oldest first.
    pub async fn others(&self, table: &str, store_id: &str) -> Result<Vec<CatalogFile>, ClusterError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT path, store_id, rows, bytes, min_event_time_us, max_event_time_us FROM hub_files \
             WHERE table_name = $1 AND store_id <> $2 ORDER BY added_at, path",
        )
        .bind(table)
        .bind(store_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(
                |(path, store_id, rows, bytes, min_event_time_us, max_event_time_us)| CatalogFile {
                    path,
                    store_id,
                    rows,
                    bytes,
                    min_event_time_us,
                    max_event_time_us,
                },
            )
            .collect())
    }
}
