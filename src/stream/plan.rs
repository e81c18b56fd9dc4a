//! Splits a continuous query's DataFusion plan the way Arroyo does: the partial aggregate runs
//! on each micro-batch and yields accumulator *state* rows per (window, group key); states of
//! one window are combined with `PartialReduce` while it is open and turned into output rows by
//! the `Final` aggregate (plus everything above it: projection, HAVING) when it closes.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr, collect};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::CqError;
use super::rewrite::INPUT_TABLE;
use super::window::{self, WindowSpec};

/// The executable pieces of one continuous query.
#[derive(Debug)]
pub struct CqPlan {
    partial: Arc<dyn ExecutionPlan>,
    group_by: Arc<PhysicalGroupBy>,
    aggr: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    agg_input_schema: SchemaRef,
    input_schema: SchemaRef,
    /// Schema of state rows: group columns, then each aggregate's state fields.
    pub state_schema: SchemaRef,
    top: Arc<dyn ExecutionPlan>,
    top_agg: Arc<dyn ExecutionPlan>,
    /// Schema of output rows.
    pub output_schema: SchemaRef,
    /// Index of `window_start` in state rows.
    pub window_start_idx: usize,
    /// Index of `window_end` in state rows.
    pub window_end_idx: usize,
    /// Number of group columns at the start of state rows (`window_start`, `window_end`, keys).
    pub group_len: usize,
    task: Arc<TaskContext>,
}

fn as_agg(plan: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    (plan.as_ref() as &dyn Any).downcast_ref::<AggregateExec>()
}

fn find_agg(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if as_agg(plan).is_some() {
        return Some(Arc::clone(plan));
    }
    plan.children().into_iter().find_map(find_agg)
}

fn memory_exec(batches: Vec<RecordBatch>, schema: &SchemaRef) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(&[batches], Arc::clone(schema), None)?;
    Ok(exec)
}

type Parts = (
    PhysicalGroupBy,
    Vec<Arc<AggregateFunctionExpr>>,
    Vec<Option<Arc<dyn PhysicalExpr>>>,
    Arc<dyn ExecutionPlan>,
    SchemaRef,
);

fn parts_of(a: &AggregateExec) -> Parts {
    (
        a.group_expr().clone(),
        a.aggr_expr().to_vec(),
        a.filter_expr().to_vec(),
        Arc::clone(a.input()),
        a.input_schema(),
    )
}

/// The partial aggregation's parts, whether DataFusion planned one `Single` aggregate or a
/// `Partial` + `Final` pair.
fn split(top_agg: &Arc<dyn ExecutionPlan>) -> Result<Parts, CqError> {
    let agg = as_agg(top_agg).ok_or_else(|| CqError::bug("not an aggregate"))?;
    match agg.mode() {
        AggregateMode::Single | AggregateMode::SinglePartitioned => Ok(parts_of(agg)),
        AggregateMode::Final | AggregateMode::FinalPartitioned => {
            let partial = find_agg(agg.input()).ok_or_else(|| CqError::bug("final aggregate without a partial one"))?;
            let p = as_agg(&partial).ok_or_else(|| CqError::bug("not an aggregate"))?;
            Ok(parts_of(p))
        }
        other => Err(CqError::bug(format!("unexpected top aggregate mode {other:?}"))),
    }
}

/// Builds the session a continuous query plans in: the Hub's functions plus its window UDFs.
pub fn session(spec: WindowSpec, input_schema: &SchemaRef) -> Result<SessionContext, CqError> {
    let mut ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    crate::query::register_functions(&mut ctx).map_err(CqError::internal)?;
    for udf in window::udfs(spec) {
        ctx.register_udf(udf);
    }
    let input = MemTable::try_new(Arc::clone(input_schema), vec![vec![]]).map_err(CqError::internal)?;
    ctx.register_table(INPUT_TABLE, Arc::new(input))
        .map_err(CqError::internal)?;
    Ok(ctx)
}

impl CqPlan {
    /// Plans the rewritten SQL over micro-batches with `input_schema`.
    pub async fn build(sql: &str, spec: WindowSpec, input_schema: &SchemaRef) -> Result<Self, CqError> {
        let ctx = session(spec, input_schema)?;
        let df = ctx.sql(sql).await.map_err(CqError::from_planning)?;
        let top = df.create_physical_plan().await.map_err(CqError::from_planning)?;
        let top_agg = find_agg(&top).ok_or_else(|| CqError::Invalid("the query has no aggregation".into()))?;
        let (group_by, aggr, filters, input, agg_input_schema) = split(&top_agg)?;
        if find_agg(&input).is_some() {
            return Err(CqError::Invalid(
                "nested aggregations are not supported in continuous queries".into(),
            ));
        }
        if group_by.has_grouping_set() {
            return Err(CqError::Invalid(
                "grouping sets are not supported in continuous queries".into(),
            ));
        }
        let group_by = Arc::new(group_by);
        let partial: Arc<dyn ExecutionPlan> = Arc::new(
            AggregateExec::try_new(
                AggregateMode::Partial,
                Arc::clone(&group_by),
                aggr.clone(),
                filters.clone(),
                input,
                Arc::clone(&agg_input_schema),
            )
            .map_err(CqError::from_planning)?,
        );
        let state_schema = partial.schema();
        let window_start_idx = state_schema
            .index_of("window_start")
            .map_err(|_| CqError::bug("window_start is not a state column"))?;
        let window_end_idx = state_schema
            .index_of("window_end")
            .map_err(|_| CqError::bug("window_end is not a state column"))?;
        let group_len = group_by.expr().len();
        if window_start_idx >= group_len || window_end_idx >= group_len {
            return Err(CqError::bug("window columns are not group columns"));
        }
        let output_schema = top.schema();
        Ok(Self {
            partial,
            group_by,
            aggr,
            filters,
            agg_input_schema,
            input_schema: Arc::clone(input_schema),
            state_schema,
            top,
            top_agg,
            output_schema,
            window_start_idx,
            window_end_idx,
            group_len,
            task: ctx.task_ctx(),
        })
    }

