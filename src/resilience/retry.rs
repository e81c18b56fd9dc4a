//! Exponential backoff with jitter (`backon`), driven by the error's classification.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::Classify;

/// How a failing operation is retried: delays from `initial`, growing by `multiplier` up to
/// `max`, each with random jitter (up to one more delay) so that many retriers spread out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// First delay.
    pub initial: Duration,
    /// Growth factor per attempt.
    pub multiplier: f32,
    /// Largest delay (before jitter).
    pub max: Duration,
    /// Tries in all; 0 = until it succeeds (or shutdown).
    pub attempts: u32,
}

impl RetryPolicy {
    /// Local storing and dead-lettering: 100 ms doubling to 5 s, until it succeeds.
    pub const UNTIL_SUCCESS: Self = Self {
        initial: Duration::from_millis(100),
        multiplier: 2.0,
        max: Duration::from_secs(5),
        attempts: 0,
    };

    fn builder(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.multiplier.max(1.0))
            .with_jitter();
        match self.attempts {
            0 => b.without_max_times(),
            n => b.with_max_times(n.saturating_sub(1) as usize),
        }
    }

    /// The delays between tries, for a caller that cannot await (a blocking thread).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        self.builder().build()
    }
}

/// Runs `op` until it succeeds. A failure whose error is [`Classify::retryable`] is tried again
/// after the policy's next delay, unless the attempts are used up or `shutdown` fired (a
/// delay is cut short by shutdown; the operation then runs once more and its error is
/// returned). Returns the last error otherwise.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    policy: RetryPolicy,
    shutdown: &watch::Receiver<bool>,
    op: F,
) -> Result<T, E>
where
    E: Classify + std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let stopping = shutdown.clone();
    let sleeper = shutdown.clone();
    op.retry(policy.builder())
        .sleep(move |delay| {
            let mut shutdown = sleeper.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
            }
        })
        .when(move |e: &E| e.retryable() && !*stopping.borrow())
        .notify(|e: &E, delay: Duration| {
            tracing::warn!(error = %crate::error::chain(e), retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::error::ErrorClass;

    #[derive(Debug, thiserror::Error)]
    #[error("{0:?}")]
    struct Failure(ErrorClass);

    impl Classify for Failure {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        initial: Duration::from_millis(1),
        multiplier: 2.0,
        max: Duration::from_millis(4),
        attempts: 0,
    };

    #[tokio::test]
    async fn external_failures_are_retried_until_success() {
        let (_tx, shutdown) = watch::channel(false);
        let calls = AtomicU32::new(0);
        let out = retry("op", FAST, &shutdown, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=3 => Err(Failure(ErrorClass::External)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(out.expect("succeeds"), 4);
    }

    #[tokio::test]
    async fn user_and_internal_failures_are_not_retried() {
        let (_tx, shutdown) = watch::channel(false);
        for class in [ErrorClass::User, ErrorClass::Internal] {
            let calls = AtomicU32::new(0);
            let out: Result<(), _> = retry("op", FAST, &shutdown, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure(class))
            })
            .await;
            assert_eq!(out.expect_err("fails").0, class);
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{class:?} tried once");
        }
    }

    #[tokio::test]
    async fn attempts_bound_the_tries() {
        let (_tx, shutdown) = watch::channel(false);
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy { attempts: 3, ..FAST };
        let out: Result<(), _> = retry("op", policy, &shutdown, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure(ErrorClass::External))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn shutdown_ends_a_retry_that_would_go_on_forever() {
        let (tx, shutdown) = watch::channel(false);
        let calls = AtomicU32::new(0);
        let slow = RetryPolicy {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
            ..FAST
        };
        let tx = std::sync::Arc::new(tx);
        let out: Result<(), _> = retry("op", slow, &shutdown, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                // On this current-thread runtime the task runs once the retry yields, i.e.
                // inside the hour-long delay after this failure; shutdown cuts the delay short.
                let tx = std::sync::Arc::clone(&tx);
                tokio::spawn(async move { tx.send_replace(true) });
            }
            Err(Failure(ErrorClass::External))
        })
        .await;
        assert_eq!(out.expect_err("gives up").0, ErrorClass::External);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one more try after the cut-short delay, then stop"
        );
    }

    #[test]
    fn delays_grow_to_the_cap_with_jitter_below_twice_the_delay() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(1),
            attempts: 0,
        };
        let delays: Vec<Duration> = policy.delays().take(8).collect();
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*d >= base && *d <= base * 2, "{d:?} outside [{base:?}, 2 × {base:?}]");
        }
    }
}
