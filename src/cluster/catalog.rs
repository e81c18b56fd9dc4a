//! The catalog of shared files (`hub_files`, migration `0003`): which Parquet files are in
//! shared storage, from which data directory, with their row counts and event-time bounds. A
//! file is visible to other instances once its row is committed (after its upload completed).

use std::collections::HashSet;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::ClusterError;
use super::tail::Member;
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

    /// Says `member` (this instance) is alive, with its current data version.
    pub async fn heartbeat(&self, member: &Member) -> Result<(), ClusterError> {
        sqlx::query(
            "INSERT INTO hub_cluster_members (store_id, instance_id, url, epoch, appends, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (store_id) DO UPDATE SET \
             instance_id = EXCLUDED.instance_id, url = EXCLUDED.url, epoch = EXCLUDED.epoch, \
             appends = EXCLUDED.appends, heartbeat_at = now()",
        )
        .bind(&member.store_id)
        .bind(&member.instance_id)
        .bind(&member.url)
        .bind(member.epoch)
        .bind(member.appends)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Members other than `store_id` whose last heartbeat (by the database's clock) is newer
    /// than `timeout_ms`.
    pub async fn alive(&self, store_id: &str, timeout_ms: u64) -> Result<Vec<Member>, ClusterError> {
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT store_id, instance_id, url, epoch, appends FROM hub_cluster_members \
             WHERE store_id <> $1 AND heartbeat_at > now() - make_interval(secs => $2) ORDER BY store_id",
        )
        .bind(store_id)
        .bind(timeout_ms as f64 / 1000.0)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(store_id, instance_id, url, epoch, appends)| Member {
                store_id,
                instance_id,
                url,
                epoch,
                appends,
            })
            .collect())
    }

    /// This instance stops (clean shutdown): the others stop asking it at once.
    pub async fn leave(&self, store_id: &str) -> Result<(), ClusterError> {
        sqlx::query("DELETE FROM hub_cluster_members WHERE store_id = $1")
            .bind(store_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
