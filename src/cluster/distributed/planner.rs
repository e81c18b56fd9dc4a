//! Which queries are distributed, and how `EXPLAIN` shows it.
//!
//! A query is planned on this instance first. It is handed to the distributed planner only when
//! every leaf can run on any member — the shared files (read from the bucket), members' tails,
//! empty or constant rows — and the shared files it reads take more than
//! `cluster.distributed_bytes_per_partition` (at least two tasks' worth). Anything reading this
//! instance's own files or memory (continuous-query tables, `information_schema`, ...) stays
//! here: a task sent elsewhere would read another machine's disk.
//!
//! DataFusion renders `EXPLAIN` inside its default physical planner, which never asks the
//! session's query planner; a plain `EXPLAIN` of a query that runs distributed is therefore
//! planned here the way the query would run, and shows its stages.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_distributed::{DistributedExec, display_plan_ascii};

use crate::cluster::history::History;
use crate::cluster::tail_exec::TailExec;

/// The session's query planner in cluster mode.
#[derive(Debug)]
pub struct ClusterPlanner {
    /// datafusion-distributed's planner.
    pub distributed: Arc<dyn QueryPlanner + Send + Sync>,
    /// Where the shared files are.
    pub history: History,
    /// `cluster.distributed_bytes_per_partition`.
    pub bytes_per_partition: usize,
}

impl ClusterPlanner {
    /// Whether `plan` (planned for this instance) should be distributed.
    fn worth_distributing(&self, plan: &Arc<dyn ExecutionPlan>) -> bool {
        let mut shared_bytes = 0u64;
        let mut anywhere = true;
        let walked = plan.apply(|node| {
            if !node.children().is_empty()
                || node.is::<TailExec>()
                || node.is::<EmptyExec>()
                || node.is::<PlaceholderRowExec>()
            {
                return Ok(TreeNodeRecursion::Continue);
            }
            let files = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|d| d.data_source().downcast_ref::<FileScanConfig>())
                .filter(|scan| self.history.holds(scan));
            match files {
                Some(scan) => {
                    shared_bytes += scan
                        .file_groups
                        .iter()
                        .flat_map(|g| g.files())
                        .map(|f| f.object_meta.size)
                        .sum::<u64>();
                    Ok(TreeNodeRecursion::Continue)
                }
                None => {
                    anywhere = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            }
        });
        walked.is_ok() && anywhere && shared_bytes > self.bytes_per_partition as u64
    }
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let default = DefaultPhysicalPlanner::default();
        if let LogicalPlan::Explain(explain) = logical_plan
            && !explain.verbose
            && explain.logical_optimization_succeeded
        {
            // Planned the way the query would run: through this planner.
            let planned = session.create_physical_plan(&explain.plan).await?;
            if planned.is::<DistributedExec>() {
                let plans = vec![
                    explain.plan.to_stringified(PlanType::FinalLogicalPlan),
                    StringifiedPlan::new(PlanType::FinalPhysicalPlan, display_plan_ascii(planned.as_ref(), false)),
                ];
                return Ok(Arc::new(ExplainExec::new(
                    Arc::clone(explain.schema.inner()),
                    plans,
                    false,
                )));
            }
            return default.create_physical_plan(logical_plan, session).await;
        }
        let local = default.create_physical_plan(logical_plan, session).await?;
        if self.worth_distributing(&local) {
            return self.distributed.create_physical_plan(logical_plan, session).await;
        }
        Ok(local)
    }
}
