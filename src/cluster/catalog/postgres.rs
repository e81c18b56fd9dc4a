//! The catalog of shared files in PostgreSQL (`hub_files`, migration `0003`): which Parquet files are in
//! shared storage, from which data directory, with their row counts and event-time bounds. A
//! file is visible to other instances once its row is committed (after its upload completed);
//! every change of the visible set bumps `hub_catalog.generation` in the same transaction, so a
//! reader reloads the list only when the generation moved.

use std::collections::HashSet;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::CatalogFile;
use crate::cluster::ClusterError;
use crate::cluster::tail::Member;
use crate::sinks::postgres::{PostgresConfig, classify_db, migrate};

type Row = (String, String, i64, i64, Option<i64>, Option<i64>, Option<Vec<String>>);

const COLUMNS: &str = "path, store_id, rows, bytes, min_event_time_us, max_event_time_us, covers";

fn file_of(row: Row) -> CatalogFile {
    let (path, store_id, rows, bytes, min_event_time_us, max_event_time_us, covers) = row;
    CatalogFile {
        path,
        store_id,
        rows,
        bytes,
        min_event_time_us,
        max_event_time_us,
        covers: covers.unwrap_or_default(),
    }
}

const BUMP: &str = "UPDATE hub_catalog SET generation = generation + 1 WHERE id = 1";

fn db(e: sqlx::Error) -> ClusterError {
    ClusterError::Catalog(classify_db(e))
}

/// The catalog, in the database of `postgres.url`.
#[derive(Debug, Clone)]
pub struct PgCatalog {
    pool: PgPool,
}

