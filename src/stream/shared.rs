//! Where a continuous query's output rows are shared with the other instances of a cluster
//! (implemented by the cluster layer; the engine knows only this trait).

use std::sync::Arc;

use async_trait::async_trait;

use crate::storage::EventStore;
use crate::storage::local::LocalStore;

/// Shares output stores across a cluster.
#[async_trait]
pub trait SharedOutputs: Send + Sync + std::fmt::Debug {
    /// From now on the rows of query `name` in `store` are shipped to shared storage under the
    /// catalog name `table` and served to the other instances; returns the store whose table
    /// is every instance's rows and whose data version moves when any instance's do. `fresh`:
    /// the query was just registered (its store is new), not reopened after a restart.
    async fn share(
        &self,
        name: &str,
        table: &str,
        store: &LocalStore,
        fresh: bool,
    ) -> Result<Arc<dyn EventStore>, String>;

    /// Query `name` is deleted: its rows are no longer shipped or served.
    fn unshare(&self, name: &str);
}
