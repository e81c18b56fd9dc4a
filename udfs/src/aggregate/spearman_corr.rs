//! `spearman_corr(x, y) -> DOUBLE`: Spearman rank correlation (Pearson correlation of the
//! ranks, ties get their average rank — scipy.stats.spearmanr).
//!
//! Rows where `x` or `y` is NULL, NaN or ±inf are skipped. Fewer than 2 remaining pairs, or a
//! constant side → NULL. Buffers the pairs of each group (O(n) memory).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

use super::series_udaf::{SeriesEval, accumulator, state_fields};
use crate::series::{SeriesBuffer, pearson};

/// Implementation of `spearman_corr`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SpearmanCorr {
    signature: Signature,
}

/// The `spearman_corr` aggregate.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(SpearmanCorr {
        signature: Signature::exact(vec![DataType::Float64; 2], Volatility::Immutable),
    }))
}

/// 1-based ranks with ties averaged.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman correlation of two equally long slices.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&average_ranks(x), &average_ranks(y))
}

impl AggregateUDFImpl for SpearmanCorr {
    fn name(&self) -> &str {
        "spearman_corr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        accumulator(SpearmanEval)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        state_fields::<SpearmanEval>(args)
    }
}

/// The result of `spearman_corr` over the buffered `(x, y)` pairs.
#[derive(Debug)]
struct SpearmanEval;

impl SeriesEval for SpearmanEval {
    const KEYED: bool = false;
    const VALUES: usize = 2;

    fn evaluate(&self, buf: &SeriesBuffer) -> Result<ScalarValue> {
        let (_, cols) = buf.sorted();
        Ok(ScalarValue::Float64(spearman(&cols[0], &cols[1])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(average_ranks(&[10.0, 20.0, 10.0, 5.0]), vec![2.5, 4.0, 2.5, 1.0]);
    }

    #[test]
    fn monotone_is_one() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [1.0, 8.0, 27.0, 64.0, 125.0];
        assert_eq!(spearman(&x, &y), Some(1.0));
        let rev: Vec<f64> = y.iter().rev().copied().collect();
        assert_eq!(spearman(&x, &rev), Some(-1.0));
        assert_eq!(spearman(&x, &[2.0; 5]), None);
    }
}
