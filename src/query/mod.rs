//! Ad-hoc SQL over the Hub's tables, on one shared DataFusion `SessionContext`.

pub mod complexity;
mod config;
pub mod executor;
pub mod file_scan;
pub mod format;
pub mod guard;
pub mod memory;
pub mod tenant;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::error::{Classify, ErrorClass};
use crate::event::EVENTS_TABLE;
use crate::storage::EventStore;
pub use config::QueryConfig;
pub use guard::GuardError;

/// Errors of ad-hoc SQL (`Clone`: one failed run is shared by the identical queries that
/// waited for it).
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Not enough memory or another resource. The user sees DataFusion's message; its error is
    /// kept as the source.
    #[error("query ran out of resources: {}", .0.find_root().message())]
    Resources(#[source] Arc<DataFusionError>),
    /// Every query slot stayed busy for the whole queue timeout.
    #[error("{running} queries are running (query.max_concurrent) and none finished within {waited:?}; retry later")]
    Busy {
        /// The limit.
        running: usize,
        /// How long the query waited.
        waited: Duration,
    },
    /// The result is larger than `query.max_result_bytes`.
    #[error("the result exceeds query.max_result_bytes = {0} bytes; add a LIMIT, select fewer columns or aggregate")]
    ResultTooLarge(usize),
    /// A file the plan listed was gone when it was read: compaction replaced it (after its
    /// grace period) or retention removed it while the query ran. Running it again reads the
    /// current files. The error is kept as the source.
    #[error(
        "a file this query was reading was replaced by compaction or removed by retention while it ran; run the query again"
    )]
    FilesChanged(#[source] Arc<DataFusionError>),
    /// Failure inside the engine or its storage; details are logged, not returned.
    #[error("internal error: {context}: {source}")]
    Internal {
        /// What was being done.
        context: String,
        /// The underlying error (shared: the error is `Clone`).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl Classify for QueryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Guard(_) | Self::Invalid(_) | Self::Timeout(_) | Self::ResultTooLarge(_) | Self::Resources(_) => {
                ErrorClass::User
            }
            Self::Busy { .. } | Self::FilesChanged(_) => ErrorClass::External,
            Self::Internal { .. } => ErrorClass::Internal,
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
            DataFusionError::ResourcesExhausted(_) => Self::Resources(Arc::new(e)),
            _ if file_gone(&e) => Self::FilesChanged(Arc::new(e)),
            _ => Self::internal("query engine", e),
        }
    }
}

/// Whether `e` comes from a file that was not found when it was read (an object store's
/// `NotFound`, or a local file's `ENOENT`), anywhere in its chain of causes.
fn file_gone(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(object_store::Error::NotFound { .. }) = err.downcast_ref::<object_store::Error>() {
            return true;
        }
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        {
            return true;
        }
        if let Some(DataFusionError::ObjectStore(os)) = err.downcast_ref::<DataFusionError>()
            && matches!(os.as_ref(), object_store::Error::NotFound { .. })
        {
            return true;
        }
        cause = err.source();
    }
    false
}

impl QueryError {
    /// An [`QueryError::Internal`]: `source` said after what was being done.
    fn internal(context: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal {
            context: context.to_string(),
            source: Arc::new(source),
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
    executor: executor::QueryExecutor,
    timeout: Duration,
    limits: Arc<Limits>,
}

/// What bounds each query.
#[derive(Debug)]
struct Limits {
    complexity: complexity::ComplexityLimits,
    memory_limit_bytes: usize,
    max_result_bytes: usize,
    max_concurrent: usize,
    queue_timeout: Duration,
    slots: Semaphore,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").field("timeout", &self.timeout).finish()
    }
}

impl QueryEngine {
    /// Builds the session: the `events` table, JSON functions and the Hub's UDF library, with
    /// the shared memory pool of ad-hoc queries; sorts and aggregations spill under
    /// `spill_dir`. `planner` adds to the session (cluster mode: the distributed planner).
    pub fn new(
        store: &Arc<dyn EventStore>,
        config: &QueryConfig,
        spill_dir: std::path::PathBuf,
        planner: impl FnOnce(SessionStateBuilder) -> Result<SessionStateBuilder, DataFusionError>,
    ) -> Result<Self, DataFusionError> {
        let mut session = SessionConfig::new().with_information_schema(true);
        if config.target_partitions > 0 {
            session = session.with_target_partitions(config.target_partitions);
        }
        let runtime = memory::shared_runtime(config.total_memory_bytes, spill_dir)?;
        let base = SessionContext::new_with_config_rt(session, runtime).state();
        let mut rules = base.physical_optimizers().to_vec();
        rules.push(Arc::new(executor::Cooperate));
        let state = planner(SessionStateBuilder::new_from_existing(base).with_physical_optimizer_rules(rules))?.build();
        let mut ctx = SessionContext::new_with_state(state);
        let executor = executor::QueryExecutor::new(config.target_partitions)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        register_functions(&mut ctx)?;
        ctx.register_table(EVENTS_TABLE, store.table_provider())?;
        let max_concurrent = config.max_concurrent.max(1);
        Ok(Self {
            ctx,
            executor,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            limits: Arc::new(Limits {
                complexity: config.complexity(),
                memory_limit_bytes: config.memory_limit_bytes,
                max_result_bytes: config.max_result_bytes,
                max_concurrent,
                queue_timeout: Duration::from_millis(config.queue_timeout_ms),
                slots: Semaphore::new(max_concurrent),
            }),
        })
    }

