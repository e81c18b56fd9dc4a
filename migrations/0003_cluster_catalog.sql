-- Cluster mode (issue #22): the catalog of the Parquet files every instance has put in shared
-- object storage (`cluster.remote`), so each instance lists the same set without scanning the
-- bucket, and the members: each instance's heartbeat, so the others can ask it for its recent
-- events.
CREATE TABLE IF NOT EXISTS hub_files (
    -- Object key below `cluster.remote`.
    path              text PRIMARY KEY,
    -- `events` for now.
    table_name        text NOT NULL,
    -- The data directory the file came from (`<data_dir>/cluster/store-id`): an instance skips
    -- its own files (it reads them locally) even after a restart under another name.
    store_id          text NOT NULL,
    -- The instance that wrote it (postgres.instance_id), for operators.
    instance_id       text NOT NULL,
    rows              bigint NOT NULL,
    bytes             bigint NOT NULL,
    -- Event-time bounds of the file (microseconds since the epoch, UTC), for pruning.
    min_event_time_us bigint,
    max_event_time_us bigint,
    -- 0: a flushed segment as its instance wrote it; 1: written by compaction.
    level             smallint NOT NULL DEFAULT 0,
    -- For a compacted file: the names of the flushed segments whose rows it holds.
    covers            text[],
    added_at          timestamptz NOT NULL DEFAULT now(),
    -- Set when compaction replaced the file; the object and the row are deleted after a grace
    -- longer than any query.
    removed_at        timestamptz
);
CREATE INDEX IF NOT EXISTS hub_files_by_store ON hub_files (table_name, store_id) WHERE removed_at IS NULL;

-- Bumped by every change of the visible file set, so readers reload only when it moved.
CREATE TABLE IF NOT EXISTS hub_catalog (
    id         integer PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO hub_catalog (id, generation) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

-- One row per running instance (by data directory), upserted every second; rows older than
-- cluster.member_timeout_ms are ignored, a clean shutdown deletes its own.
CREATE TABLE IF NOT EXISTS hub_cluster_members (
    store_id     text PRIMARY KEY,
    instance_id  text NOT NULL,
    -- Its HTTP API as the others reach it (cluster.advertise_url).
    url          text NOT NULL,
    -- Its events store's data version (result caches key on it).
    epoch        bigint NOT NULL,
    appends      bigint NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
