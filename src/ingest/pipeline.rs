//! The ingestion pipeline. Every source hands its events to the same steps, in this order; the
//! delivery guarantees are stated here once.
//!
//! 1. **Decode** (off the async threads): each event is validated into one Arrow row or
//!    rejected with its index and reason (`events_decoded_total`, `events_errors_total`).
//! 2. **Rejects** go back to the sender: the HTTP client gets them in the answer (200 / 207 /
//!    400); the Kafka source dead-letters them before any of the batch's offsets move.
//! 3. **Durable append** through an [`Ingest`]: standalone, the local store's WAL (group
//!    commit: an append is acknowledged only once its own records are synced). `Ok` means
//!    durable; an error means none of the batch was acknowledged (503 / retried).
//!    - Over HTTP a client retry after a lost answer may store twice (at-least-once). The
//!      Kafka source appends the batch held and claims it in the sink's transaction that
//!      stores its offsets (exactly-once).
//!    - With `kafka.produce_http`, HTTP events are produced to Kafka instead (with their
//!      original JSON) and stored when consumed.
//! 4. **Continuous queries** get the stored batch after it is durable (a crash in between is
//!    caught up from the store on restart). Their output tables are written by the engine.
//! 5. **Sinks** get what the queries emit: each emitted window goes to the PostgreSQL rollup
//!    sink first, then to the query's own table ([`crate::stream::state_sink`]); a restart
//!    emits again what the table lacks, and the sink stores a window emitted twice once.
//!
//! HTTP (`http/events.rs`) and the demo traffic (`app.rs`) are thin adapters over
//! [`Pipeline::accept_body`]; the Kafka source (`sources/kafka/pipeline.rs`) decodes consumed
//! records in parallel and runs steps 2–3 with its own retry and offset bookkeeping.

use std::sync::Arc;

use axum::body::Bytes;

use super::{Ingest, IngestError, count_decoded};
use crate::event::split::accepted_raw;
use crate::event::{BodyError, DecodedBatch, Rejection, decode_batch_body, decode_single};
use crate::metrics::Metrics;

/// What a body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyShape {
    /// One JSON object.
    Single,
    /// A JSON array or NDJSON.
    Batch,
}

/// What the pipeline did with a body.
#[derive(Debug)]
pub struct Accepted {
    /// Events made durable.
    pub accepted: usize,
    /// Events rejected, with their index and reason.
    pub rejected: Vec<Rejection>,
}

/// Why a body was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The body as a whole is unreadable (not JSON, too deep, empty); nothing was stored.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The events could not be made durable; nothing was acknowledged.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The decoding task failed (a bug).
    #[error("decoding task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Decode → rejects → durable append → continuous queries, for bodies of JSON events.
#[derive(Debug, Clone)]
pub struct Pipeline {
    ingest: Arc<dyn Ingest>,
    metrics: Metrics,
}

impl Pipeline {
    /// A pipeline handing accepted events to `ingest`, counting into `metrics`.
    pub fn new(ingest: Arc<dyn Ingest>, metrics: Metrics) -> Self {
        Self { ingest, metrics }
    }

    /// Where accepted events go (for status reporting).
    pub fn ingest(&self) -> &Arc<dyn Ingest> {
        &self.ingest
    }

    /// Decodes `body` (a batch on a blocking thread; a single event inline, it is small) and
    /// hands the accepted events on. Returns once they are durable. With a `tenant` (a
    /// tenant-bound credential), the events are that tenant's ([`super::tenant::confine`]).
    pub async fn accept_body(
        &self,
        body: Bytes,
        shape: BodyShape,
        ingest_time_us: i64,
        tenant: Option<&str>,
    ) -> Result<Accepted, PipelineError> {
        let (body, decoded) = match shape {
            BodyShape::Single => {
                let decoded = decode_single(&body, ingest_time_us);
                (body, decoded)
            }
            BodyShape::Batch => {
                tokio::task::spawn_blocking(move || {
                    let decoded = decode_batch_body(&body, ingest_time_us);
                    (body, decoded)
                })
                .await?
            }
        };
        let mut decoded = decoded?;
        if let Some(t) = tenant {
            decoded = super::tenant::confine(decoded, t, self.ingest.wants_raw()).map_err(BodyError::Arrow)?;
        }
        Ok(self.accept_decoded(&body, shape, decoded).await?)
    }

    /// Counts a decoded body and makes its accepted events durable.
    pub async fn accept_decoded(
        &self,
        body: &[u8],
        shape: BodyShape,
        decoded: DecodedBatch,
    ) -> Result<Accepted, IngestError> {
        count_decoded(&self.metrics, &decoded);
        let accepted = decoded.batch.num_rows();
        if accepted > 0 {
            let raw = match (self.ingest.wants_raw(), shape) {
                (false, _) => Vec::new(),
                (true, BodyShape::Single) => vec![body],
                (true, BodyShape::Batch) => accepted_raw(body, &decoded.rejected),
            };
            self.ingest.ingest(decoded.batch, &raw).await?;
        }
        Ok(Accepted {
            accepted,
            rejected: decoded.rejected,
        })
    }
}
