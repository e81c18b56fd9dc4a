//! What a statement's cache entry is keyed on, and how long it lives.
//!
//! The key is a SHA-256 of: the Hub's version, the caller's scope (role/tenant once
//! authentication lands), the endpoint's variant (row limit, parameters), the statement as the
//! parser prints it back (whitespace, keyword case and comments do not matter) and the
//! [`DataVersion`](crate::storage::DataVersion) of every table it reads. New events or
//! rollup rows change a version, so the next identical query is a miss: correctness never
//! depends on the TTL.

use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::execution::SessionState;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Statement, visit_expressions};
use sha2::{Digest, Sha256};

use super::config::CacheConfig;
use crate::storage::versions::TableVersions;

/// TTL class of an entry (the seed's `cache_type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlClass {
    /// Reads only continuous-query outputs (rollups).
    Metrics,
    /// Reads `events` or `late_events`.
    Events,
    /// Calls `forecast`.
    Predictions,
}

impl TtlClass {
    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Events => "events",
            Self::Predictions => "predictions",
        }
    }
}

/// A cacheable request: where its answer lives and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Full key, prefix included.
    pub key: String,
    /// Entry lifetime.
    pub ttl: Duration,
    /// TTL class.
    pub class: TtlClass,
}

/// Why a request is answered without the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncacheable {
    /// Not a query (EXPLAIN, SHOW, ...).
    NotAQuery,
    /// Calls a volatile function (`random()`, `uuid()`): two runs differ by design.
    Volatile,
    /// Reads no table of the Hub (`SELECT 1`), a catalog table or an unknown table.
    NoHubTable,
}

/// Who asks: part of every key, so one caller's answer is never served to another whose rows
/// differ (tenants) — `anonymous` until the API has credentials.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Role name, if any.
    pub role: Option<String>,
    /// Tenant, if any.
    pub tenant: Option<String>,
}

const VOLATILE: [&str; 4] = ["random", "uuid", "gen_random_uuid", "random_normal"];
const CLOCK: [&str; 7] = [
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "today",
];
const CATALOG_SCHEMAS: [&str; 2] = ["information_schema", "pg_catalog"];
const RAW_TABLES: [&str; 2] = [crate::event::EVENTS_TABLE, crate::stream::late::LATE_EVENTS_TABLE];

/// What a statement reads and calls.
struct Reads {
    functions: Vec<String>,
}

fn functions_of(statement: &Statement) -> Reads {
    let mut functions = Vec::new();
    let _ = visit_expressions(statement, |expr| {
        if let Expr::Function(f) = expr
            && let Some(last) = f.name.0.last()
        {
            functions.push(last.to_string().trim_matches('"').to_ascii_lowercase());
        }
        ControlFlow::<()>::Continue(())
    });
    Reads { functions }
}

/// Builds keys with one configuration and one table registry.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    prefix: String,
    ttls: [Duration; 3],
    clock_ttl: Duration,
    versions: TableVersions,
}

impl KeyBuilder {
    /// Keys under `config.key_prefix`, versions from `versions`.
    pub fn new(config: &CacheConfig, versions: TableVersions) -> Self {
        Self {
            prefix: config.key_prefix.clone(),
            ttls: [
                Duration::from_secs(config.metrics_ttl_secs),
                Duration::from_secs(config.events_ttl_secs),
                Duration::from_secs(config.predictions_ttl_secs),
            ],
            clock_ttl: Duration::from_secs(config.relative_time_ttl_secs),
            versions,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn ttl(&self, class: TtlClass) -> Duration {
        match class {
            TtlClass::Metrics => self.ttls[0],
            TtlClass::Events => self.ttls[1],
            TtlClass::Predictions => self.ttls[2],
        }
    }

    /// The key of `statement` run by `scope`, with `variant` naming whatever else shapes the
    /// answer (row limit, bound parameters). `state` resolves table names as the query will.
    pub fn for_statement(
        &self,
        statement: &Statement,
        state: &SessionState,
        scope: &Scope,
        variant: &str,
    ) -> Result<CacheKey, Uncacheable> {
        if !matches!(statement, Statement::Query(_)) {
            return Err(Uncacheable::NotAQuery);
        }
        let reads = functions_of(statement);
        if reads.functions.iter().any(|f| VOLATILE.contains(&f.as_str())) {
            return Err(Uncacheable::Volatile);
        }
        let refs = state
            .resolve_table_references(&DfStatement::Statement(Box::new(statement.clone())))
            .map_err(|_| Uncacheable::NoHubTable)?;
        let mut tables = Vec::with_capacity(refs.len());
        for r in refs {
            if r.schema().is_some_and(|s| CATALOG_SCHEMAS.contains(&s)) {
                return Err(Uncacheable::NoHubTable);
            }
            if r.schema().is_some_and(|s| s != "public") {
                return Err(Uncacheable::NoHubTable);
            }
            let name = r.table().to_string();
            let version = self.versions.version(&name).ok_or(Uncacheable::NoHubTable)?;
            tables.push((name, version));
        }
        if tables.is_empty() {
            return Err(Uncacheable::NoHubTable);
        }
        let class = if reads.functions.iter().any(|f| f.starts_with("forecast")) {
            TtlClass::Predictions
        } else if tables.iter().any(|(t, _)| RAW_TABLES.contains(&t.as_str())) {
            TtlClass::Events
        } else {
            TtlClass::Metrics
        };
        let mut ttl = self.ttl(class);
        if reads.functions.iter().any(|f| CLOCK.contains(&f.as_str())) {
            ttl = ttl.min(self.clock_ttl);
        }
        tracing::debug!(?tables, %variant, "cache key");
        Ok(self.key(&statement.to_string(), &mut tables, scope, variant, class, ttl))
    }

    /// The key of a REST read route: `route` and its canonical parameters over `tables`.
    pub fn for_route(&self, route: &str, params: &str, tables: &[&str], scope: &Scope) -> Option<CacheKey> {
        let mut versioned = Vec::with_capacity(tables.len());
        for t in tables {
            versioned.push(((*t).to_string(), self.versions.version(t)?));
        }
        let class = if tables.iter().any(|t| RAW_TABLES.contains(t)) {
            TtlClass::Events
        } else {
            TtlClass::Metrics
        };
        Some(self.key(route, &mut versioned, scope, params, class, self.ttl(class)))
    }

    fn key(
        &self,
        text: &str,
        tables: &mut [(String, crate::storage::DataVersion)],
        scope: &Scope,
        variant: &str,
        class: TtlClass,
        ttl: Duration,
    ) -> CacheKey {
        tables.sort();
        let mut h = Sha256::new();
        for part in [
            env!("CARGO_PKG_VERSION"),
            scope.role.as_deref().unwrap_or("-"),
            scope.tenant.as_deref().unwrap_or("-"),
            variant,
            text,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for (name, version) in tables.iter() {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(version.epoch.to_le_bytes());
            h.update(version.appends.to_le_bytes());
        }
        let digest = h.finalize();
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push_str(&format!("{b:02x}"));
        }
        CacheKey {
            key: format!("{}q:{hex}", self.prefix),
            ttl,
            class,
        }
    }
}

/// Parses one statement the way the SQL endpoint does (DataFusion's parser, the session's
/// dialect), for keying. `None` when it is not exactly one plain SQL statement.
pub fn parse_one(sql: &str, state: &SessionState) -> Option<Statement> {
    match state
        .sql_to_statement(sql, &state.config().options().sql_parser.dialect)
        .ok()?
    {
        DfStatement::Statement(s) => Some(*s),
        _ => None,
    }
}
