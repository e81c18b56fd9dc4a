//! One accumulator design shared by every sketch aggregate: the input is either raw values
//! (`Float64`) or serialized sketches (`Binary`), the intermediate state is always one
//! serialized sketch, and the output is either the serialized sketch or one quantile.
//!
//! [`SketchGroupsAccumulator`] keeps one [`DDSketch`] per group (no sorting, no buffering of
//! values); [`SketchAccumulator`] is the single-group form used without GROUP BY.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};

use super::DDSketch;

/// What an aggregate consumes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SketchInput {
    /// Raw numeric values (coerced to Float64).
    Values,
    /// Serialized sketches (Binary), merged.
    Sketches,
}

/// What an aggregate returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SketchOutput {
    /// The serialized sketch (Binary); NULL for a group without any counted value.
    Sketch,
    /// The approximate quantile `q` (Float64); NULL for a group without any counted value.
    Quantile(f64),
}

impl SketchOutput {
    /// The SQL result type.
    pub fn data_type(&self) -> DataType {
        match self {
            SketchOutput::Sketch => DataType::Binary,
            SketchOutput::Quantile(_) => DataType::Float64,
        }
    }
}

fn add_values(sketch: &mut DDSketch, values: &ArrayRef) -> Result<()> {
    let Some(values) = values.as_primitive_opt::<Float64Type>() else {
        return exec_err!("sketch input must be Float64, got {}", values.data_type());
    };
    for x in values.iter().flatten() {
        sketch.add(x);
    }
    Ok(())
}

fn merge_sketches(sketch: &mut DDSketch, states: &ArrayRef) -> Result<()> {
    let Some(states) = states.as_binary_opt::<i32>() else {
        return exec_err!("sketch state must be Binary, got {}", states.data_type());
    };
    for bytes in states.iter().flatten() {
        sketch.merge(&DDSketch::from_bytes(bytes)?)?;
    }
    Ok(())
}

fn output_scalar(sketch: &DDSketch, output: SketchOutput) -> Result<ScalarValue> {
    if sketch.is_empty() {
        return ScalarValue::try_from(output.data_type());
    }
    Ok(match output {
        SketchOutput::Sketch => ScalarValue::Binary(Some(sketch.to_bytes())),
        SketchOutput::Quantile(q) => ScalarValue::Float64(sketch.quantile(q)?),
    })
}

/// Single-group sketch accumulator.
#[derive(Debug)]
pub struct SketchAccumulator {
    sketch: DDSketch,
    input: SketchInput,
    output: SketchOutput,
}

impl SketchAccumulator {
    /// A new empty accumulator.
    pub fn new(input: SketchInput, output: SketchOutput) -> Self {
        Self {
            sketch: DDSketch::default(),
            input,
            output,
        }
    }
}

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match self.input {
            SketchInput::Values => add_values(&mut self.sketch, &values[0]),
            SketchInput::Sketches => merge_sketches(&mut self.sketch, &values[0]),
        }
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        output_scalar(&self.sketch, self.output)
    }

    fn size(&self) -> usize {
        self.sketch.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.sketch.to_bytes()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        merge_sketches(&mut self.sketch, &states[0])
    }
}

/// One sketch per group.
#[derive(Debug)]
pub struct SketchGroupsAccumulator {
    sketches: Vec<DDSketch>,
    input: SketchInput,
    output: SketchOutput,
}

impl SketchGroupsAccumulator {
    /// A new accumulator with no groups yet.
    pub fn new(input: SketchInput, output: SketchOutput) -> Self {
        Self {
            sketches: Vec::new(),
            input,
            output,
        }
    }

    fn resize(&mut self, total_num_groups: usize) {
        if self.sketches.len() < total_num_groups {
            self.sketches.resize_with(total_num_groups, DDSketch::default);
        }
    }

    fn merge_into_groups(
        &mut self,
        states: &ArrayRef,
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let Some(states) = states.as_binary_opt::<i32>() else {
            return exec_err!("sketch state must be Binary, got {}", states.data_type());
        };
        for (row, &g) in group_indices.iter().enumerate() {
            if !selected(filter, row) || states.is_null(row) {
                continue;
            }
            self.sketches[g].merge(&DDSketch::from_bytes(states.value(row))?)?;
        }
        Ok(())
    }
}

#[inline]
fn selected(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

fn serialize_all(sketches: &[DDSketch], nullable_empty: bool) -> ArrayRef {
    let mut b = BinaryBuilder::with_capacity(sketches.len(), sketches.len() * 64);
    let mut buf = Vec::new();
    for s in sketches {
        if nullable_empty && s.is_empty() {
            b.append_null();
        } else {
            buf.clear();
            s.write_to(&mut buf);
            b.append_value(&buf);
        }
    }
    Arc::new(b.finish())
}

impl GroupsAccumulator for SketchGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        match self.input {
            SketchInput::Sketches => self.merge_into_groups(&values[0], group_indices, opt_filter),
            SketchInput::Values => {
                let Some(arr) = values[0].as_primitive_opt::<Float64Type>() else {
                    return exec_err!("sketch input must be Float64, got {}", values[0].data_type());
                };
                let xs = arr.values();
                if arr.null_count() == 0 && opt_filter.is_none() {
                    for (&g, &x) in group_indices.iter().zip(xs.iter()) {
                        self.sketches[g].add(x);
                    }
                } else {
                    for (row, &g) in group_indices.iter().enumerate() {
                        if arr.is_valid(row) && selected(opt_filter, row) {
                            self.sketches[g].add(xs[row]);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sketches = emit_to.take_needed(&mut self.sketches);
        match self.output {
            SketchOutput::Sketch => Ok(serialize_all(&sketches, true)),
            SketchOutput::Quantile(q) => {
                let out = sketches
                    .iter()
                    .map(|s| s.quantile(q))
                    .collect::<Result<Float64Array>>()?;
                Ok(Arc::new(out))
            }
        }
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let sketches = emit_to.take_needed(&mut self.sketches);
        Ok(vec![serialize_all(&sketches, false)])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.resize(total_num_groups);
        self.merge_into_groups(&values[0], group_indices, None)
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let input = &values[0];
        let mut b = BinaryBuilder::with_capacity(input.len(), input.len() * 48);
        match self.input {
            SketchInput::Values => {
                let Some(arr) = input.as_primitive_opt::<Float64Type>() else {
                    return exec_err!("sketch input must be Float64, got {}", input.data_type());
                };
                let mut buf = Vec::new();
                for row in 0..arr.len() {
                    let mut s = DDSketch::default();
                    if arr.is_valid(row) && selected(opt_filter, row) {
                        s.add(arr.value(row));
                    }
                    buf.clear();
                    s.write_to(&mut buf);
                    b.append_value(&buf);
                }
            }
            SketchInput::Sketches => {
                let Some(arr) = input.as_binary_opt::<i32>() else {
                    return exec_err!("sketch state must be Binary, got {}", input.data_type());
                };
                for row in 0..arr.len() {
                    if arr.is_valid(row) && selected(opt_filter, row) {
                        b.append_value(arr.value(row));
                    } else {
                        b.append_null();
                    }
                }
            }
        }
        Ok(vec![Arc::new(b.finish())])
    }

    fn size(&self) -> usize {
        self.sketches.iter().map(DDSketch::size).sum::<usize>()
            + self.sketches.capacity() * std::mem::size_of::<DDSketch>()
    }
}
