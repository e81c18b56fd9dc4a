//! One registry of continuous queries for every instance writing the same rollup database.
//!
//! A rollup table holds the merge of every instance's run of its query (the engine hands the
//! sink its emitted windows), so a query registered on one instance must run on all of them:
//! each instance adopts the queries of the shared registry (`hub_continuous_queries`, with
//! their options) at startup, before its sources consume anything, and every
//! [`REGISTRY_FOLLOW`] after. A query deleted on this instance is not adopted back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{RollupSink, SinkError};
use crate::stream::StreamHandle;

/// How often the shared registry is read for queries registered elsewhere.
pub const REGISTRY_FOLLOW: Duration = Duration::from_secs(10);

/// Registers here every query of the shared registry that this instance does not run and
/// did not delete (`deleted`); returns the names adopted.
pub async fn adopt(
    sink: &dyn RollupSink,
    stream: &StreamHandle,
    deleted: &HashSet<String>,
) -> Result<Vec<String>, SinkError> {
    let registered = sink.registered().await?;
    let local: HashSet<String> = match stream.list().await {
        Ok(list) => list.into_iter().map(|q| q.name).collect(),
        Err(_) => return Ok(Vec::new()),
    };
    let mut adopted = Vec::new();
    // Oldest first: an upstream query is registered before the queries reading it.
    for def in registered {
        if local.contains(&def.name) || deleted.contains(&def.name) {
            continue;
        }
        let name = def.name.clone();
        match stream.register(def.name, def.sql, def.options).await {
            Ok(_) => {
                tracing::info!(query = %name, "continuous query adopted from the shared registry");
                adopted.push(name);
            }
            Err(e) => tracing::warn!(query = %name, error = %e, "continuous query of the shared registry not adopted"),
        }
    }
    Ok(adopted)
}

/// Adopts the registry's queries every [`REGISTRY_FOLLOW`] until `shutdown`.
pub fn follow(
    sink: Arc<dyn RollupSink>,
    stream: StreamHandle,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: HashSet<String> = HashSet::new();
        let mut deleted: HashSet<String> = HashSet::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REGISTRY_FOLLOW) => {}
                _ = shutdown.changed() => return,
            }
            // Names run here before and gone now were deleted here: not adopted back (unless
            // registered here again).
            let local: HashSet<String> = match stream.list().await {
                Ok(list) => list.into_iter().map(|q| q.name).collect(),
                Err(_) => return,
            };
            deleted.extend(seen.difference(&local).cloned());
            deleted.retain(|n| !local.contains(n));
            seen = local;
            match adopt(sink.as_ref(), &stream, &deleted).await {
                Ok(adopted) => seen.extend(adopted),
                Err(e) => tracing::debug!(error = %e, "shared query registry not read"),
            }
        }
    })
}
