//! Query result encodings: JSON (default), CSV and Arrow IPC stream, chosen by `Accept`.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder as JsonWriterBuilder};
use serde::Serialize;

/// MIME type of the Arrow IPC stream format.
pub const ARROW_STREAM_MIME: &str = "application/vnd.apache.arrow.stream";

/// A result encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// `application/json`: an object with `columns`, `rows` (array of objects), `row_count`.
    Json,
    /// `text/csv` with a header line.
    Csv,
    /// `application/vnd.apache.arrow.stream`.
    ArrowStream,
}

impl ResultFormat {
    /// Picks the format from an `Accept` header: the first listed type we support wins;
    /// missing, `*/*` or unsupported types give JSON.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let Some(accept) = accept else { return Self::Json };
        for part in accept.split(',') {
            let mime = part.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            match mime.as_str() {
                "application/json" | "*/*" => return Self::Json,
                "text/csv" => return Self::Csv,
                ARROW_STREAM_MIME => return Self::ArrowStream,
                _ => {}
            }
        }
        Self::Json
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::ArrowStream => ARROW_STREAM_MIME,
        }
    }
}

/// A column in the JSON result header.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Arrow data type, as DataFusion prints it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether the column may hold nulls.
    pub nullable: bool,
}

/// Column descriptions of a schema.
pub fn columns(schema: &SchemaRef) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// Rows as a JSON array of objects (nulls written explicitly), e.g. `[{"a":1,"b":null}]`.
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut writer = JsonWriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut buf);
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    if buf.is_empty() {
        buf.extend_from_slice(b"[]");
    }
    Ok(buf)
}

/// Rows as CSV with a header (the header is written even when there are no rows).
pub fn csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    if batches.iter().all(|b| b.num_rows() == 0) {
        let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        buf.extend_from_slice(header.join(",").as_bytes());
        buf.push(b'\n');
        return Ok(buf);
    }
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(&mut buf);
    for batch in batches {
        writer.write(batch)?;
    }
    drop(writer);
    Ok(buf)
}

/// Rows as an Arrow IPC stream (schema message, then batches).
pub fn arrow_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut buf, schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_negotiation() {
        assert_eq!(ResultFormat::from_accept(None), ResultFormat::Json);
        assert_eq!(ResultFormat::from_accept(Some("text/csv")), ResultFormat::Csv);
        assert_eq!(
            ResultFormat::from_accept(Some("text/html, text/csv;q=0.9")),
            ResultFormat::Csv
        );
        assert_eq!(
            ResultFormat::from_accept(Some(ARROW_STREAM_MIME)),
            ResultFormat::ArrowStream
        );
        assert_eq!(ResultFormat::from_accept(Some("*/*")), ResultFormat::Json);
        assert_eq!(ResultFormat::from_accept(Some("image/png")), ResultFormat::Json);
    }
}
