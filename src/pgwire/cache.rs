//! The result cache on the wire: simple-protocol queries through a [`QueryHook`] (the last
//! hook, after the read-only gate), extended-protocol portals in
//! [`super::service::HubService`]. Entries are Arrow answers keyed per login (the caller's
//! scope), encoded per connection in the client's result formats.
//!
//! Statements the cache cannot key (no Hub table, catalog tables, volatile functions, not a
//! query) take datafusion-postgres' normal path untouched.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::catalog::MemTable;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::HookClient;
use pgwire::api::ClientInfo;
use pgwire::api::portal::Format;
use pgwire::api::results::Response;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::types::format::FormatOptions;

use super::service::{SQLSTATE_RESULT_TOO_LARGE, statement_timeout};
use crate::cache::{Answer, CacheKey, QueryCache, Scope};
use crate::query::QueryError;

/// The scope of a wire client: its login (roles and tenants attach to it once they exist).
pub fn scope_of(client: &(dyn ClientInfo + Send + Sync)) -> Scope {
    Scope {
        role: client
            .metadata()
            .get(pgwire::api::METADATA_USER)
            .map(|u| format!("wire:{u}")),
        tenant: None,
    }
}

/// Runs a logical plan to an [`Answer`], bounded by `max_bytes` and the statement timeout.
async fn answer_of(
    ctx: SessionContext,
    plan: LogicalPlan,
    max_bytes: usize,
    timeout: Option<Duration>,
) -> Result<Answer, QueryError> {
    let run = async move { Answer::collect(ctx.execute_logical_plan(plan).await?, None, Some(max_bytes)).await };
    match timeout {
        Some(t) => tokio::time::timeout(t, run).await.map_err(|_| QueryError::Timeout(t))?,
        None => run.await,
    }
}

/// The wire error of a failed run: the same SQLSTATEs the uncached path gives.
fn wire_error(e: QueryError) -> PgWireError {
    match e {
        QueryError::Timeout(_) => PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            "canceling statement due to statement timeout".into(),
        ))),
        QueryError::ResultTooLarge(_) => PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            SQLSTATE_RESULT_TOO_LARGE.into(),
            e.to_string(),
        ))),
        other => PgWireError::ApiError(Box::new(DataFusionError::Execution(other.to_string()))),
    }
}

/// Encodes a (cached or fresh) answer in the client's formats.
async fn respond(
    ctx: &SessionContext,
    answer: &Answer,
    format: &Format,
    client: &(dyn ClientInfo + Send + Sync),
) -> PgWireResult<Response> {
    let table = MemTable::try_new(Arc::clone(&answer.schema), vec![answer.batches.clone()])
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let df = ctx
        .read_table(Arc::new(table))
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    Ok(Response::Query(encode_dataframe(df, format, Some(options)).await?))
}

/// The cache as seen from the wire endpoint.
pub struct WireCache {
    cache: Arc<QueryCache>,
    max_result_bytes: usize,
}

impl WireCache {
    /// Wraps `cache`; answers are bounded by `max_result_bytes` like every wire result.
    pub fn new(cache: Arc<QueryCache>, max_result_bytes: usize) -> Self {
        Self {
            cache,
            max_result_bytes,
        }
    }

    fn key(&self, statement: &Statement, ctx: &SessionContext, scope: &Scope, variant: &str) -> Option<CacheKey> {
        self.cache
            .keys()
            .for_statement(statement, &ctx.state(), scope, variant)
            .ok()
    }

    /// Answers an extended-protocol portal from the cache (keyed on the statement and the
    /// parameters' bytes as sent), or `None` when it cannot be keyed.
    pub async fn extended(
        &self,
        (statement, plan): (&Statement, &LogicalPlan),
        variant: &str,
        params: impl FnOnce() -> PgWireResult<ParamValues>,
        format: &Format,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<Response>> {
        let key = self.key(statement, ctx, &scope_of(client), variant)?;
        let params = match params() {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let run = async {
            let plan = plan.clone().replace_params_with_values(&params)?;
            let plan = ctx.state().optimize(&plan)?;
            answer_of(ctx.clone(), plan, self.max_result_bytes, statement_timeout(client)).await
        };
        Some(match self.cache.get_or_run(Some(&key), run).await {
            Ok((answer, _)) => respond(ctx, &answer, format, client).await,
            Err(e) => Err(wire_error(e)),
        })
    }
}

/// What besides the statement shapes an extended-protocol answer: the parameters exactly as
/// sent (bytes, formats and declared types; equal bytes decode to equal values).
pub fn extended_variant<S>(portal: &pgwire::api::portal::Portal<S>) -> String {
    let mut variant = format!(
        "wire-extended;{:?};{:?}",
        portal.parameter_format, portal.statement.parameter_types
    );
    for p in &portal.parameters {
        match p {
            Some(b) => {
                variant.push_str(&format!(";{}:", b.len()));
                for x in b.iter() {
                    variant.push_str(&format!("{x:02x}"));
                }
            }
            None => variant.push_str(";null"),
        }
    }
    variant
}

/// The values of a portal's parameters, typed as DataFusion inferred them for `plan`.
pub fn parameter_values<S: Clone>(
    portal: &pgwire::api::portal::Portal<S>,
    plan: &LogicalPlan,
) -> PgWireResult<ParamValues> {
    let inferred = plan
        .get_parameter_types()
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut ordered: Vec<(usize, Option<datafusion::arrow::datatypes::DataType>)> = inferred
        .into_iter()
        .filter_map(|(name, t)| name.trim_start_matches('$').parse::<usize>().ok().map(|i| (i, t)))
        .collect();
    ordered.sort_by_key(|(i, _)| *i);
    let types: Vec<Option<&datafusion::arrow::datatypes::DataType>> = ordered.iter().map(|(_, t)| t.as_ref()).collect();
    datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters(portal, &types)
}

#[async_trait]
impl QueryHook for WireCache {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let client: &(dyn ClientInfo + Send + Sync) = &*client;
        let key = self.key(statement, ctx, &scope_of(client), "wire-simple")?;
        let timeout = statement_timeout(client);
        let run = async {
            let plan = ctx
                .state()
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    statement.clone(),
                )))
                .await?;
            let plan = ctx.state().optimize(&plan)?;
            answer_of(ctx.clone(), plan, self.max_result_bytes, timeout).await
        };
        Some(match self.cache.get_or_run(Some(&key), run).await {
            Ok((answer, _)) => respond(ctx, &answer, &Format::UnifiedText, client).await,
            Err(e) => Err(wire_error(e)),
        })
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<datafusion::logical_expr::LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // Handled in `HubService`, which sees the portal's result formats.
        None
    }
}
