-- Distributed execution (issue #22): each member's datafusion-distributed worker (gRPC), as the
-- coordinators reach it (cluster.worker_advertise_url); NULL = a member that runs no worker.
ALTER TABLE hub_cluster_members ADD COLUMN IF NOT EXISTS worker_url text;
