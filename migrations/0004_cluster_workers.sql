-- Distributed execution (issue #22): each member's datafusion-distributed worker (gRPC), as the
-- coordinators reach it (cluster.worker_advertise_url); NULL = a member that runs no worker.
ALTER TABLE hub_cluster_members ADD COLUMN IF NOT EXISTS worker_url text;
-- A digest of the cluster secret and the Hub's version: tasks go only to workers with the same
-- one (a plan is only understood by the same build; a worker refuses another secret).
ALTER TABLE hub_cluster_members ADD COLUMN IF NOT EXISTS worker_key text;
