-- Exactly-once into the events table (Kafka source with this sink): every Kafka batch is made
-- durable in its instance's WAL first, held out of queries, and claimed here in the same
-- transaction that advances its offsets (hub_kafka_offsets). After a crash the instance keeps
-- only the WAL batches claimed here; the others' records are consumed again from the stored
-- offsets, by whichever instance owns their partitions by then.
CREATE TABLE IF NOT EXISTS hub_event_claims (
    -- The data directory (`<data_dir>/cluster/store-id`).
    store_id   text NOT NULL,
    -- The batch's tag in that directory's WAL (a random 64-bit number).
    tag        bigint NOT NULL,
    -- The WAL segment holding it: claims of flushed segments are deleted.
    wal_seq    bigint NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, tag)
);
CREATE INDEX IF NOT EXISTS hub_event_claims_by_seq ON hub_event_claims (store_id, wal_seq);
