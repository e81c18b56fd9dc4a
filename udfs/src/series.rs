//! Helpers for the aggregates that need a whole (ordered) series: `spearman_corr`, `xcorr`,
//! `forecast`, `detect_seasonality`, `changepoints`.
//!
//! [`SeriesBuffer`] buffers rows `(key, v1, …, vk)`; rows where any column is NULL or a value
//! is NaN/±inf are skipped. Its partial-aggregation state is one `LIST<…>` per column, so
//! partial states from several partitions merge by concatenation; [`SeriesBuffer::sorted`]
//! orders the rows by key (stable) when evaluating.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, Schema};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::utils::format_state_name;
use datafusion::physical_expr::PhysicalExpr;

/// Buffered rows of an ordering key (optional) and `k` value columns.
#[derive(Debug, Default)]
pub struct SeriesBuffer {
    keyed: bool,
    keys: Vec<i64>,
    cols: Vec<Vec<f64>>,
}

impl SeriesBuffer {
    /// A buffer with an `Int64` key column (if `keyed`) and `n_values` `Float64` columns.
    pub fn new(keyed: bool, n_values: usize) -> Self {
        Self {
            keyed,
            keys: Vec::new(),
            cols: vec![Vec::new(); n_values],
        }
    }

    /// Number of buffered rows.
    pub fn len(&self) -> usize {
        self.cols.first().map_or(0, Vec::len)
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the valid rows of `arrays` = `[key?, v1, …, vk, …]` (extra trailing arrays,
    /// e.g. constant parameters, are ignored). The key is cast to `Int64`, values to `Float64`.
    pub fn update(&mut self, arrays: &[ArrayRef]) -> Result<()> {
        let k = self.cols.len();
        let start = usize::from(self.keyed);
        if arrays.len() < start + k {
            return exec_err!("expected at least {} arguments, got {}", start + k, arrays.len());
        }
        let key = if self.keyed {
            Some(cast(&arrays[0], &DataType::Int64)?)
        } else {
            None
        };
        let key = key.as_ref().map(|a| a.as_primitive::<Int64Type>());
        let vals = arrays[start..start + k]
            .iter()
            .map(|a| cast(a, &DataType::Float64))
            .collect::<Result<Vec<_>, _>>()?;
        let vals: Vec<_> = vals.iter().map(|a| a.as_primitive::<Float64Type>()).collect();
        let n = arrays[start].len();
        'rows: for row in 0..n {
            if let Some(key) = key
                && key.is_null(row)
            {
                continue;
            }
            for v in &vals {
                if v.is_null(row) || !v.value(row).is_finite() {
                    continue 'rows;
                }
            }
            if let Some(key) = key {
                self.keys.push(key.value(row));
            }
            for (c, v) in self.cols.iter_mut().zip(&vals) {
                c.push(v.value(row));
            }
        }
        Ok(())
    }

    /// The state: `[LIST<Int64> keys?, LIST<Float64> per column]`.
    pub fn state(&self) -> Vec<ScalarValue> {
        let mut out = Vec::with_capacity(self.cols.len() + 1);
        if self.keyed {
            let keys: Vec<ScalarValue> = self.keys.iter().map(|&k| ScalarValue::Int64(Some(k))).collect();
            out.push(ScalarValue::List(ScalarValue::new_list_nullable(
                &keys,
                &DataType::Int64,
            )));
        }
        for c in &self.cols {
            let vals: Vec<ScalarValue> = c.iter().map(|&v| ScalarValue::Float64(Some(v))).collect();
            out.push(ScalarValue::List(ScalarValue::new_list_nullable(
                &vals,
                &DataType::Float64,
            )));
        }
        out
    }

    /// The state fields matching [`SeriesBuffer::state`].
    pub fn state_fields(name: &str, keyed: bool, n_values: usize) -> Vec<FieldRef> {
        let mut out = Vec::new();
        let item = |dt| Arc::new(Field::new_list_field(dt, true));
        if keyed {
            out.push(
                Field::new(
                    format_state_name(name, "keys"),
                    DataType::List(item(DataType::Int64)),
                    true,
                )
                .into(),
            );
        }
        for i in 0..n_values {
            out.push(
                Field::new(
                    format_state_name(name, &format!("v{i}")),
                    DataType::List(item(DataType::Float64)),
                    true,
                )
                .into(),
            );
        }
        out
    }

    /// Merges partial states (as produced by [`SeriesBuffer::state`]).
    pub fn merge(&mut self, states: &[ArrayRef]) -> Result<()> {
        let start = usize::from(self.keyed);
        if states.len() != start + self.cols.len() {
            return exec_err!(
                "series state has {} columns, expected {}",
                states.len(),
                start + self.cols.len()
            );
        }
        let lists: Vec<_> = states.iter().map(|s| s.as_list::<i32>()).collect();
        for row in 0..lists[0].len() {
            if lists.iter().any(|l| l.is_null(row)) {
                continue;
            }
            if self.keyed {
                let keys = lists[0].value(row);
                self.keys
                    .extend(keys.as_primitive::<Int64Type>().values().iter().copied());
            }
            for (c, l) in self.cols.iter_mut().zip(&lists[start..]) {
                let v = l.value(row);
                c.extend(v.as_primitive::<Float64Type>().values().iter().copied());
            }
        }
        if self.keyed && self.keys.len() != self.len() {
            return exec_err!(
                "corrupt series state: {} keys for {} values",
                self.keys.len(),
                self.len()
            );
        }
        Ok(())
    }

    /// `(keys, columns)` sorted by key (stable; unkeyed buffers keep arrival order).
    pub fn sorted(&self) -> (Vec<i64>, Vec<Vec<f64>>) {
        if !self.keyed {
            return (Vec::new(), self.cols.clone());
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_by_key(|&i| self.keys[i]);
        let keys = idx.iter().map(|&i| self.keys[i]).collect();
        let cols = self.cols.iter().map(|c| idx.iter().map(|&i| c[i]).collect()).collect();
        (keys, cols)
    }

    /// Approximate heap size in bytes.
    pub fn size(&self) -> usize {
        std::mem::size_of::<Self>() + 8 * (self.keys.capacity() + self.cols.iter().map(Vec::capacity).sum::<usize>())
    }
}

/// Evaluates a constant argument expression (a literal, possibly folded) to a scalar.
pub fn constant_arg(fn_name: &str, arg_name: &str, expr: &Arc<dyn PhysicalExpr>) -> Result<ScalarValue> {
    let batch = RecordBatch::new_empty(Arc::new(Schema::empty()));
    match expr.evaluate(&batch) {
        Ok(ColumnarValue::Scalar(s)) => Ok(s),
        _ => plan_err!("{fn_name}: argument `{arg_name}` must be a constant"),
    }
}

/// The ordering-key types accepted (timestamps, dates and integers); returns the coerced type.
pub fn coerce_key(fn_name: &str, dt: &DataType) -> Result<DataType> {
    match dt {
        DataType::Timestamp(_, _) => Ok(dt.clone()),
        DataType::Date32 | DataType::Date64 => Ok(DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Millisecond,
            None,
        )),
        d if d.is_integer() => Ok(DataType::Int64),
        DataType::Null => Ok(DataType::Int64),
        other => plan_err!("{fn_name}: ordering key must be a timestamp, date or integer, got {other}"),
    }
}

/// Numeric value types accepted (coerced to Float64).
pub fn coerce_value(fn_name: &str, dt: &DataType) -> Result<DataType> {
    if dt.is_numeric() || dt == &DataType::Null {
        Ok(DataType::Float64)
    } else {
        plan_err!("{fn_name}: expected a numeric argument, got {dt}")
    }
}

/// Pearson correlation of two equally long slices; `None` if fewer than 2 pairs or a
/// zero-variance side.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}
