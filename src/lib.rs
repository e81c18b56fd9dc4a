//! LLM Analytics Hub: LLM telemetry events in, SQL analytics out, on Apache DataFusion.
//!
//! Layers, each behind a small trait so cluster-mode implementations can replace the
//! standalone ones: [`ingest`] (where validated events go), [`storage`] (durable events and
//! the `events` table), [`cache`] (query results). [`event`] decodes JSON into Arrow,
//! [`query`] runs read-only SQL, [`http`] serves the API, [`pgwire`] serves the same tables
//! over the PostgreSQL wire protocol, [`app`] wires it all.

pub mod alerts;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod event;
pub mod exports;
pub mod generate;
pub mod http;
pub mod ingest;
pub mod live;
pub mod metrics;
#[cfg(feature = "pgwire")]
pub mod pgwire;
/// Without the `pgwire` feature only the `[pgwire]` section is built (off by default), so a
/// configuration file keeps parsing; [`config::Config::validate`] refuses `enabled = true`.
#[cfg(not(feature = "pgwire"))]
pub mod pgwire {
    #[path = "config.rs"]
    pub mod config;
}
pub mod query;
pub mod redact;
pub mod resilience;
pub mod sinks;
pub mod sources;
pub mod storage;
pub mod stream;
pub mod tls;