impl PgCatalog {
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
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_millis(config.acquire_timeout_ms.max(1)))
            .connect(url)
            .await
            .map_err(db)?;
        if config.migrate_on_start {
            migrate::run(&pool).await.map_err(ClusterError::Catalog)?;
        }
        Ok(Self { pool })
    }

    /// Flushed segments (file names) of `store_id` in the catalog, directly or inside a
    /// compacted file: what its shipper must not ship again.
    pub async fn shipped_segments(&self, table: &str, store_id: &str) -> Result<HashSet<String>, ClusterError> {
        let files = self.visible(table, "store_id = $2", store_id).await?;
        Ok(files.iter().flat_map(CatalogFile::segments).collect())
    }

    async fn visible(&self, table: &str, filter: &str, store_id: &str) -> Result<Vec<CatalogFile>, ClusterError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM hub_files WHERE table_name = $1 AND removed_at IS NULL AND {filter} \
             ORDER BY min_event_time_us NULLS FIRST, path"
        );
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(table)
            .bind(store_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(file_of).collect())
    }

    /// Records an uploaded segment (again is a no-op).
    pub async fn record(&self, table: &str, instance_id: &str, file: &CatalogFile) -> Result<(), ClusterError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let added = sqlx::query(
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
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if added.rows_affected() > 0 {
            sqlx::query(BUMP).execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// The generation of the visible file set.
    pub async fn generation(&self) -> Result<i64, ClusterError> {
        sqlx::query_scalar("SELECT generation FROM hub_catalog WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    /// Every visible file of `table`, of every data directory, oldest first.
    pub async fn all(&self, table: &str) -> Result<Vec<CatalogFile>, ClusterError> {
        self.visible(table, "$2 = ''", "").await
    }

    /// Visible files of `store_id` smaller than `small_bytes`, oldest first (compaction input).
    pub async fn small_files(
        &self,
        table: &str,
        store_id: &str,
        small_bytes: u64,
    ) -> Result<Vec<CatalogFile>, ClusterError> {
        let files = self.visible(table, "store_id = $2", store_id).await?;
        Ok(files
            .into_iter()
            .filter(|f| f.bytes >= 0 && (f.bytes as u64) < small_bytes)
            .collect())
    }

    /// Data directories with visible files of `table`.
    pub async fn stores(&self, table: &str) -> Result<Vec<String>, ClusterError> {
        sqlx::query_scalar(
            "SELECT DISTINCT store_id FROM hub_files WHERE table_name = $1 AND removed_at IS NULL ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Replaces `inputs` by the uploaded `merged` in one transaction; `Ok(false)` (nothing
    /// changed) when one of them is no longer visible.
    pub async fn swap(
        &self,
        table: &str,
        instance_id: &str,
        merged: &CatalogFile,
        inputs: &[String],
    ) -> Result<bool, ClusterError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let removed =
            sqlx::query("UPDATE hub_files SET removed_at = now() WHERE path = ANY($1) AND removed_at IS NULL")
                .bind(inputs)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        if removed.rows_affected() != inputs.len() as u64 {
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO hub_files (path, table_name, store_id, instance_id, rows, bytes, min_event_time_us, max_event_time_us, level, covers) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
        )
        .bind(&merged.path)
        .bind(table)
        .bind(&merged.store_id)
        .bind(instance_id)
        .bind(merged.rows)
        .bind(merged.bytes)
        .bind(merged.min_event_time_us)
        .bind(merged.max_event_time_us)
        .bind(&merged.covers)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(BUMP).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// Takes out of the visible set every file of `table` whose events are all older than
    /// `cutoff_us` (retention); its object is deleted after the grace, like a replaced file's.
    pub async fn expire_before(&self, table: &str, cutoff_us: i64) -> Result<u64, ClusterError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE hub_files SET removed_at = now()
             WHERE table_name = $1 AND removed_at IS NULL AND max_event_time_us < $2",
        )
        .bind(table)
        .bind(cutoff_us)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() > 0 {
            sqlx::query(BUMP).execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected())
    }

    /// Files replaced more than `grace` ago (their objects can go).
    pub async fn expired(&self, grace: std::time::Duration) -> Result<Vec<String>, ClusterError> {
        sqlx::query_scalar("SELECT path FROM hub_files WHERE removed_at < now() - make_interval(secs => $1)")
            .bind(grace.as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    /// Forgets a replaced file whose object is deleted.
    pub async fn forget(&self, path: &str) -> Result<(), ClusterError> {
        sqlx::query("DELETE FROM hub_files WHERE path = $1 AND removed_at IS NOT NULL")
            .bind(path)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// A session holding the cluster-wide maintenance lock, if no other instance holds it. The
    /// lock lasts as long as the returned connection.
    pub async fn try_lead(&self, key: i64) -> Result<Option<sqlx::PgConnection>, ClusterError> {
        // Detached from the pool: the session (and its lock) ends when the connection is
        // dropped, never handed to another user of the pool.
        let mut conn = self.pool.acquire().await.map_err(db)?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
        Ok(got.then_some(conn))
    }

    /// Says `member` (this instance) is alive, with its current data version.
    pub async fn heartbeat(&self, member: &Member) -> Result<(), ClusterError> {
        sqlx::query(
            "INSERT INTO hub_cluster_members (store_id, instance_id, url, epoch, appends, worker_url, worker_key, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, now()) ON CONFLICT (store_id) DO UPDATE SET \
             instance_id = EXCLUDED.instance_id, url = EXCLUDED.url, epoch = EXCLUDED.epoch, \
             appends = EXCLUDED.appends, worker_url = EXCLUDED.worker_url, worker_key = EXCLUDED.worker_key, \
             heartbeat_at = now()",
        )
        .bind(&member.store_id)
        .bind(&member.instance_id)
        .bind(&member.url)
        .bind(member.epoch)
        .bind(member.appends)
        .bind(&member.worker_url)
        .bind(&member.worker_key)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Members other than `store_id` whose last heartbeat (by the database's clock) is newer
    /// than `timeout_ms`.
    pub async fn alive(&self, store_id: &str, timeout_ms: u64) -> Result<Vec<Member>, ClusterError> {
        type Row = (String, String, String, i64, i64, Option<String>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT store_id, instance_id, url, epoch, appends, worker_url, worker_key FROM hub_cluster_members \
             WHERE store_id <> $1 AND heartbeat_at > now() - make_interval(secs => $2) ORDER BY store_id",
        )
        .bind(store_id)
        .bind(timeout_ms as f64 / 1000.0)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(
                |(store_id, instance_id, url, epoch, appends, worker_url, worker_key)| Member {
                    store_id,
                    instance_id,
                    url,
                    epoch,
                    appends,
                    worker_url,
                    worker_key,
                },
            )
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
