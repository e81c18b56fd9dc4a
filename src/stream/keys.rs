//! Group keys as bytes: the values of a query's `GROUP BY` expressions other than the window
//! (Arrow's row format), so state rows, sessions and emitted output rows can be matched by key.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};

use super::CqError;

/// An encoded group key (empty for a query without keys).
pub type Key = Arc<[u8]>;

/// Encodes and decodes the key columns of one query.
#[derive(Debug)]
pub struct KeyCodec {
    /// `None` when the query groups by the window only.
    converter: Option<RowConverter>,
}

impl KeyCodec {
    /// A codec for key columns of these types.
    pub fn new(types: &[DataType]) -> Result<Self, CqError> {
        let converter = if types.is_empty() {
            None
        } else {
            Some(
                RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())
                    .map_err(CqError::internal)?,
            )
        };
        Ok(Self { converter })
    }

    /// The key of every row of `batch`, read from the columns at `indices`.
    pub fn encode(&self, batch: &RecordBatch, indices: &[usize]) -> Result<Vec<Key>, CqError> {
        let Some(converter) = &self.converter else {
            return Ok(vec![Key::from(Vec::new()); batch.num_rows()]);
        };
        let columns: Vec<ArrayRef> = indices.iter().map(|i| Arc::clone(batch.column(*i))).collect();
        let rows = converter.convert_columns(&columns).map_err(CqError::internal)?;
        Ok(rows.iter().map(|r| Key::from(r.as_ref())).collect())
    }

    /// Key columns holding `keys`, in order.
    pub fn decode(&self, keys: &[Key]) -> Result<Vec<ArrayRef>, CqError> {
        let Some(converter) = &self.converter else {
            return Ok(Vec::new());
        };
        let parser = converter.parser();
        converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))
            .map_err(CqError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};

    #[test]
    fn keys_round_trip_and_match_equal_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("x"), None, Some("x")])),
                Arc::new(Int64Array::from(vec![1, 2, 1])),
            ],
        )
        .expect("batch");
        let codec = KeyCodec::new(&[DataType::Utf8, DataType::Int64]).expect("codec");
        let keys = codec.encode(&batch, &[0, 1]).expect("encode");
        assert_eq!(keys[0], keys[2]);
        assert_ne!(keys[0], keys[1]);
        let cols = codec.decode(&keys[..2]).expect("decode");
        assert_eq!(
            cols[0].as_string::<i32>().iter().collect::<Vec<_>>(),
            vec![Some("x"), None]
        );
        assert_eq!(cols[1].as_primitive::<Int64Type>().values().to_vec(), vec![1, 2]);
        let none = KeyCodec::new(&[]).expect("codec");
        assert_eq!(none.encode(&batch, &[]).expect("encode").len(), 3);
        assert!(none.decode(&keys).expect("decode").is_empty());
    }
}
