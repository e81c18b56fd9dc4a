//! Kafka offsets and dead letters inside the sink's transaction.

use sqlx::{PgConnection, PgPool, Row};

use super::classify_db;
use crate::sinks::{DeadLetter, SinkError, SourcePosition};

/// Stored next offsets of `partitions` (None = no row).
pub async fn load(pool: &PgPool, group: &str, partitions: &[(String, i32)]) -> Result<Vec<Option<i64>>, SinkError> {
    let topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
    let parts: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
    let rows = sqlx::query(
        "SELECT o.topic, o.partition, o.next_offset FROM hub_kafka_offsets o
         JOIN unnest($2::text[], $3::int[]) AS k(topic, partition)
           ON o.topic = k.topic AND o.partition = k.partition
         WHERE o.consumer_group = $1",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .fetch_all(pool)
    .await
    .map_err(classify_db)?;
    let mut out = vec![None; partitions.len()];
    for row in rows {
        let topic: String = row.try_get(0).map_err(classify_db)?;
        let partition: i32 = row.try_get(1).map_err(classify_db)?;
        let next: i64 = row.try_get(2).map_err(classify_db)?;
        if let Some(i) = partitions.iter().position(|(t, p)| *t == topic && *p == partition) {
            out[i] = Some(next);
        }
    }
    Ok(out)
}

/// Compare-and-set of one partition's next offset: succeeds only when the stored value is still
/// `expected` (None = no row yet), so an instance that lost the partition cannot overwrite
/// what the new owner wrote, and only when the batch starts at or after it, so records counted
/// once are never counted again (a batch queued before a rebalance and written after this
/// instance re-read the offsets would otherwise pass the compare-and-set).
pub async fn advance(
    conn: &mut PgConnection,
    group: &str,
    pos: &SourcePosition,
    expected: Option<i64>,
    instance: &str,
) -> Result<(), SinkError> {
    if let Some(stored) = expected
        && pos.first < stored
    {
        return Err(SinkError::Fenced(format!(
            "{}/{}: the batch starts at offset {}, before the stored offset {stored} (already counted)",
            pos.topic, pos.partition, pos.first
        )));
    }
    let updated = match expected {
        Some(expected) => sqlx::query(
            "UPDATE hub_kafka_offsets SET next_offset = $4, updated_by = $5, updated_at = now()
             WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $6",
        )
        .bind(group)
        .bind(&pos.topic)
        .bind(pos.partition)
        .bind(pos.next)
        .bind(instance)
        .bind(expected)
        .execute(&mut *conn)
        .await
        .map_err(classify_db)?,
        None => sqlx::query(
            "INSERT INTO hub_kafka_offsets (consumer_group, topic, partition, next_offset, updated_by)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(group)
        .bind(&pos.topic)
        .bind(pos.partition)
        .bind(pos.next)
        .bind(instance)
        .execute(&mut *conn)
        .await
        .map_err(classify_db)?,
    };
    if updated.rows_affected() != 1 {
        return Err(SinkError::Fenced(format!(
            "{}/{}: the stored offset is no longer {expected:?}",
            pos.topic, pos.partition
        )));
    }
    Ok(())
}

/// Records dead letters (once per source record).
pub async fn dead_letters(conn: &mut PgConnection, letters: &[DeadLetter]) -> Result<(), SinkError> {
    if letters.is_empty() {
        return Ok(());
    }
    let topics: Vec<Option<String>> = letters.iter().map(|l| l.topic.clone()).collect();
    let partitions: Vec<Option<i32>> = letters.iter().map(|l| l.partition).collect();
    let offsets: Vec<Option<i64>> = letters.iter().map(|l| l.offset).collect();
    let types: Vec<String> = letters.iter().map(|l| l.error_type.clone()).collect();
    let reasons: Vec<String> = letters.iter().map(|l| l.reason.clone()).collect();
    let payloads: Vec<Vec<u8>> = letters.iter().map(|l| l.payload.clone()).collect();
    sqlx::query(
        "INSERT INTO hub_dead_letters (topic, partition, \"offset\", error_type, reason, payload)
         SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::bytea[])
         ON CONFLICT (topic, partition, \"offset\") WHERE topic IS NOT NULL DO NOTHING",
    )
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&types)
    .bind(&reasons)
    .bind(&payloads)
    .execute(&mut *conn)
    .await
    .map_err(classify_db)?;
    Ok(())
}
