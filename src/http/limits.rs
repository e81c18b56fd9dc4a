//! Rate limits per caller: a token bucket per key (or per client address without one), with
//! separate budgets for ingest and for queries. Over budget: 429 with `Retry-After`.
//!
//! Buckets of callers idle for a while are dropped by [`RateLimits::purge`] (run every minute),
//! so a flood of distinct addresses cannot grow memory without bound.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use crate::auth::Access;

/// The `[http.rate_limit]` section (0: no limit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Event-posting requests per second per caller (env `RATE_LIMIT_INGEST_PER_SEC`).
    pub ingest_per_sec: u32,
    /// Query and other requests per second per caller (env `RATE_LIMIT_QUERY_PER_SEC`).
    pub query_per_sec: u32,
    /// Requests a caller may send at once above the rate (default: one second's worth).
    pub burst: u32,
}

fn limiter(per_sec: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(DefaultKeyedRateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// The limiters of the HTTP API.
#[derive(Debug)]
pub struct RateLimits {
    ingest: Option<DefaultKeyedRateLimiter<String>>,
    query: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Limiters as configured (none when both rates are 0).
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            ingest: limiter(config.ingest_per_sec, config.burst),
            query: limiter(config.query_per_sec, config.burst),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request of `caller` from the budget of `access`; `Err(wait)` when it is spent.
    pub fn check(&self, access: Access, caller: &str) -> Result<(), Duration> {
        let limiter = match access {
            Access::Ingest => self.ingest.as_ref(),
            Access::Read | Access::Admin => self.query.as_ref(),
        };
        let Some(limiter) = limiter else { return Ok(()) };
        // Allocation only for the lookup key; a caller's name or address is short.
        limiter
            .check_key(&caller.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops the buckets of callers that are back to a full budget.
    pub fn purge(&self) {
        for l in [&self.ingest, &self.query].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_per_caller_and_per_kind() {
        let limits = RateLimits::new(&RateLimitConfig {
            ingest_per_sec: 1,
            query_per_sec: 2,
            burst: 2,
        });
        assert!(limits.check(Access::Read, "a").is_ok());
        assert!(limits.check(Access::Read, "a").is_ok());
        let wait = limits.check(Access::Read, "a").expect_err("spent");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            limits.check(Access::Read, "b").is_ok(),
            "another caller has its own bucket"
        );
        assert!(limits.check(Access::Ingest, "a").is_ok(), "ingest has its own budget");
        let off = RateLimits::new(&RateLimitConfig::default());
        assert!((0..10_000).all(|_| off.check(Access::Ingest, "a").is_ok()));
    }
}
