//! The `[query]` section: how ad-hoc SQL (HTTP and the Postgres wire endpoint) is bounded.

use serde::{Deserialize, Serialize};

use super::complexity::ComplexityLimits;

/// The `[query]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Seconds a query may run before it is cancelled with 408 (env `QUERY_TIMEOUT_SECS`).
    pub timeout_secs: u64,
    /// Most rows returned in a JSON response; more are cut and `truncated` is set.
    pub max_json_rows: usize,
    /// DataFusion target partitions; `0` means one per CPU core.
    pub target_partitions: usize,
    /// Memory one query may reserve for sorts, aggregations and joins (env
    /// `QUERY_MEMORY_LIMIT`); beyond it DataFusion spills to disk where it can, else the query
    /// fails with 422 `resources_exhausted`.
    pub memory_limit_bytes: usize,
    /// Memory all ad-hoc queries together may reserve (HTTP and wire).
    pub total_memory_bytes: usize,
    /// Queries running at once on `POST /api/v1/sql` (env `QUERY_MAX_CONCURRENT`); more wait.
    pub max_concurrent: usize,
    /// How long a query waits for a slot before 429 `too_many_queries`.
    pub queue_timeout_ms: u64,
    /// Largest encoded result (JSON, CSV or Arrow) of `POST /api/v1/sql`; larger ones get 422
    /// `result_too_large` before the first byte is sent.
    pub max_result_bytes: usize,
    /// Most operators in one statement.
    pub max_expr_terms: usize,
    /// Most `UNION`/`INTERSECT`/`EXCEPT` in one statement.
    pub max_set_operations: usize,
    /// Most tokens in one statement.
    pub max_sql_tokens: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let shape = ComplexityLimits::default();
        Self {
            timeout_secs: 30,
            max_json_rows: 100_000,
            target_partitions: 0,
            memory_limit_bytes: 512 << 20,
            total_memory_bytes: 2 << 30,
            max_concurrent: 8,
            queue_timeout_ms: 5_000,
            max_result_bytes: 256 << 20,
            max_expr_terms: shape.max_expr_terms,
            max_set_operations: shape.max_set_operations,
            max_sql_tokens: shape.max_sql_tokens,
        }
    }
}

impl QueryConfig {
    /// The statement-shape limits.
    pub fn complexity(&self) -> ComplexityLimits {
        ComplexityLimits {
            max_expr_terms: self.max_expr_terms,
            max_set_operations: self.max_set_operations,
            max_sql_tokens: self.max_sql_tokens,
        }
    }
}