    /// The underlying session (for the DataFrame API).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Largest encoded result.
    pub fn max_result_bytes(&self) -> usize {
        self.limits.max_result_bytes
    }

    /// The statement-shape limits (shared with the wire endpoint and CQ registration).
    pub fn complexity(&self) -> complexity::ComplexityLimits {
        self.limits.complexity
    }

    /// The checks every statement passes before anything else parses it: the shape limits
    /// first (parsing a too-deep expression is what would overflow the stack), then the
    /// read-only rules.
    pub fn check(&self, sql: &str) -> Result<(), QueryError> {
        complexity::check(sql, &self.limits.complexity)?;
        guard::check_read_only(sql)?;
        Ok(())
    }

    /// The session as `tenant` sees it: only its rows of the tables with a `tenant` column,
    /// and no other table (see [`tenant`]); the whole session without one.
    pub fn context_for(&self, tenant: Option<&str>) -> SessionContext {
        match tenant {
            None => self.ctx.clone(),
            Some(t) => SessionContext::new_with_state(self.state_for(Some(t))),
        }
    }

    fn state_for(&self, tenant: Option<&str>) -> datafusion::execution::SessionState {
        let state = self.ctx.state();
        match tenant {
            None => state,
            Some(t) => {
                let (catalog, schema) = {
                    let options = state.config().options();
                    (
                        options.catalog.default_catalog.clone(),
                        options.catalog.default_schema.clone(),
                    )
                };
                let list = Arc::new(tenant::TenantCatalogList::new(
                    Arc::clone(state.catalog_list()),
                    &catalog,
                    &schema,
                    t,
                ));
                SessionStateBuilder::new_from_existing(state)
                    .with_catalog_list(list)
                    .with_analyzer_rule(Arc::new(tenant::RefuseAnalyze))
                    .build()
            }
        }
    }

    /// Checks, plans and runs `sql`, keeping at most `max_rows` rows; with a `tenant`, over that
    /// tenant's rows only.
    pub async fn run(
        &self,
        sql: &str,
        max_rows: Option<usize>,
        tenant: Option<&str>,
    ) -> Result<QueryResult, QueryError> {
        self.check(sql)?;
        let started = Instant::now();
        let _slot = tokio::time::timeout(self.limits.queue_timeout, self.limits.slots.acquire())
            .await
            .map_err(|_| QueryError::Busy {
                running: self.limits.max_concurrent,
                waited: self.limits.queue_timeout,
            })?
            .map_err(|e| QueryError::internal("the query slots are closed", e))?;
        let runtime = memory::per_query_runtime(&self.ctx.runtime_env(), self.limits.memory_limit_bytes);
        let state = SessionStateBuilder::new_from_existing(self.state_for(tenant))
            .with_runtime_env(runtime)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let max_bytes = self.limits.max_result_bytes;
        let sql_owned = sql.to_string();
        let mut task = self.executor.spawn(async move {
            let df = ctx.sql_with_options(&sql_owned, options).await?;
            collect_limited(df, max_rows, Some(max_bytes)).await
        });
        // On timeout the task is aborted: the plan's streams and the tasks DataFusion spawned
        // for it are dropped at their next yield and their memory reservations released.
        let (schema, batches, row_count, truncated) = match tokio::time::timeout(self.timeout, &mut task).await {
            Ok(joined) => joined.map_err(|e| QueryError::internal("query task", e))??,
            Err(_) => {
                task.abort();
                return Err(QueryError::Timeout(self.timeout));
            }
        };
        Ok(QueryResult {
            schema,
            batches,
            row_count,
            truncated,
            elapsed: started.elapsed(),
        })
    }
}

/// Bytes of the rows of `batch` itself. Not `get_array_memory_size`: that counts a shared
/// buffer whole for every batch sliced out of it (batches replayed from one WAL file share its
/// buffer), so 1,000 one-row batches of a 3 MB file counted as 3 GB.
fn result_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Streams a DataFrame, stopping once `max_rows` rows are collected.
pub async fn collect_limited(
    df: datafusion::dataframe::DataFrame,
    max_rows: Option<usize>,
    max_bytes: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>, usize, bool), QueryError> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut bytes = 0usize;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        bytes = bytes.saturating_add(result_bytes(&batch));
        if let Some(max) = max_bytes
            && bytes > max
        {
            return Err(QueryError::ResultTooLarge(max));
        }
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::error::chain;

