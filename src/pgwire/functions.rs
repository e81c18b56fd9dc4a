//! Postgres functions clients call on connect that DataFusion and datafusion-postgres lack:
//! `current_setting(name [, missing_ok])` and a Postgres-style `version()`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::auth::SERVER_VERSION;

/// `server_version_num` matching [`SERVER_VERSION`].
pub const SERVER_VERSION_NUM: &str = "160006";

/// The value of a run-time parameter, as `current_setting` and `SHOW` report it.
pub fn setting(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "server_version" => SERVER_VERSION,
        "server_version_num" => SERVER_VERSION_NUM,
        "search_path" => "\"$user\", public",
        "timezone" => "UTC",
        "datestyle" => "ISO, MDY",
        "intervalstyle" => "postgres",
        "client_encoding" | "server_encoding" => "UTF8",
        "standard_conforming_strings" => "on",
        "integer_datetimes" => "on",
        "default_transaction_read_only" | "transaction_read_only" => "on",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "max_identifier_length" => "63",
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
        "block_size" => "8192",
        "max_index_keys" => "32",
        "application_name" => "",
        _ => return None,
    })
}

/// `version()` text: what Postgres prints, naming the Hub and DataFusion.
pub fn version_text() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (LLM Analytics Hub {}, Apache DataFusion {}) on {}-{}, 64-bit",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

/// `current_setting(name text [, missing_ok boolean]) -> text`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let missing_ok: Option<&BooleanArray> = arrays.get(1).and_then(|a| a.as_boolean_opt());
        let mut out = Vec::with_capacity(rows);
        for i in 0..names.len() {
            if names.is_null(i) {
                out.push(None);
                continue;
            }
            let name = names.value(i);
            match setting(name) {
                Some(v) => out.push(Some(v.to_string())),
                None if missing_ok.is_some_and(|m| !m.is_null(i) && m.value(i)) => out.push(None),
                None => return exec_err!("unrecognized configuration parameter \"{name}\""),
            }
        }
        let array: ArrayRef = Arc::new(StringArray::from(out));
        if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?));
        }
        Ok(ColumnarValue::Array(array))
    }
}

/// `version() -> text`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(version_text()))))
    }
}

/// The functions of this module.
pub fn udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(CurrentSetting {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8View]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
                    TypeSignature::Exact(vec![DataType::Utf8View, DataType::Boolean]),
                ],
                Volatility::Stable,
            ),
        }),
        ScalarUDF::from(Version {
            signature: Signature::nullary(Volatility::Stable),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_grafana_reads() {
        assert_eq!(setting("server_version_num"), Some("160006"));
        assert_eq!(setting("SEARCH_PATH"), Some("\"$user\", public"));
        assert_eq!(setting("no_such_thing"), None);
        assert!(version_text().starts_with("PostgreSQL 16.6 (LLM Analytics Hub"));
    }
}
