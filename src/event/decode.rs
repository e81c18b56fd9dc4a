//! JSON → Arrow `RecordBatch` decoding of events: the hot path of the product.
//!
//! Events are parsed into borrowed views (no `serde_json::Value`), validated field by field and
//! appended straight into Arrow builders. Validation is per event: a bad event is reported with
//! its index and reason while the good events of the same request are kept.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;

use super::builders::{Builders, Projection};
use super::fields;
use super::raw::{EventFields, RawEvent};
use super::reject::{RejectKind, Rejection};
use super::scan;
use super::shape::Shapes;
use super::validate::{Prescanned, parse_event};

pub use super::validate::{DEFAULT_SCHEMA_VERSION, SEVERITIES, STATUSES};

/// Which JSON reader finds an event's fields. Both feed the same validation and builders, so
/// they produce the same batches and the same rejections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DecoderKind {
    /// `serde_json` into borrowed `RawValue`s.
    Serde,
    /// The single-pass scanner ([`super::scan`]), falling back to serde for anything unusual.
    #[default]
    Scan,
}

impl std::str::FromStr for DecoderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "serde" => Ok(Self::Serde),
            "scan" | "scanner" => Ok(Self::Scan),
            other => Err(format!("unknown decoder `{other}` (serde, scan)")),
        }
    }
}

/// How an [`EventDecoder`] decodes: the reader and the columns built.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The JSON reader.
    pub kind: DecoderKind,
    /// Build only these columns (every event is still validated in full); `None`: all.
    pub projection: Option<Arc<Projection>>,
    /// Start from the event layouts earlier decoders learned on this thread and leave them
    /// for the next (so small HTTP requests and Kafka batches do not relearn them); `false`:
    /// a decoder that starts knowing no layout.
    pub reuse_layouts: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            kind: DecoderKind::default(),
            projection: None,
            reuse_layouts: true,
        }
    }
}

/// The outcome of decoding one request: the accepted events as one batch, and the rejects.
#[derive(Debug)]
pub struct DecodedBatch {
    /// Accepted events, in input order, with the `events` schema.
    pub batch: RecordBatch,
    /// Rejected events with index and reason, in input order.
    pub rejected: Vec<Rejection>,
    /// Number of events in the request (accepted + rejected).
    pub total: usize,
    /// How many of them each reader read.
    pub readers: ReaderCounts,
}

/// Events per reader of one decoded batch (`events_decoded_total{reader}`): a learned layout
/// is the fast path; the generic scanner reads events of a new layout; serde reads the rest
/// (escaped keys, invalid JSON, invalid UTF-8, or `--decoder serde`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReaderCounts {
    /// Read through a learned layout.
    pub layout: usize,
    /// Read by the generic scanner.
    pub scan: usize,
    /// Read by serde.
    pub serde: usize,
}

/// Errors that concern a whole request body rather than one event.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body holds no event.
    #[error("request body holds no event")]
    Empty,
    /// A JSON array body is not valid JSON as a whole, so its elements cannot be told apart.
    #[error("request body is not a valid JSON array: {0} (send NDJSON to get per-line errors)")]
    MalformedArray(String),
    /// Building the Arrow batch failed (a bug, never user input).
    #[error("building the Arrow batch failed: {0}")]
    Arrow(#[from] ArrowError),
}

/// Decodes many events into one `RecordBatch`.
pub struct EventDecoder {
    builders: Builders,
    kind: DecoderKind,
    ingest_time_us: i64,
    rejected: Vec<Rejection>,
    total: usize,
    scratch: Vec<u64>,
    /// Layouts learned from this decoder's events (see [`super::shape`]).
    shapes: Shapes,
    /// Whether to learn layouts (see [`Self::with_options`]).
    learn: bool,
    /// Whether the layouts go back to the thread's cache when the decoder is dropped.
    reuse: bool,
    /// Events read through a layout and by the scanner, this batch (serde: the rest).
    via_layout: usize,
    via_scan: usize,
}

impl EventDecoder {
    /// A decoder for about `rows` events totalling about `bytes` bytes, stamping each
    /// accepted event with `ingest_time_us`; the default reader, every column.
    pub fn new(rows: usize, bytes: usize, ingest_time_us: i64) -> Self {
        Self::with_options(rows, bytes, ingest_time_us, &DecodeOptions::default())
    }

