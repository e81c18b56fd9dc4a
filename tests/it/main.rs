//! Integration tests: the real `analytics-hub` binary on real loopback ports.

mod api;
mod durability;
mod harness;
mod ingest;
mod sql;
mod stream;
