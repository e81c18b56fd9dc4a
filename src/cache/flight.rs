//! Single-flight: identical concurrent misses on one instance run the query once; the others
//! wait for its outcome. If the running caller goes away (client disconnect, timeout) a waiter
//! takes over.
//!
//! Hand-written (~60 lines) rather than a crate: moka's `get_with` coalesces only loads into a
//! moka cache, and the Redis-backed path needs the same coalescing in front of Redis.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type InFlight<T> = Arc<Mutex<HashMap<String, watch::Receiver<Option<T>>>>>;

/// In-flight computations by key.
#[derive(Debug)]
pub struct Flights<T> {
    inflight: InFlight<T>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Whether this caller ran the computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ran it.
    Leader,
    /// Received another caller's outcome.
    Follower,
}

/// Removes the in-flight entry when the leader finishes or is dropped.
struct Landing<T> {
    inflight: InFlight<T>,
    key: String,
}

impl<T> Drop for Landing<T> {
    fn drop(&mut self) {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl<T: Clone + Send + Sync> Flights<T> {
    /// Runs `compute` unless a computation of `key` is in flight, in which case its outcome is
    /// returned.
    pub async fn run<F: Future<Output = T>>(&self, key: &str, compute: F) -> (T, Role) {
        let mut compute = Some(compute);
        loop {
            let joined = {
                let mut map = self.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match map.get(key) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        map.insert(key.to_string(), rx);
                        Ok(tx)
                    }
                }
            };
            match joined {
                Ok(tx) => {
                    let landing = Landing {
                        inflight: Arc::clone(&self.inflight),
                        key: key.to_string(),
                    };
                    let Some(f) = compute.take() else {
                        unreachable!("a caller leads at most once: it returns right after");
                    };
                    let out = f.await;
                    tx.send_replace(Some(out.clone()));
                    drop(landing);
                    return (out, Role::Leader);
                }
                Err(mut rx) => {
                    if let Ok(v) = rx.wait_for(Option::is_some).await
                        && let Some(out) = v.clone()
                    {
                        return (out, Role::Follower);
                    }
                    // The leader went away without an outcome: try to lead.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_a_dropped_leader_hands_over() {
        let flights = Flights::<u64>::default();
        let runs = AtomicUsize::new(0);
        let (release, gate) = watch::channel(false);
        let callers = futures::future::join_all((0..8).map(|_| {
            let mut gate = gate.clone();
            let runs = &runs;
            flights.run("k", async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                42
            })
        }));
        let mut callers = Box::pin(callers);
        // One poll of each caller: the first leads and blocks on the gate, the rest join it.
        assert!(futures::poll!(callers.as_mut()).is_pending());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        release.send_replace(true);
        let outcomes = callers.await;
        assert!(outcomes.iter().all(|(v, _)| *v == 42));
        let leaders = outcomes.iter().filter(|(_, r)| *r == Role::Leader).count();
        assert_eq!((runs.load(Ordering::SeqCst), leaders), (1, 1));

        // A leader that is dropped mid-run: the waiter runs the computation itself.
        let blocked = flights.run("x", std::future::pending::<u64>());
        let mut blocked = Box::pin(blocked);
        assert!(futures::poll!(blocked.as_mut()).is_pending());
        let waiter = flights.run("x", async { 7 });
        let mut waiter = Box::pin(waiter);
        assert!(futures::poll!(waiter.as_mut()).is_pending(), "waits for the leader");
        drop(blocked);
        assert_eq!(waiter.await, (7, Role::Leader));
        assert!(flights.inflight.lock().expect("lock").is_empty());
    }
}
