//! What the series aggregates (`spearman_corr`, `xcorr`, `forecast`, `detect_seasonality`,
//! `changepoints`) share: the `Accumulator` over a [`SeriesBuffer`] (update, state, merge and
//! size are the buffer's; only the final result differs, see [`SeriesEval`]), its state fields,
//! and the coercion of `(ts, value…, constant…)` arguments.

use std::ops::RangeInclusive;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::Accumulator;
use datafusion::logical_expr::function::StateFieldsArgs;

use crate::series::{SeriesBuffer, coerce_key, coerce_value};

/// The part of a series aggregate that is its own: the layout of the buffered rows and the
/// result computed from them (plus whatever constant arguments it needs, as fields).
pub(super) trait SeriesEval: std::fmt::Debug + Send + Sync + 'static {
    /// Whether rows carry a `ts` key (the first argument) and are ordered by it.
    const KEYED: bool;
    /// How many value columns are buffered.
    const VALUES: usize;

    /// The aggregate's result for the buffered rows of a group.
    fn evaluate(&self, buf: &SeriesBuffer) -> Result<ScalarValue>;
}

/// Buffers a group's series and hands it to `E` for the result.
#[derive(Debug)]
struct SeriesAccumulator<E> {
    buf: SeriesBuffer,
    eval: E,
}

/// The accumulator of a series aggregate computing its result with `eval`.
pub(super) fn accumulator<E: SeriesEval>(eval: E) -> Result<Box<dyn Accumulator>> {
    Ok(Box::new(SeriesAccumulator {
        buf: SeriesBuffer::new(E::KEYED, E::VALUES),
        eval,
    }))
}

/// The intermediate state fields of [`accumulator`]`::<E>`.
pub(super) fn state_fields<E: SeriesEval>(args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
    Ok(SeriesBuffer::state_fields(args.name, E::KEYED, E::VALUES))
}

impl<E: SeriesEval> Accumulator for SeriesAccumulator<E> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.buf.update(values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.eval.evaluate(&self.buf)
    }

    fn size(&self) -> usize {
        self.buf.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.buf.state())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.buf.merge(states)
    }
}

/// Argument types of a keyed series aggregate called as `usage` (`"name(ts, value, …)"`):
/// `arity` arguments, the `ts` key, `values` value columns, then as many of `constants` as
/// there are further arguments. A wrong argument count is a planning error.
pub(super) fn coerce_args(
    usage: &str,
    arity: RangeInclusive<usize>,
    values: usize,
    constants: &[DataType],
    arg_types: &[DataType],
) -> Result<Vec<DataType>> {
    let n = arg_types.len();
    if !arity.contains(&n) {
        let takes = if arity.start() == arity.end() {
            arity.start().to_string()
        } else {
            format!("{} to {}", arity.start(), arity.end())
        };
        return plan_err!("{usage} takes {takes} arguments, got {n}");
    }
    let name = usage.split('(').next().unwrap_or(usage);
    let mut out = vec![coerce_key(name, &arg_types[0])?];
    for dt in &arg_types[1..=values] {
        out.push(coerce_value(name, dt)?);
    }
    out.extend_from_slice(&constants[..n - 1 - values]);
    Ok(out)
}
