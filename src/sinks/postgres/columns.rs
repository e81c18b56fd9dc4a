//! Arrow columns ↔ PostgreSQL columns: the SQL type of each Arrow type, whole columns bound as
//! one array parameter (`unnest($1::text[], ...)`), and arrays read back from rows.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};

use crate::sinks::SinkError;

/// The PostgreSQL representation of an Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    /// `bigint` (every integer type; unsigned values above i64::MAX are rejected).
    Int,
    /// `double precision` (floats).
    Float,
    /// `numeric` (decimals, sent as text).
    Numeric,
    /// `text`.
    Text,
    /// `boolean`.
    Bool,
    /// `timestamptz` (timestamps of any unit, stored in microseconds).
    Timestamp,
    /// `bytea` (binary: sketches and other states).
    Bytes,
}

impl PgKind {
    /// The kind of `t`, or why it cannot be stored.
    pub fn of(t: &DataType) -> Result<Self, String> {
        Ok(match t {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Self::Int,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Self::Float,
            DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => Self::Numeric,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Text,
            DataType::Boolean => Self::Bool,
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => Self::Timestamp,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                Self::Bytes
            }
            other => return Err(format!("type {other} has no PostgreSQL column mapping")),
        })
    }

    /// SQL type name.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Int => "bigint",
            Self::Float => "double precision",
            Self::Numeric => "numeric",
            Self::Text => "text",
            Self::Bool => "boolean",
            Self::Timestamp => "timestamptz",
            Self::Bytes => "bytea",
        }
    }

    /// Array cast for an `unnest` parameter.
    pub fn array_cast(self) -> &'static str {
        match self {
            Self::Int => "bigint[]",
            Self::Float => "float8[]",
            Self::Numeric => "text[]::numeric[]",
            Self::Text => "text[]",
            Self::Bool => "boolean[]",
            Self::Timestamp => "timestamptz[]",
            Self::Bytes => "bytea[]",
        }
    }

    /// Arrow type values of this kind travel as.
    fn wire_type(self) -> DataType {
        match self {
            Self::Int => DataType::Int64,
            Self::Float => DataType::Float64,
            Self::Numeric | Self::Text => DataType::Utf8,
            Self::Bool => DataType::Boolean,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Bytes => DataType::Binary,
        }
    }

    /// What a SELECT of a column of this kind must say so that [`read_column`] can decode it.
    pub fn select_expr(self, quoted: &str) -> String {
        match self {
            Self::Numeric => format!("{quoted}::text"),
            _ => quoted.to_string(),
        }
    }
}

/// One column as a bindable array.
#[derive(Debug)]
pub enum PgArray {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
    Timestamp(Vec<Option<DateTime<Utc>>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

fn cast_err(e: impl std::error::Error + Send + Sync + 'static) -> SinkError {
    SinkError::Internal(crate::error::ErrorDetail::context("column conversion", e))
}

/// Converts an Arrow column to the array bound for `kind`.
pub fn to_pg(column: &ArrayRef, kind: PgKind) -> Result<PgArray, SinkError> {
    let wire = cast(column, &kind.wire_type()).map_err(cast_err)?;
    Ok(match kind {
        PgKind::Int => PgArray::Int(wire.as_primitive::<Int64Type>().iter().collect()),
        PgKind::Float => PgArray::Float(wire.as_primitive::<Float64Type>().iter().collect()),
        PgKind::Numeric | PgKind::Text => {
            PgArray::Text(wire.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect())
        }
        PgKind::Bool => PgArray::Bool(wire.as_boolean().iter().collect()),
        PgKind::Timestamp => PgArray::Timestamp(
            wire.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .map(|v| v.and_then(DateTime::<Utc>::from_timestamp_micros))
                .collect(),
        ),
        PgKind::Bytes => PgArray::Bytes(wire.as_binary::<i32>().iter().map(|v| v.map(<[u8]>::to_vec)).collect()),
    })
}

/// Binds `array` as the next parameter of `query`.
pub fn bind<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, PgArguments>,
    array: PgArray,
) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
    match array {
        PgArray::Int(v) => query.bind(v),
        PgArray::Float(v) => query.bind(v),
        PgArray::Text(v) => query.bind(v),
        PgArray::Bool(v) => query.bind(v),
        PgArray::Timestamp(v) => query.bind(v),
        PgArray::Bytes(v) => query.bind(v),
    }
}

/// Reads column `index` of `rows` (selected with [`PgKind::select_expr`]) as an Arrow array of
/// type `target`.
pub fn read_column(rows: &[PgRow], index: usize, kind: PgKind, target: &DataType) -> Result<ArrayRef, SinkError> {
    let get = |e: sqlx::Error| SinkError::Internal(crate::error::ErrorDetail::context("reading stored state", e));
    let wire: ArrayRef = match kind {
        PgKind::Int => Arc::new(
            rows.iter()
                .map(|r| r.try_get::<Option<i64>, _>(index))
                .collect::<Result<Int64Array, _>>()
                .map_err(get)?,
        ),
        PgKind::Float => Arc::new(
            rows.iter()
                .map(|r| r.try_get::<Option<f64>, _>(index))
                .collect::<Result<Float64Array, _>>()
                .map_err(get)?,
        ),
        PgKind::Numeric | PgKind::Text => Arc::new(
            rows.iter()
                .map(|r| r.try_get::<Option<String>, _>(index))
                .collect::<Result<StringArray, _>>()
                .map_err(get)?,
        ),
        PgKind::Bool => Arc::new(
            rows.iter()
                .map(|r| r.try_get::<Option<bool>, _>(index))
                .collect::<Result<BooleanArray, _>>()
                .map_err(get)?,
        ),
        PgKind::Timestamp => {
            let values = rows
                .iter()
                .map(|r| {
                    r.try_get::<Option<DateTime<Utc>>, _>(index)
                        .map(|v| v.map(|t| t.timestamp_micros()))
                })
                .collect::<Result<TimestampMicrosecondArray, _>>()
                .map_err(get)?;
            Arc::new(values.with_timezone("UTC"))
        }
        PgKind::Bytes => {
            let values = rows
                .iter()
                .map(|r| r.try_get::<Option<Vec<u8>>, _>(index))
                .collect::<Result<Vec<_>, _>>()
                .map_err(get)?;
            Arc::new(BinaryArray::from_iter(values))
        }
    };
    if wire.data_type() == target {
        return Ok(wire);
    }
    cast(&wire, target).map_err(cast_err)
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, UInt64Array};

    #[test]
    fn kinds_and_wire_conversions() {
        assert_eq!(PgKind::of(&DataType::UInt64), Ok(PgKind::Int));
        assert_eq!(PgKind::of(&DataType::Utf8View), Ok(PgKind::Text));
        assert!(PgKind::of(&DataType::new_list(DataType::Float64, true)).is_err());
        let col: ArrayRef = Arc::new(UInt64Array::from(vec![Some(3), None]));
        match to_pg(&col, PgKind::Int) {
            Ok(PgArray::Int(v)) => assert_eq!(v, vec![Some(3), None]),
            other => panic!("unexpected {other:?}"),
        }
        let dec: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(12345)])
                .with_precision_and_scale(10, 2)
                .expect("valid decimal"),
        );
        match to_pg(&dec, PgKind::Numeric) {
            Ok(PgArray::Text(v)) => assert_eq!(v, vec![Some("123.45".to_string())]),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
