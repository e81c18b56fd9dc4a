//! Memory for ad-hoc queries: one pool for all of them (`query.total_memory_bytes`, shared by
//! HTTP and the wire endpoint), and per query a [`QueryPool`] in front of it that also enforces
//! `query.memory_limit_bytes`. Ingest, the WAL and the continuous queries run outside these
//! pools, so an ad-hoc query can never take their memory.
//!
//! DataFusion's pools bound one `RuntimeEnv`; a per-query limit under a shared total is not one
//! of them, hence this small wrapper (the accounting stays DataFusion's: operators reserve
//! through `MemoryReservation`, sorts, aggregations and joins spill when refused).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

/// The runtime every ad-hoc query starts from: the shared total pool and a disk manager that
/// spills under `spill_dir`.
pub fn shared_runtime(total_bytes: usize, spill_dir: PathBuf) -> Result<Arc<RuntimeEnv>> {
    let top = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
    let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(GreedyMemoryPool::new(total_bytes), top));
    let spilling = std::fs::create_dir_all(&spill_dir)
        .map_err(|e| DataFusionError::External(Box::new(e)))
        .and_then(|()| {
            RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::clone(&pool))
                .with_disk_manager_builder(
                    DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill_dir.clone()])),
                )
                .build_arc()
        });
    match spilling {
        Ok(rt) => Ok(rt),
        Err(e) => {
            // A read-only or full data disk must not stop the Hub from serving queries: they
            // run without spilling (and fail with 422 where they would have spilled).
            tracing::warn!(dir = %spill_dir.display(), error = %e, "queries cannot spill to disk until the next start");
            RuntimeEnvBuilder::new()
                .with_memory_pool(pool)
                .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
                .build_arc()
        }
    }
}

/// `base` with a pool that limits one query to `limit` bytes within the shared total.
pub fn per_query_runtime(base: &RuntimeEnv, limit: usize) -> Arc<RuntimeEnv> {
    let mut rt = base.clone();
    rt.memory_pool = Arc::new(QueryPool {
        limit,
        used: AtomicUsize::new(0),
        total: Arc::clone(&base.memory_pool),
    });
    Arc::new(rt)
}

/// One query's pool: its own limit, then the shared total.
#[derive(Debug)]
pub struct QueryPool {
    limit: usize,
    used: AtomicUsize,
    total: Arc<dyn MemoryPool>,
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool ({} of {} bytes, total: {})",
            self.used.load(Ordering::Relaxed),
            self.limit,
            self.total
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.total.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.total.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.total.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.total.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let limit = self.limit;
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(additional).filter(|n| *n <= limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the query needs more than query.memory_limit_bytes = {limit} bytes \
                     ({used} reserved, {} asked for by {})",
                    additional,
                    reservation.consumer().name()
                ))
            })?;
        if let Err(e) = self.total.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "all queries together need more than query.total_memory_bytes: {}",
                e.find_root().message()
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_held_to_its_own_limit_and_to_the_total() {
        let base = shared_runtime(1000, std::env::temp_dir().join("hub-pool-test")).expect("runtime");
        let a = per_query_runtime(&base, 600);
        let b = per_query_runtime(&base, 600);
        let ra = MemoryConsumer::new("a").register(&a.memory_pool);
        let rb = MemoryConsumer::new("b").register(&b.memory_pool);
        ra.try_grow(500).expect("within both");
        let e = ra.try_grow(200).expect_err("over the query's own limit");
        assert!(e.to_string().contains("query.memory_limit_bytes = 600"), "{e}");
        let e = rb.try_grow(550).expect_err("over the total");
        assert!(e.to_string().contains("query.total_memory_bytes"), "{e}");
        assert_eq!(b.memory_pool.reserved(), 0, "a refused grow leaves nothing reserved");
        drop(ra);
        rb.try_grow(550).expect("the other query's memory came back");
        assert_eq!(base.memory_pool.reserved(), 550);
    }
}
