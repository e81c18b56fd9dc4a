//! The LLM telemetry event model: schema, decoding and validation.

pub mod decode;
mod fields;
mod raw;
pub mod reject;
pub mod schema;
pub mod split;
#[cfg(test)]
mod tests;
pub mod time;

pub use decode::{BodyError, DecodedBatch, EventDecoder, decode_batch_body, decode_single};
pub use reject::{RejectKind, Rejection};
pub use schema::{EVENTS_TABLE, events_schema};
