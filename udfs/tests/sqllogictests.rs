//! Runs every `tests/sqllogictests/*.slt` file against a fresh DataFusion `SessionContext`
//! with the whole library registered (`llm_analytics_udfs::register_all`).
//!
//! Values are printed with Arrow's display formatting (`NULL` for nulls), except top-level
//! floating-point values with an integral value, which print without `.0` (`2`, not `2.0`).
//! Each file is its own `#[test]` (generated below) so a failure names the file.

#![allow(clippy::expect_used)]

use std::path::PathBuf;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::Float64Type;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};

struct DataFusionDb {
    ctx: SessionContext,
}

#[derive(Debug)]
struct DbError(DataFusionError);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::error::Error for DbError {}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn format_batches(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            let row = formatters
                .iter()
                .zip(batch.columns())
                .map(|(f, col)| {
                    if let Some(a) = col.as_primitive_opt::<Float64Type>()
                        && a.is_valid(r)
                    {
                        let v = a.value(r) + 0.0; // -0 prints as 0
                        if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
                            return format!("{v:.0}");
                        }
                    }
                    let s = f.value(r).to_string();
                    if s.is_empty() { "(empty)".to_string() } else { s }
                })
                .collect();
            rows.push(row);
        }
    }
    Ok(rows)
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for DataFusionDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let df = self.ctx.sql(sql).await.map_err(DbError)?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await.map_err(DbError)?;
        let is_statement = schema.fields().is_empty()
            || sql.trim_start().to_ascii_lowercase().starts_with("create")
            || sql.trim_start().to_ascii_lowercase().starts_with("insert");
        if is_statement {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
        let rows = format_batches(&batches).map_err(DbError)?;
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "datafusion"
    }
}

async fn run_file(name: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "sqllogictests", name]
        .iter()
        .collect();
    let mut runner = sqllogictest::Runner::new(|| async {
        let mut ctx = SessionContext::new();
        llm_analytics_udfs::register_all(&mut ctx).map_err(DbError)?;
        Ok(DataFusionDb { ctx })
    });
    if let Err(e) = runner.run_file_async(&path).await {
        panic!("{}: {}", path.display(), e.display(true));
    }
}

macro_rules! slt {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                run_file($file).await;
            }
        )*

        /// Every `.slt` file in the directory must be listed above.
        #[test]
        fn every_slt_file_is_listed() {
            let listed = [$($file),*];
            let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "sqllogictests"].iter().collect();
            let mut missing = Vec::new();
            for entry in std::fs::read_dir(&dir).expect("slt dir exists") {
                let name = entry.expect("dir entry").file_name().to_string_lossy().to_string();
                if name.ends_with(".slt") && !listed.contains(&name.as_str()) {
                    missing.push(name);
                }
            }
            assert!(missing.is_empty(), "slt files not listed in tests/sqllogictests.rs: {missing:?}");
        }
    };
}

slt! {
    quantile_sketch => "quantile_sketch.slt",
    zscore => "zscore.slt",
    time_bucket => "time_bucket.slt",
    anomaly => "anomaly.slt",
    correlation => "correlation.slt",
    trace => "trace.slt",
    forecast => "forecast.slt",
    seasonal => "seasonal.slt",
}
