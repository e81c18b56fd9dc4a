-- The options of each stored continuous query (allowed lateness, emission mode, ...). Rollup
-- tables are written from every instance's own run of the query, so an instance that learns a
-- query from this registry (another instance registered it) must run it with the same options.
ALTER TABLE hub_continuous_queries ADD COLUMN IF NOT EXISTS options jsonb;

-- Each instance's part of every rollup (`hub_parts.<query>`, created with the query's table):
-- the states of the windows its engine emitted, merged into the query's table.
CREATE SCHEMA IF NOT EXISTS hub_parts;
