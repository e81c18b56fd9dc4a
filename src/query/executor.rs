//! Where ad-hoc queries run: a tokio runtime of their own (InfluxDB 3's `DedicatedExecutor`
//! idea), so a CPU-heavy query shares the cores with ingest through the OS scheduler instead of
//! occupying the service's worker threads, and a query that overruns is answered 408 on time and
//! aborted. Every leaf of an ad-hoc plan is made cooperative ([`Cooperate`]), so an aborted plan
//! yields within one tokio budget of batches and stops using CPU.

use std::future::Future;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// Stack of the query threads: planning and evaluating a deep but legal expression recurses
/// once per level (see `query::complexity`); only touched pages are committed.
const QUERY_THREAD_STACK: usize = 64 << 20;

/// The query runtime. Cheap to clone.
#[derive(Clone, Debug)]
pub struct QueryExecutor {
    handle: Handle,
    _runtime: Arc<OwnedRuntime>,
}

#[derive(Debug)]
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; the service drops this at shutdown.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl QueryExecutor {
    /// A runtime with `threads` workers (0 = one per core).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 0 {
            builder.worker_threads(threads);
        }
        let runtime = builder
            .enable_all()
            .thread_name("hub-query")
            .thread_stack_size(QUERY_THREAD_STACK)
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            _runtime: Arc::new(OwnedRuntime(Some(runtime))),
        })
    }

    /// Runs `fut` on the query runtime.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut)
    }
}

/// Physical optimizer rule (last): wraps every leaf and every join of the plan in DataFusion's
/// `CooperativeExec`, which spends tokio's cooperative budget per batch. Without it a plan whose
/// sources never return `Pending` (`generate_series`, in-memory batches) runs a cross join or an
/// aggregation inside one poll, where neither the timeout nor an abort can reach it.
#[derive(Debug, Default)]
pub struct Cooperate;

impl PhysicalOptimizerRule for Cooperate {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            // Leaves, and the operators that emit many batches per input batch (a cross join
            // turns one right batch into millions of rows without polling any leaf again).
            let amplifies = node.name().contains("Join") || node.name() == "UnnestExec";
            if node.children().is_empty() || amplifies {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "hub_cooperate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
