//! `detect_seasonality(ts, value) -> LIST<BIGINT>`: season lengths (in rows, strongest first)
//! of the series ordered by `ts`.
//!
//! Candidates are the peaks of the augurs periodogram (Welch's method, `augurs-seasons`, peaks
//! within 90% of the strongest) of the mean-removed series. The periodogram's resolution is
//! coarse (FFT bins), so each candidate is refined to the lag with the highest autocorrelation
//! between its neighbouring bins, and kept only if that autocorrelation is at least
//! [`MIN_ACF`] — white noise always has *some* periodogram peak, it has no autocorrelation.
//!
//! Rows with NULL `ts` or NULL/NaN value are skipped. No rows → NULL; fewer than 4 points, a
//! constant series or no significant peak → empty list. Only periods up to half the series
//! length can be found, so give it at least two full cycles.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

use augurs_seasons::PeriodogramDetector;

use super::series_udaf::{SeriesEval, accumulator, coerce_args, state_fields};
use crate::series::SeriesBuffer;

/// Minimum autocorrelation at the refined lag for a period to be reported.
pub const MIN_ACF: f64 = 0.3;

/// Sample autocorrelation of `y` (already mean-removed) at `lag`.
pub fn acf(y: &[f64], lag: usize) -> f64 {
    let denom: f64 = y.iter().map(|v| v * v).sum();
    if lag >= y.len() || denom <= 0.0 {
        return 0.0;
    }
    y.iter().zip(&y[lag..]).map(|(a, b)| a * b).sum::<f64>() / denom
}

/// Season lengths of `y`, strongest first (see the module documentation).
pub fn detect_periods(y: &[f64]) -> Vec<u32> {
    if y.len() < 8 {
        return Vec::new();
    }
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let centred: Vec<f64> = y.iter().map(|v| v - mean).collect();
    let detector = PeriodogramDetector::default();
    let mut peaks: Vec<_> = detector.periodogram(&centred).peaks(0.9).collect();
    peaks.reverse(); // augurs yields them weakest first
    let max_lag = (y.len() / 2) as u32;
    let mut out: Vec<u32> = Vec::new();
    for p in peaks {
        let lo = p.next_period.max(2).min(p.period);
        let hi = if p.prev_period == 0 {
            max_lag
        } else {
            p.prev_period.min(max_lag)
        };
        let best = (lo..=hi.max(lo))
            .filter(|&l| (l as usize) < y.len())
            .map(|l| (l, acf(&centred, l as usize)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((lag, r)) = best
            && r >= MIN_ACF
            && !out.contains(&lag)
        {
            out.push(lag);
        }
    }
    out
}

/// Implementation of `detect_seasonality`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DetectSeasonality {
    signature: Signature,
}

/// The `detect_seasonality` aggregate.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(DetectSeasonality {
        signature: Signature::user_defined(Volatility::Immutable),
    }))
}

impl AggregateUDFImpl for DetectSeasonality {
    fn name(&self) -> &str {
        "detect_seasonality"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_args("detect_seasonality(ts, value)", 2..=2, 1, &[], arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(result_type())
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        accumulator(SeasonalityEval)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        state_fields::<SeasonalityEval>(args)
    }
}

/// `LIST<BIGINT>`.
fn result_type() -> DataType {
    DataType::new_list(DataType::Int64, true)
}

/// The result of `detect_seasonality` over the buffered `(ts, value)` rows.
#[derive(Debug)]
struct SeasonalityEval;

impl SeriesEval for SeasonalityEval {
    const KEYED: bool = true;
    const VALUES: usize = 1;

    fn evaluate(&self, buf: &SeriesBuffer) -> Result<ScalarValue> {
        if buf.is_empty() {
            return ScalarValue::try_from(result_type());
        }
        let (_, cols) = buf.sorted();
        let y = &cols[0];
        let constant = y.iter().all(|&v| v == y[0]);
        let periods: Vec<ScalarValue> = if constant {
            Vec::new()
        } else {
            detect_periods(y)
                .into_iter()
                .map(|p| ScalarValue::Int64(Some(i64::from(p))))
                .collect()
        };
        Ok(ScalarValue::List(ScalarValue::new_list_nullable(
            &periods,
            &DataType::Int64,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_period_is_exact_and_noise_has_none() {
        let y: Vec<f64> = (0..192)
            .map(|i| 100.0 + 20.0 * (2.0 * std::f64::consts::PI * i as f64 / 24.0).sin())
            .collect();
        assert_eq!(detect_periods(&y).first(), Some(&24));
        // deterministic pseudo-noise
        let mut s = 12345u64;
        let noise: Vec<f64> = (0..192)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 33) as f64 / (1u64 << 31) as f64
            })
            .collect();
        assert_eq!(detect_periods(&noise), Vec::<u32>::new());
    }
}