    #[test]
    fn internal_errors_keep_their_cause() {
        let e = QueryError::internal("query task", std::io::Error::other("task 7 panicked"));
        assert!(e.source().is_some());
        assert_eq!(e.to_string(), "internal error: query task: task 7 panicked");
        // The cause is printed inline: the chain does not repeat it.
        assert_eq!(chain(&e), "internal error: query task: task 7 panicked");
        assert_eq!(e.class(), ErrorClass::Internal);
        // One failed run is shared by the queries that waited for it: a clone keeps the cause.
        assert_eq!(chain(&e.clone()), chain(&e));
        let df = QueryError::from(DataFusionError::Internal("no plan".into()));
        assert!(matches!(df, QueryError::Internal { .. }), "{df:?}");
        assert!(df.source().is_some());
    }

    #[test]
    fn a_file_gone_while_reading_says_run_again_and_keeps_its_error() {
        let gone = object_store::Error::NotFound {
            path: "events/s1/seg-7.parquet".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let e = QueryError::from(DataFusionError::Context(
            "reading".into(),
            Box::new(DataFusionError::ObjectStore(Box::new(gone))),
        ));
        assert!(matches!(e, QueryError::FilesChanged(_)), "{e:?}");
        assert!(e.to_string().contains("run the query again"), "{e}");
        assert_eq!(e.class(), ErrorClass::External);
        assert!(chain(&e).contains("seg-7.parquet"), "{}", chain(&e));
        // A local file removed under the scan.
        let local = QueryError::from(DataFusionError::External(Box::new(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        ))));
        assert!(matches!(local, QueryError::FilesChanged(_)), "{local:?}");
        // Any other storage failure stays internal.
        let other = QueryError::from(DataFusionError::External(Box::new(std::io::Error::other("EIO"))));
        assert!(matches!(other, QueryError::Internal { .. }), "{other:?}");
    }

    #[test]
    fn resources_say_datafusions_message_and_keep_its_error() {
        let e = QueryError::from(DataFusionError::Context(
            "collecting".into(),
            Box::new(DataFusionError::ResourcesExhausted("Failed to allocate 1 MB".into())),
        ));
        assert_eq!(e.to_string(), "query ran out of resources: Failed to allocate 1 MB");
        assert_eq!(e.class(), ErrorClass::User);
        // The log sees the frames the message leaves out.
        assert!(chain(&e).contains("collecting"), "{}", chain(&e));
    }

    #[test]
    fn an_error_detail_says_its_message_its_cause_or_both() {
        let message = crate::error::ErrorDetail::message("window kind changed");
        assert_eq!(message.to_string(), "window kind changed");
        assert!(message.source().is_none());
        let of = crate::error::ErrorDetail::of(std::io::Error::other("disk on fire"));
        assert_eq!(of.to_string(), "disk on fire");
        let both = crate::error::ErrorDetail::context("writing x", std::io::Error::other("disk on fire"));
        assert_eq!(both.to_string(), "writing x: disk on fire");
        let cause = both.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(cause.map(ToString::to_string).as_deref(), Some("disk on fire"));
        assert_eq!(chain(&both), "writing x: disk on fire");
    }
}
