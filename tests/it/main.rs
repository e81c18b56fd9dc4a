//! Integration tests: the real `analytics-hub` binary on real loopback ports.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod alerts;
mod analytics_api;
mod api;
mod auth;
mod cache;
mod cluster;
mod cq;
mod deploy;
mod disk_faults;
mod docs;
mod durability;
mod exports;
mod harness;
mod hostile;
mod ingest;
mod kafka;
mod live;
mod openapi;
mod pg;
mod pg_fencing;
mod pg_sink;
mod pgwire;
mod pgwire_clients;
mod pgwire_grafana;
mod proxy;
mod sql;
mod stream;
mod stream_modes;
mod ui;
