//! LLM Analytics Hub: LLM telemetry events in, SQL analytics out, on Apache DataFusion.
//!
//! Layers, each behind a small trait so cluster-mode implementations can replace the
//! standalone ones: [`ingest`] (where validated events go), [`storage`] (durable events and
//! the `events` table), [`cache`] (query results). [`event`] decodes JSON into Arrow,
//! [`query`] runs read-only SQL, [`http`] serves the API, [`pgwire`] serves the same tables
//! over the PostgreSQL wire protocol, [`app`] wires it all.

pub mod app;
pub mod auth;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod exports;
pub mod generate;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod pgwire;
pub mod query;
pub mod redact;
pub mod resilience;
pub mod sinks;
pub mod sources;
pub mod storage;
pub mod stream;
pub mod tls;
