//! Circuit breaker around database writes: closed → open after `failure_threshold`
//! consecutive failures → half-open after `open_secs` → closed after `half_open_successes`
//! successes in a row; any failure while half-open opens it again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

use serde::Serialize;

/// Breaker state as shown in `/ready`, the status API and `db_circuit_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast until the open period is over.
    Open,
    /// Trial calls go through; successes close it, a failure reopens it.
    HalfOpen,
}

impl BreakerState {
    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    successes: u32,
    opened_at: Option<Instant>,
}

/// The breaker. Cheap to share (`&self` methods).
#[derive(Debug)]
pub struct CircuitBreaker {
    /// What it protects, for logs (`postgres`, `redis`).
    name: &'static str,
    failure_threshold: u32,
    open_for: Duration,
    half_open_successes: u32,
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
}

impl CircuitBreaker {
    /// A closed breaker on the system clock.
    pub fn new(failure_threshold: u32, open_for: Duration, half_open_successes: u32) -> Self {
        Self::with_clock(failure_threshold, open_for, half_open_successes, crate::clock::system())
    }

    /// A closed breaker measuring its open period on `clock`.
    pub fn with_clock(
        failure_threshold: u32,
        open_for: Duration,
        half_open_successes: u32,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            name: "database",
            clock,
            failure_threshold: failure_threshold.max(1),
            open_for,
            half_open_successes: half_open_successes.max(1),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                successes: 0,
                opened_at: None,
            }),
        }
    }

    /// The same breaker, named `name` in its logs.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Current state (an open breaker whose period is over reports half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        inner.state
    }

    fn refresh(&self, inner: &mut Inner) {
        let now = self.clock.now();
        if inner.state == BreakerState::Open && inner.opened_at.is_some_and(|t| now.duration_since(t) >= self.open_for)
        {
            inner.state = BreakerState::HalfOpen;
            inner.successes = 0;
        }
    }

    /// Whether a call may go through now; `Err` carries the time left open.
    pub fn allow(&self) -> Result<(), Duration> {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        match inner.state {
            BreakerState::Open => {
                let left = inner.opened_at.map_or(self.open_for, |t| {
                    self.open_for.saturating_sub(self.clock.now().duration_since(t))
                });
                Err(left)
            }
            _ => Ok(()),
        }
    }

    /// A call succeeded.
    pub fn success(&self) {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        match inner.state {
            BreakerState::HalfOpen => {
                inner.successes += 1;
                if inner.successes >= self.half_open_successes {
                    inner.state = BreakerState::Closed;
                    inner.failures = 0;
                    inner.opened_at = None;
                    tracing::info!(breaker = self.name, "circuit breaker closed");
                }
            }
            _ => inner.failures = 0,
        }
    }

    /// A call failed.
    pub fn failure(&self) {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        inner.failures += 1;
        let open = match inner.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => inner.failures >= self.failure_threshold,
            BreakerState::Open => false,
        };
        if open {
            inner.state = BreakerState::Open;
            inner.opened_at = Some(self.clock.now());
            inner.successes = 0;
            tracing::warn!(breaker = self.name, failures = inner.failures, "circuit breaker opened");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_half_opens_and_closes() {
        let clock = Arc::new(crate::clock::ManualClock::default());
        let b = CircuitBreaker::with_clock(3, Duration::from_millis(30), 3, clock.clone());
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.success();
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed, "a success resets the count");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.allow(), Err(Duration::from_millis(30)));
        clock.advance(Duration::from_millis(29));
        assert_eq!(b.state(), BreakerState::Open, "still open 1 ms before the period ends");
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow().is_ok());
        b.success();
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "a failure while half-open reopens");
        clock.advance(Duration::from_millis(30));
        for _ in 0..2 {
            b.success();
            assert_eq!(b.state(), BreakerState::HalfOpen);
        }
        b.success();
        assert_eq!(b.state(), BreakerState::Closed, "three successes close it");
    }
}
