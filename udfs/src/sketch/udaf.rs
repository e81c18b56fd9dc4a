//! [`SketchUdaf`]: the `AggregateUDFImpl` behind every sketch aggregate. Each SQL function is
//! a constructor in its own file under `aggregate/`.

use std::hash::{Hash, Hasher};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, GroupsAccumulator, Signature, Volatility};

use super::{SketchAccumulator, SketchGroupsAccumulator, SketchInput, SketchOutput};

/// A sketch aggregate: `name(x)` over values or sketches, returning a sketch or a quantile.
#[derive(Debug)]
pub struct SketchUdaf {
    name: &'static str,
    signature: Signature,
    input: SketchInput,
    output: SketchOutput,
}

impl SketchUdaf {
    /// A sketch aggregate called `name`.
    pub fn new(name: &'static str, input: SketchInput, output: SketchOutput) -> Self {
        let arg = match input {
            SketchInput::Values => DataType::Float64,
            SketchInput::Sketches => DataType::Binary,
        };
        Self {
            name,
            signature: Signature::exact(vec![arg], Volatility::Immutable),
            input,
            output,
        }
    }
}

impl PartialEq for SketchUdaf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for SketchUdaf {}
impl Hash for SketchUdaf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl AggregateUDFImpl for SketchUdaf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.output.data_type())
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAccumulator::new(self.input, self.output)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Field::new(format_state_name(args.name, "sketch"), DataType::Binary, true).into(),
        ])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(SketchGroupsAccumulator::new(self.input, self.output)))
    }
}