    /// The input columns the query reads (the scan's projection), in input-schema order; every
    /// input column when the plan does not say.
    pub fn input_columns(&self) -> Vec<String> {
        let mut projection: Option<Option<Vec<usize>>> = None;
        let _ = Arc::clone(&self.partial).apply(|node| {
            if let Some(source) = (node.as_ref() as &dyn Any).downcast_ref::<DataSourceExec>()
                && let Some(mem) = source.data_source().downcast_ref::<MemorySourceConfig>()
            {
                projection = Some(mem.projection().clone());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let fields = self.input_schema.fields();
        match projection.flatten() {
            Some(indices) => {
                let mut indices = indices;
                indices.sort_unstable();
                indices.dedup();
                indices
                    .into_iter()
                    .filter_map(|i| fields.get(i).map(|f| f.name().clone()))
                    .collect()
            }
            None => fields.iter().map(|f| f.name().clone()).collect(),
        }
    }

    /// Index in state rows of the (single) state column of the aggregate `fun` whose argument
    /// mentions `marker` (the hidden session aggregates `min(__cq_ts)` / `max(__cq_ts)`).
    pub fn state_index_of(&self, fun: &str, marker: &str) -> Option<usize> {
        let mut index = self.group_len;
        for a in &self.aggr {
            let fields = a.state_fields().ok()?;
            let args = a
                .expressions()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let mentions = |m: &str| args.contains(m) || a.name().contains(m);
            if a.fun().name() == fun && (mentions(marker) || mentions("__session_time")) && fields.len() == 1 {
                return Some(index);
            }
            index += fields.len();
        }
        None
    }

    /// Runs the partial aggregate over one micro-batch; returns state rows.
    pub async fn partial(&self, batch: RecordBatch) -> Result<Vec<RecordBatch>, CqError> {
        self.partial_runner().run(batch).await
    }

    /// A handle that runs this query's partial aggregate on any thread, so callers can
    /// aggregate micro-batches in parallel ahead of the query's own (ordered) task.
    pub fn partial_runner(&self) -> PartialRunner {
        PartialRunner {
            plan: Arc::clone(&self.partial),
            task: Arc::clone(&self.task),
        }
    }

    fn merge_agg(&self, mode: AggregateMode, states: Vec<RecordBatch>) -> Result<Arc<dyn ExecutionPlan>, CqError> {
        let input = memory_exec(states, &self.state_schema).map_err(CqError::internal)?;
        let agg = AggregateExec::try_new(
            mode,
            Arc::new(self.group_by.as_final()),
            self.aggr.clone(),
            self.filters.clone(),
            input,
            Arc::clone(&self.agg_input_schema),
        )
        .map_err(CqError::internal)?;
        Ok(Arc::new(agg))
    }

    /// Combines state rows into one state row per group.
    pub async fn reduce(&self, states: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, CqError> {
        let plan = self.merge_agg(AggregateMode::PartialReduce, states)?;
        let out = collect(plan, Arc::clone(&self.task))
            .await
            .map_err(CqError::from_execution)?;
        out.into_iter()
            .map(|b| RecordBatch::try_new(Arc::clone(&self.state_schema), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CqError::internal)
    }

    /// Turns state rows of closed windows into output rows.
    pub async fn finalize(&self, states: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, CqError> {
        let final_agg = self.merge_agg(AggregateMode::Final, states)?;
        let target = Arc::clone(&self.top_agg);
        let plan = Arc::clone(&self.top)
            .transform_down(|node| {
                if Arc::ptr_eq(&node, &target) {
                    Ok(Transformed::new(Arc::clone(&final_agg), true, TreeNodeRecursion::Jump))
                } else {
                    Ok(Transformed::no(node))
                }
            })
            .data()
            .map_err(CqError::internal)?;
        collect(plan, Arc::clone(&self.task))
            .await
            .map_err(CqError::from_execution)
    }
}

/// The partial aggregate of one query, detached from its runtime (see
/// [`CqPlan::partial_runner`]): it holds no window state, so it is `Send + Sync` and cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct PartialRunner {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
}

impl PartialRunner {
    /// The state rows (one per window and group key) of one micro-batch.
    pub async fn run(&self, batch: RecordBatch) -> Result<Vec<RecordBatch>, CqError> {
        let plan = Arc::clone(&self.plan)
            .transform_up(|node| {
                let Some(source) = (node.as_ref() as &dyn Any).downcast_ref::<DataSourceExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(mem) = source.data_source().downcast_ref::<MemorySourceConfig>() else {
                    return Ok(Transformed::no(node));
                };
                let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
                    &[vec![batch.clone()]],
                    mem.original_schema(),
                    mem.projection().clone(),
                )?;
                Ok(Transformed::yes(exec))
            })
            .data()
            .map_err(CqError::internal)?;
        collect(plan, Arc::clone(&self.task))
            .await
            .map_err(CqError::from_execution)
    }
}
