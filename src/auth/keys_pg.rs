//! API keys in PostgreSQL (`hub_api_keys`, created by `migrations/0002_api_keys.sql`), so every
//! instance of a cluster accepts and refuses the same keys. Used when `[postgres]` is
//! configured (`auth.key_store = auto`); the running service re-reads the table every second.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::AuthError;
use super::keys::{KeyRecord, KeySpec, new_key};
use super::principal::Role;

/// The `hub_api_keys` table.
#[derive(Debug, Clone)]
pub struct PgKeyStore {
    pool: PgPool,
}

type Row = (String, String, String, Option<String>, i64, Option<i64>, Option<i64>);

fn record(row: Row) -> Result<KeyRecord, AuthError> {
    let (sha256, name, role, tenant, created_us, expires_us, revoked_us) = row;
    Ok(KeyRecord {
        role: role
            .parse::<Role>()
            .map_err(|e| AuthError::KeyDatabase(sqlx::Error::Decode(e.into())))?,
        name,
        tenant,
        sha256,
        created_us,
        expires_us,
        revoked_us,
    })
}

impl PgKeyStore {
    /// A store over `url`; connections are opened when first needed (the Hub starts while the
    /// database is down and keeps its last set of keys until it is back).
    pub fn connect_lazy(url: &str) -> Result<Self, AuthError> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)
            .map_err(AuthError::KeyDatabase)?;
        Ok(Self { pool })
    }

    /// The connection pool (migrations run on it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every key record.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, AuthError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT sha256, name, role, tenant, created_us, expires_us, revoked_us FROM hub_api_keys \
             ORDER BY created_us, name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(AuthError::KeyDatabase)?;
        rows.into_iter().map(record).collect()
    }

    /// Creates a key; returns it (shown once) and its record.
    pub async fn create(&self, spec: KeySpec<'_>, now_us: i64) -> Result<(String, KeyRecord), AuthError> {
        let (key, record) = new_key(spec, now_us)?;
        match self.insert(&record, false).await {
            Ok(_) => Ok((key, record)),
            Err(AuthError::KeyDatabase(sqlx::Error::Database(d))) if d.code().as_deref() == Some("23505") => {
                Err(AuthError::InvalidRequest(format!(
                    "a key named `{}` exists; revoke it first or pick another name",
                    spec.name
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Stores `r`; with `skip_existing`, a key (hash) or active name already there is left
    /// alone. Returns the rows added.
    async fn insert(&self, r: &KeyRecord, skip_existing: bool) -> Result<u64, AuthError> {
        let sql = if skip_existing {
            "INSERT INTO hub_api_keys (sha256, name, role, tenant, created_us, expires_us, revoked_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
        } else {
            "INSERT INTO hub_api_keys (sha256, name, role, tenant, created_us, expires_us, revoked_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        };
        let done = sqlx::query(sql)
            .bind(&r.sha256)
            .bind(&r.name)
            .bind(r.role.as_str())
            .bind(&r.tenant)
            .bind(r.created_us)
            .bind(r.expires_us)
            .bind(r.revoked_us)
            .execute(&self.pool)
            .await
            .map_err(AuthError::KeyDatabase)?;
        Ok(done.rows_affected())
    }

    /// Revokes the active key named `name`.
    pub async fn revoke(&self, name: &str, now_us: i64) -> Result<KeyRecord, AuthError> {
        let row: Option<Row> = sqlx::query_as(
            "UPDATE hub_api_keys SET revoked_us = $2 WHERE name = $1 AND revoked_us IS NULL \
             RETURNING sha256, name, role, tenant, created_us, expires_us, revoked_us",
        )
        .bind(name)
        .bind(now_us)
        .fetch_optional(&self.pool)
        .await
        .map_err(AuthError::KeyDatabase)?;
        row.map(record)
            .transpose()?
            .ok_or_else(|| AuthError::InvalidRequest(format!("no active key named `{name}`")))
    }

    /// Copies `records` (from a key file) into the table, leaving keys already there alone;
    /// returns how many were added.
    pub async fn import(&self, records: &[KeyRecord]) -> Result<u64, AuthError> {
        let mut added = 0;
        for r in records {
            added += self.insert(r, true).await?;
        }
        Ok(added)
    }
}
