//! The LLM telemetry event model: schema, decoding and validation.

pub mod builders;
pub mod decode;
mod fields;
mod raw;
pub mod reject;
mod rfc3339;
mod scan;
pub mod schema;
mod shape;
pub mod split;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_diff;
pub mod time;
mod validate;

pub use builders::{Projection, UnknownColumn};
pub use decode::{
    BodyError, DecodeOptions, DecodedBatch, DecoderKind, EventDecoder, ReaderCounts, decode_batch_body,
    decode_batch_body_with, decode_single,
};
pub use reject::{RejectKind, Rejection};
pub use schema::{EVENTS_TABLE, events_schema};