    /// Like [`Self::new`] with a chosen reader and projection. A decoder for more than one
    /// event learns the layouts of the events it reads and reads later events of a known
    /// layout faster ([`super::shape`]); the results are the same either way.
    pub fn with_options(rows: usize, bytes: usize, ingest_time_us: i64, options: &DecodeOptions) -> Self {
        let builders = match &options.projection {
            Some(p) => Builders::with_capacity(rows, bytes, p),
            None => Builders::with_capacity(rows, bytes, &Projection::all()),
        };
        Self {
            builders,
            kind: options.kind,
            ingest_time_us,
            rejected: Vec::new(),
            total: 0,
            scratch: Vec::new(),
            shapes: if options.reuse_layouts {
                Shapes::from_thread()
            } else {
                Shapes::default()
            },
            // A decoder of one event would learn a layout it never reuses.
            learn: rows > 1,
            reuse: options.reuse_layouts,
            via_layout: 0,
            via_scan: 0,
        }
    }

    /// Decodes one event given as its JSON bytes. Returns `false` if it was rejected.
    pub fn push(&mut self, json: &[u8]) -> bool {
        if self.kind == DecoderKind::Scan
            && let Ok(text) = simdutf8::basic::from_utf8(json)
        {
            return self.push_str(text);
        }
        self.push_parsed(json, serde_json::from_slice::<RawEvent<'_>>(json))
    }

    /// Like [`Self::push`] for text already known to be UTF-8 (skips re-validation).
    pub fn push_str(&mut self, json: &str) -> bool {
        if self.kind == DecoderKind::Scan {
            let mut scanned = scan::Scanned::default();
            // A known layout first; else the generic walk, learning the layout on the way.
            let layout = self.shapes.read(json, &mut self.scratch, &mut scanned).is_some();
            let found = layout || {
                let mut c = scan::Cursor::new(json, &mut self.scratch);
                if self.learn && self.shapes.may_learn(&c) {
                    let mut learner = Shapes::learner(json);
                    let ok = scan::scan_with(&mut c, &mut scanned, &mut learner).is_some();
                    if ok {
                        self.shapes.learn(learner);
                    }
                    ok
                } else {
                    scan::scan_with(&mut c, &mut scanned, &mut scan::NoRecord).is_some()
                }
            };
            if found {
                if layout {
                    self.via_layout += 1;
                } else {
                    self.via_scan += 1;
                }
                let index = self.total;
                self.total += 1;
                return self.validate(index, &scanned.fields, &scanned.pre);
            }
        }
        self.push_parsed(json.as_bytes(), serde_json::from_str::<RawEvent<'_>>(json))
    }

    fn push_parsed(&mut self, json: &[u8], parsed: Result<RawEvent<'_>, serde_json::Error>) -> bool {
        let index = self.total;
        self.total += 1;
        // serde would also map a JSON array onto the struct's fields by position.
        let is_object = json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let env = match parsed {
            Ok(env) if is_object => env,
            Ok(_) => {
                self.reject(
                    index,
                    RejectKind::InvalidType,
                    "event must be a JSON object".to_string(),
                );
                return false;
            }
            Err(e) => {
                let (kind, reason) = if e.is_syntax() || e.is_eof() {
                    (RejectKind::MalformedJson, format!("malformed JSON: {e}"))
                } else if !is_object {
                    (RejectKind::InvalidType, "event must be a JSON object".to_string())
                } else {
                    (RejectKind::InvalidValue, format!("invalid event: {e}"))
                };
                self.reject(index, kind, reason);
                return false;
            }
        };
        self.validate(index, &EventFields::from(&env), &Prescanned::default())
    }

    #[inline(never)]
    fn validate(&mut self, index: usize, env: &EventFields<'_>, pre: &Prescanned<'_>) -> bool {
        match parse_event(env, pre) {
            Ok(parsed) => {
                self.builders.append(&parsed, self.ingest_time_us);
                true
            }
            Err(err) => {
                let label = |raw| fields::opt_string("", raw).ok().flatten().map(Cow::into_owned);
                self.rejected.push(Rejection {
                    index,
                    error_type: err.kind,
                    reason: err.reason,
                    source_module: label(env.source_module),
                    event_type: label(env.event_type),
                });
                false
            }
        }
    }

    fn reject(&mut self, index: usize, kind: RejectKind, reason: String) {
        self.rejected.push(Rejection {
            index,
            error_type: kind,
            reason,
            source_module: None,
            event_type: None,
        });
    }

    /// Events read through a learned layout so far.
    #[cfg(test)]
    pub(crate) fn shape_hits(&self) -> u64 {
        self.shapes.hits()
    }

    /// Layouts learned so far.
    #[cfg(test)]
    pub(crate) fn shapes_learned(&self) -> u32 {
        self.shapes.learned()
    }

    /// Finishes the batch and returns it with the rejects; the decoder can be reused.
    pub fn finish(&mut self) -> Result<DecodedBatch, BodyError> {
        let batch = self.builders.finish()?;
        let total = std::mem::replace(&mut self.total, 0);
        let (layout, scan) = (std::mem::take(&mut self.via_layout), std::mem::take(&mut self.via_scan));
        Ok(DecodedBatch {
            batch,
            rejected: std::mem::take(&mut self.rejected),
            total,
            readers: ReaderCounts {
                layout,
                scan,
                serde: total.saturating_sub(layout + scan),
            },
        })
    }
}

impl Drop for EventDecoder {
    fn drop(&mut self) {
        if self.reuse {
            self.shapes.leave_on_thread();
        }
    }
}

/// Decodes newline-delimited JSON: one event per non-blank line.
pub fn decode_ndjson(body: &[u8], ingest_time_us: i64) -> Result<DecodedBatch, BodyError> {
    decode_ndjson_with(body, ingest_time_us, &DecodeOptions::default())
}

/// [`decode_ndjson`] with a chosen reader and projection.
pub fn decode_ndjson_with(
    body: &[u8],
    ingest_time_us: i64,
    options: &DecodeOptions,
) -> Result<DecodedBatch, BodyError> {
    // Small bodies are counted (a one-event body should not learn a layout it never reuses);
    // large ones estimated.
    let estimate = if body.len() <= 4096 {
        body.split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .count()
    } else {
        body.len() / 512 + 1
    };
    let mut decoder = EventDecoder::with_options(estimate, body.len(), ingest_time_us, options);
    // Validate UTF-8 once for the whole body when possible; a body with invalid bytes falls
    // back to per-line validation so only the affected lines are rejected.
    let text = simdutf8::basic::from_utf8(body).ok();
    let mut start = 0;
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        let line = &body[start..end];
        if !line.iter().all(u8::is_ascii_whitespace) {
            match text {
                Some(t) => decoder.push_str(&t[start..end]),
                None => decoder.push(line),
            };
        }
        start = end + 1;
    }
    if decoder.total == 0 {
        return Err(BodyError::Empty);
    }
    decoder.finish()
}

/// Decodes a JSON array of events.
pub fn decode_json_array(body: &[u8], ingest_time_us: i64) -> Result<DecodedBatch, BodyError> {
    decode_json_array_with(body, ingest_time_us, &DecodeOptions::default())
}

/// [`decode_json_array`] with a chosen reader and projection.
pub fn decode_json_array_with(
    body: &[u8],
    ingest_time_us: i64,
    options: &DecodeOptions,
) -> Result<DecodedBatch, BodyError> {
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(body).map_err(|e| BodyError::MalformedArray(e.to_string()))?;
    if items.is_empty() {
        return Err(BodyError::Empty);
    }
    let mut decoder = EventDecoder::with_options(items.len(), body.len(), ingest_time_us, options);
    for item in items {
        decoder.push_str(item.get());
    }
    decoder.finish()
}

/// Decodes a batch body: a JSON array when its first non-blank byte is `[`, NDJSON otherwise.
pub fn decode_batch_body(body: &[u8], ingest_time_us: i64) -> Result<DecodedBatch, BodyError> {
    decode_batch_body_with(body, ingest_time_us, &DecodeOptions::default())
}

/// [`decode_batch_body`] with a chosen reader and projection.
pub fn decode_batch_body_with(
    body: &[u8],
    ingest_time_us: i64,
    options: &DecodeOptions,
) -> Result<DecodedBatch, BodyError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(BodyError::Empty),
        Some(b'[') => decode_json_array_with(body, ingest_time_us, options),
        Some(_) => decode_ndjson_with(body, ingest_time_us, options),
    }
}

/// Decodes a body holding exactly one event.
pub fn decode_single(body: &[u8], ingest_time_us: i64) -> Result<DecodedBatch, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let mut decoder = EventDecoder::new(1, body.len(), ingest_time_us);
    decoder.push(body);
    decoder.finish()
}
