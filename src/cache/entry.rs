//! A cached answer and its stored form: a small header, then the batches as an Arrow IPC
//! stream compressed with zstd (never JSON text: one entry serves every output format and the
//! wire protocol, and decodes without parsing).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};

const MAGIC: &[u8; 4] = b"HQC1";
const HEADER: usize = 4 + 1 + 8;

/// A query's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Output schema (also for empty answers).
    pub schema: SchemaRef,
    /// Batches, in order.
    pub batches: Vec<RecordBatch>,
    /// Rows in `batches`.
    pub row_count: usize,
    /// Whether rows were cut at the caller's row limit.
    pub truncated: bool,
}

impl Answer {
    /// Runs `df` to an answer, keeping at most `max_rows` rows and refusing more than
    /// `max_bytes` (see [`crate::query::collect_limited`]).
    pub async fn collect(
        df: datafusion::dataframe::DataFrame,
        max_rows: Option<usize>,
        max_bytes: Option<usize>,
    ) -> Result<Self, crate::query::QueryError> {
        let (schema, batches, row_count, truncated) = crate::query::collect_limited(df, max_rows, max_bytes).await?;
        Ok(Self {
            schema,
            batches,
            row_count,
            truncated,
        })
    }
}

impl From<crate::query::QueryResult> for Answer {
    fn from(r: crate::query::QueryResult) -> Self {
        Self {
            schema: r.schema,
            batches: r.batches,
            row_count: r.row_count,
            truncated: r.truncated,
        }
    }
}

/// Encodes `answer` for the cache.
pub fn encode(answer: &Answer) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::with_capacity(HEADER + 1024);
    out.extend_from_slice(MAGIC);
    out.push(u8::from(answer.truncated));
    out.extend_from_slice(&(answer.row_count as u64).to_le_bytes());
    let options = IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD))?;
    let mut writer = StreamWriter::try_new_with_options(&mut out, &answer.schema, options)?;
    for batch in &answer.batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Decodes an entry written by [`encode`]; anything else is an error (treated as a miss).
pub fn decode(bytes: &[u8]) -> Result<Answer, ArrowError> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(ArrowError::ParseError("not a Hub cache entry".into()));
    }
    let truncated = bytes[4] != 0;
    let mut rows = [0u8; 8];
    rows.copy_from_slice(&bytes[5..HEADER]);
    let reader = StreamReader::try_new(&bytes[HEADER..], None)?;
    let schema: SchemaRef = Arc::clone(&reader.schema());
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(Answer {
        schema,
        batches,
        row_count: usize::try_from(u64::from_le_bytes(rows)).unwrap_or(usize::MAX),
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn round_trip_and_refuses_garbage() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("model", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["gpt-4o"; 1000])),
                Arc::new(Int64Array::from_iter((0..1000).map(|i| (i % 7 != 0).then_some(i)))),
            ],
        )
        .expect("batch");
        let answer = Answer {
            schema: schema.clone(),
            batches: vec![batch.clone()],
            row_count: 1000,
            truncated: true,
        };
        let bytes = encode(&answer).expect("encode");
        assert!(
            bytes.len() < batch.get_array_memory_size() / 4,
            "compressed: {} bytes",
            bytes.len()
        );
        let back = decode(&bytes).expect("decode");
        assert_eq!(back.batches, vec![batch]);
        assert_eq!(back.schema, schema);
        assert_eq!((back.row_count, back.truncated), (1000, true));
        let empty = Answer {
            schema: schema.clone(),
            batches: vec![],
            row_count: 0,
            truncated: false,
        };
        let back = decode(&encode(&empty).expect("encode")).expect("decode");
        assert_eq!((back.batches.len(), back.schema), (0, schema));
        assert!(decode(b"HQC1").is_err());
        assert!(decode(b"{\"rows\": []}").is_err());
        assert!(decode(&bytes[..bytes.len() / 2]).is_err(), "a cut entry is refused");
    }
}
