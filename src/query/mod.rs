//! Ad-hoc SQL over the Hub's tables, on one shared DataFusion `SessionContext`.

pub mod format;
pub mod guard;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use crate::config::QueryConfig;
use crate::error::{Classify, ErrorClass};
use crate::event::EVENTS_TABLE;
use crate::storage::EventStore;
pub use guard::GuardError;

/// Errors of ad-hoc SQL.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Refused or unparsable statement.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// DataFusion rejected the query (unknown column, type error, ...): the user's to fix.
    #[error("{0}")]
    Invalid(String),
    /// The query ran longer than the configured timeout.
    #[error("query exceeded the {0:?} timeout")]
    Timeout(Duration),
    /// Not enough memory or another resource.
    #[error("query ran out of resources: {0}")]
    Resources(String),
    /// Failure inside the engine or its storage; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for QueryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Guard(_) | Self::Invalid(_) | Self::Timeout(_) => ErrorClass::User,
            Self::Resources(_) => ErrorClass::External,
            Self::Internal(_) => ErrorClass::Internal,
        }
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        let root = e.find_root();
        match root {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_)
            | DataFusionError::ArrowError(..) => Self::Invalid(root.message().to_string()),
            DataFusionError::ResourcesExhausted(m) => Self::Resources(m.clone()),
            _ => Self::Internal(e.strip_backtrace()),
        }
    }
}

/// The result of one query.
#[derive(Debug)]
pub struct QueryResult {
    /// Output schema (also for empty results).
    pub schema: SchemaRef,
    /// Result batches, in order.
    pub batches: Vec<RecordBatch>,
    /// Rows in `batches`.
    pub row_count: usize,
    /// Whether more rows existed than `max_rows`.
    pub truncated: bool,
    /// Wall time spent planning and executing.
    pub elapsed: Duration,
}

/// Registers the functions every Hub session has: the JSON functions and the `udfs/` library
/// (ad-hoc SQL, continuous queries and their tests all plan with the same set).
pub fn register_functions(ctx: &mut SessionContext) -> Result<(), DataFusionError> {
    datafusion_functions_json::register_all(ctx)?;
    llm_analytics_udfs::register_all(ctx)
}

/// Runs read-only SQL.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    timeout: Duration,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").field("timeout", &self.timeout).finish()
    }
}

impl QueryEngine {
    /// Builds the session: the `events` table, JSON functions and the Hub's UDF library.
    pub fn new(store: &Arc<dyn EventStore>, config: &QueryConfig) -> Result<Self, DataFusionError> {
        let mut session = SessionConfig::new().with_information_schema(true);
        if config.target_partitions > 0 {
            session = session.with_target_partitions(config.target_partitions);
        }
        let mut ctx = SessionContext::new_with_config(session);
        register_functions(&mut ctx)?;
        ctx.register_table(EVENTS_TABLE, store.table_provider())?;
        Ok(Self {
            ctx,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
        })
    }

    /// The underlying session (for the DataFrame API).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Checks, plans and runs `sql`, keeping at most `max_rows` rows.
    pub async fn run(&self, sql: &str, max_rows: Option<usize>) -> Result<QueryResult, QueryError> {
        guard::check_read_only(sql)?;
        let started = Instant::now();
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let work = async {
            let df = self.ctx.sql_with_options(sql, options).await?;
            collect_limited(df, max_rows).await
        };
        let (schema, batches, row_count, truncated) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| QueryError::Timeout(self.timeout))??;
        Ok(QueryResult {
            schema,
            batches,
            row_count,
            truncated,
            elapsed: started.elapsed(),
        })
    }
}

/// Streams a DataFrame, stopping once `max_rows` rows are collected.
pub async fn collect_limited(
    df: datafusion::dataframe::DataFrame,
    max_rows: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>, usize, bool), QueryError> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if let Some(max) = max_rows
            && rows + batch.num_rows() > max
        {
            let keep = max - rows;
            if keep > 0 {
                batches.push(batch.slice(0, keep));
            }
            rows = max;
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    Ok((schema, batches, rows, truncated))
}
