-- LLM Analytics Hub: registry, Kafka offsets, dead letters, and the rollup-table factory.

-- TimescaleDB when the server offers it; plain PostgreSQL (native partitioning) otherwise.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION hub_timescale() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
$$;

-- Continuous queries whose outputs are stored here.
CREATE TABLE IF NOT EXISTS hub_continuous_queries (
    name          text PRIMARY KEY,
    sql           text NOT NULL,
    source        text NOT NULL,
    output_table  text NOT NULL,
    storage       text NOT NULL,              -- 'hypertable' or 'partitioned'
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Next offset to read per (consumer group, topic, partition), written in the same transaction
-- as the rollup rows those offsets cover. The Hub seeks here on every partition assignment;
-- Kafka's own committed offsets are informational.
CREATE TABLE IF NOT EXISTS hub_kafka_offsets (
    consumer_group text    NOT NULL,
    topic          text    NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint  NOT NULL CHECK (next_offset >= 0),
    updated_by     text    NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Records that could not be decoded or failed validation, with the reason.
CREATE TABLE IF NOT EXISTS hub_dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text,
    partition   integer,
    "offset"    bigint,
    error_type  text NOT NULL,
    reason      text NOT NULL,
    payload     bytea NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS hub_dead_letters_source
    ON hub_dead_letters (topic, partition, "offset") WHERE topic IS NOT NULL;

-- Creates a continuous query's output table. `columns_ddl` lists the columns
-- ("name type, ..."), `key_columns` the upsert key (window_start first). Returns the storage
-- kind. With TimescaleDB: a hypertable on window_start (1-day chunks), compressed after
-- 7 days, rows dropped after `retention` (NULL = kept). Without: range partitions by month on
-- window_start (created by hub_ensure_partition) plus a default partition, and a BRIN index.
CREATE OR REPLACE FUNCTION hub_create_rollup_table(
    tbl text, columns_ddl text, key_columns text, retention interval
) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass(quote_ident(tbl)) IS NOT NULL THEN
        RETURN CASE WHEN hub_timescale() THEN 'hypertable' ELSE 'partitioned' END;
    END IF;
    IF hub_timescale() THEN
        EXECUTE format('CREATE TABLE %I (%s, UNIQUE NULLS NOT DISTINCT (%s))', tbl, columns_ddl, key_columns);
        EXECUTE format(
            'SELECT create_hypertable(%L::regclass, %L, chunk_time_interval => interval %L)',
            tbl, 'window_start', '1 day');
        EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_orderby = %L)',
            tbl, 'window_start DESC');
        EXECUTE format('SELECT add_compression_policy(%L::regclass, interval %L)', tbl, '7 days');
        IF retention IS NOT NULL THEN
            EXECUTE format('SELECT add_retention_policy(%L::regclass, %L::interval)', tbl, retention);
        END IF;
        RETURN 'hypertable';
    END IF;
    EXECUTE format('CREATE TABLE %I (%s, UNIQUE NULLS NOT DISTINCT (%s)) PARTITION BY RANGE (window_start)',
        tbl, columns_ddl, key_columns);
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);
    EXECUTE format('CREATE INDEX %I ON %I USING brin (window_start)', tbl || '_brin', tbl);
    RETURN 'partitioned';
END $$;

-- Makes sure the month holding `at` has its own partition (no-op with TimescaleDB).
CREATE OR REPLACE FUNCTION hub_ensure_partition(tbl text, at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    part text := tbl || '_p' || to_char(at AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF hub_timescale() OR to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
        part, tbl, month_start, month_start + interval '1 month');
END $$;

-- Drops month partitions (plain-PostgreSQL path) that ended before now() - `keep`.
CREATE OR REPLACE FUNCTION hub_drop_expired_partitions(tbl text, keep interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    IF hub_timescale() THEN
        RETURN 0;
    END IF;
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(quote_ident(tbl))
          AND c.relname ~ ('^' || tbl || '_p[0-9]{6}$')
          AND to_timestamp(right(c.relname, 6), 'YYYYMM') + interval '1 month' < now() - keep
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;
