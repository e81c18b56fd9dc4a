//! Claims of events-store batches (`hub_event_claims`), written in the sink's transaction.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};

use super::classify_db;
use crate::sinks::{EventClaim, SinkError};

/// The tag as stored: the same 64 bits, as PostgreSQL's signed `bigint`.
fn stored(tag: u64) -> i64 {
    i64::from_ne_bytes(tag.to_ne_bytes())
}

/// Records `claim` inside the caller's transaction.
pub async fn insert(conn: &mut PgConnection, claim: &EventClaim) -> Result<(), SinkError> {
    sqlx::query("INSERT INTO hub_event_claims (store_id, tag, wal_seq) VALUES ($1, $2, $3)")
        .bind(&claim.store_id)
        .bind(stored(claim.tag))
        .bind(i64::try_from(claim.wal_seq).unwrap_or(i64::MAX))
        .execute(conn)
        .await
        .map_err(classify_db)?;
    Ok(())
}

/// Every claimed tag of `store_id`.
pub async fn load(pool: &PgPool, store_id: &str) -> Result<HashSet<u64>, SinkError> {
    let tags: Vec<i64> = sqlx::query_scalar("SELECT tag FROM hub_event_claims WHERE store_id = $1")
        .bind(store_id)
        .fetch_all(pool)
        .await
        .map_err(classify_db)?;
    Ok(tags.into_iter().map(|t| u64::from_ne_bytes(t.to_ne_bytes())).collect())
}

/// Whether `claim` was committed.
pub async fn exists(pool: &PgPool, claim: &EventClaim) -> Result<bool, SinkError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM hub_event_claims WHERE store_id = $1 AND tag = $2)")
        .bind(&claim.store_id)
        .bind(stored(claim.tag))
        .fetch_one(pool)
        .await
        .map_err(classify_db)
}

/// Deletes `store_id`'s claims of segments before `oldest_seq`.
pub async fn forget(pool: &PgPool, store_id: &str, oldest_seq: u64) -> Result<u64, SinkError> {
    let done = sqlx::query("DELETE FROM hub_event_claims WHERE store_id = $1 AND wal_seq < $2")
        .bind(store_id)
        .bind(i64::try_from(oldest_seq).unwrap_or(i64::MAX))
        .execute(pool)
        .await
        .map_err(classify_db)?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_survives_the_signed_column() {
        for tag in [0, 1, u64::MAX, 1 << 63, 0x8000_0000_0000_0001] {
            assert_eq!(u64::from_ne_bytes(stored(tag).to_ne_bytes()), tag);
        }
    }
}
