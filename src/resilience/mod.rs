//! Retry with backoff and the circuit breaker: one module for every dependency that can fail
//! (the local store, the Kafka broker, PostgreSQL; later Redis and object storage).
//!
//! Whether an error is retried is decided by its classification ([`Classify::retryable`]),
//! never by the call site: an external failure (disk, network, database, broker) is retried,
//! a user or internal error is not.
//!
//! [`Classify::retryable`]: crate::error::Classify::retryable

pub mod breaker;
pub mod retry;

pub use breaker::{BreakerState, CircuitBreaker};
pub use retry::{RetryPolicy, retry};
