//! The PostgreSQL wire-protocol endpoint: psql, Grafana's PostgreSQL datasource, BI tools and
//! any Postgres driver query the Hub's tables live, with the same read-only rules as
//! `POST /api/v1/sql`.
//!
//! Built on datafusion-postgres (pgwire handlers, `pg_catalog`, Arrow → Postgres encoding);
//! this module adds the Hub's authentication ([`auth`]), read-only gate ([`hooks`]), the
//! Postgres-flavoured session with `information_schema` ([`catalog`], [`functions`]) and the
//! listener with TLS and cancel requests ([`server`]).

pub mod auth;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod functions;
pub mod hooks;
pub mod server;
pub mod service;
pub mod text;

pub use server::WireServer;

/// Errors that stop the wire endpoint from starting.
#[derive(Debug, thiserror::Error)]
pub enum PgwireError {
    /// The address could not be bound.
    #[error("pgwire listener on {addr}: {source}")]
    Bind {
        /// Listen address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("pgwire TLS: {0}")]
    Tls(String),
    /// The Postgres-flavoured session could not be built.
    #[error("pgwire session: {0}")]
    Session(datafusion::error::DataFusionError),
    /// The `[pgwire]` section is unusable.
    #[error("pgwire: {0}")]
    Config(String),
}
