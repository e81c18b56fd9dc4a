//! Which rows of a topic a subscriber sees: its tenant's (for tenant-bound callers) and those
//! matching its `column=value` filters.

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, Scalar, StringArray, UInt32Array};
use datafusion::arrow::compute::kernels::{boolean, cmp};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;

use crate::query::tenant::TENANT_COLUMN;

/// Equality conditions on columns, all of which a row must meet.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    equals: Vec<(String, String)>,
}

impl RowFilter {
    /// Conditions on `schema`'s columns; a tenant-bound caller also gets `tenant = <its tenant>`
    /// and may only subscribe to topics whose rows carry a tenant. Errors name the problem.
    pub fn new(schema: &SchemaRef, tenant: Option<&str>, equals: Vec<(String, String)>) -> Result<Self, String> {
        for (column, _) in &equals {
            let field = schema.field_with_name(column).map_err(|_| {
                let names: Vec<&str> = schema
                    .fields()
                    .iter()
                    .filter(|f| filterable(f.data_type()))
                    .map(|f| f.name().as_str())
                    .collect();
                format!(
                    "`{column}` is not a column of this topic; filter on one of: {}",
                    names.join(", ")
                )
            })?;
            if !filterable(field.data_type()) {
                return Err(format!(
                    "`{column}` ({}) cannot be filtered on; use a text, integer or boolean column",
                    field.data_type()
                ));
            }
        }
        let mut equals = equals;
        if let Some(tenant) = tenant {
            if schema.field_with_name(TENANT_COLUMN).is_err() {
                return Err("this topic's rows carry no tenant; a tenant-bound key may only follow topics with a `tenant` column".into());
            }
            equals.retain(|(c, _)| c != TENANT_COLUMN);
            equals.push((TENANT_COLUMN.to_string(), tenant.to_string()));
        }
        Ok(Self { equals })
    }

    /// Whether every row passes.
    pub fn is_empty(&self) -> bool {
        self.equals.is_empty()
    }

    /// The rows of `batch` that pass, and their positions in `batch`.
    pub fn apply(&self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<u32>), ArrowError> {
        let rows = u32::try_from(batch.num_rows())
            .map_err(|_| ArrowError::InvalidArgumentError("batch too large to filter".into()))?;
        if self.equals.is_empty() {
            return Ok((batch.clone(), (0..rows).collect()));
        }
        let mut mask: Option<BooleanArray> = None;
        for (column, value) in &self.equals {
            let Some(array) = batch.column_by_name(column) else {
                return Ok((batch.slice(0, 0), Vec::new()));
            };
            let text = cast(array, &DataType::Utf8)?;
            let matches = cmp::eq(&text, &Scalar::new(StringArray::from(vec![value.as_str()])))?;
            mask = Some(match mask {
                Some(m) => boolean::and(&m, &matches)?,
                None => matches,
            });
        }
        let Some(mask) = mask else {
            return Ok((batch.clone(), (0..rows).collect()));
        };
        let positions: Vec<u32> = (0..rows)
            .filter(|i| mask.is_valid(*i as usize) && mask.value(*i as usize))
            .collect();
        let indices = UInt32Array::from(positions.clone());
        Ok((take_record_batch(batch, &indices)?, positions))
    }
}

/// Types a `column=value` filter compares as text.
fn filterable(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
        )
}

/// A schema shared by tests.
#[cfg(test)]
fn test_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;
    Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, true),
        Field::new("tenant", DataType::Utf8, true),
        Field::new("tokens", DataType::Int64, true),
        Field::new("cost", DataType::Float64, true),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            test_schema(),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("a"), None])),
                Arc::new(StringArray::from(vec![Some("t1"), Some("t1"), Some("t2"), Some("t1")])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(Float64Array::from(vec![0.1, 0.2, 0.3, 0.4])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn rows_pass_when_every_condition_matches() {
        let f = RowFilter::new(&test_schema(), None, vec![("model".into(), "a".into())]).expect("filter");
        let (rows, positions) = f.apply(&batch()).expect("apply");
        assert_eq!(positions, vec![0, 2]);
        assert_eq!(rows.num_rows(), 2);
        let f = RowFilter::new(&test_schema(), Some("t1"), vec![("model".into(), "a".into())]).expect("filter");
        assert_eq!(f.apply(&batch()).expect("apply").1, vec![0]);
        let f = RowFilter::new(&test_schema(), None, vec![("tokens".into(), "4".into())]).expect("filter");
        assert_eq!(f.apply(&batch()).expect("apply").1, vec![3]);
    }

    #[test]
    fn a_tenant_cannot_widen_its_filter() {
        let f = RowFilter::new(&test_schema(), Some("t2"), vec![("tenant".into(), "t1".into())]).expect("filter");
        assert_eq!(f.apply(&batch()).expect("apply").1, vec![2]);
    }

    #[test]
    fn bad_filters_name_the_problem() {
        let e = RowFilter::new(&test_schema(), None, vec![("nope".into(), "x".into())]).expect_err("unknown");
        assert!(
            e.contains("`nope` is not a column") && e.contains("model, tenant, tokens"),
            "{e}"
        );
        let e = RowFilter::new(&test_schema(), None, vec![("cost".into(), "1".into())]).expect_err("float");
        assert!(e.contains("`cost` (Float64) cannot be filtered"), "{e}");
        use datafusion::arrow::datatypes::{Field, Schema};
        let untenanted = Arc::new(Schema::new(vec![Field::new("model", DataType::Utf8, true)]));
        let e = RowFilter::new(&untenanted, Some("t1"), vec![]).expect_err("no tenant column");
        assert!(e.contains("carry no tenant"), "{e}");
    }
}
