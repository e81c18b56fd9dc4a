//! The `bench rollup` command's runs: one rollup, or the readers compared (`--decoders`).

use std::path::Path;
use std::sync::Arc;

use super::{RollupOptions, chunks_of, decode_rate, run_rollup};
use crate::event::{DecodeOptions, DecoderKind, Projection};
use crate::stream::catalog::CqDefinition;
use crate::stream::query::CqRuntime;

fn open(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// One rollup run over the file; prints the report.
pub async fn rollup(path: &Path, sql: &str, options: &RollupOptions) -> Result<(), String> {
    let report = run_rollup(open(path)?, sql, options).await?;
    print!("{report}");
    Ok(())
}

async fn needed_columns(sql: &str) -> Result<Vec<String>, String> {
    let def = CqDefinition {
        name: "bench_columns".into(),
        sql: sql.into(),
        options: Default::default(),
        paused: false,
        created_at_us: 0,
    };
    let rt = CqRuntime::new(def, &crate::event::events_schema())
        .await
        .map_err(|e| e.to_string())?;
    Ok(rt.input_columns().to_vec())
}

/// Decode-only rates of each reader (one thread, file held in memory), then the rollup once
/// with each reader.
pub async fn compare_decoders(path: &Path, sql: &str, options: &RollupOptions) -> Result<(), String> {
    let columns = needed_columns(sql).await?;
    let projection = Arc::new(Projection::new(&columns).map_err(|e| e.to_string())?);
    let chunks = chunks_of(open(path)?, options.batch_rows)?;
    println!("decode only, one thread, {} chunks in memory:", chunks.len());
    let runs = [
        ("serde, all columns", DecoderKind::Serde, None),
        ("scan,  all columns", DecoderKind::Scan, None),
        (
            "serde, query columns",
            DecoderKind::Serde,
            Some(Arc::clone(&projection)),
        ),
        ("scan,  query columns", DecoderKind::Scan, Some(Arc::clone(&projection))),
    ];
    let mut base = None;
    for (label, kind, projection) in runs {
        let (events, rate) = decode_rate(
            &chunks,
            &DecodeOptions {
                kind,
                projection,
                ..DecodeOptions::default()
            },
        )?;
        let ratio = rate / *base.get_or_insert(rate);
        println!("  {label:<22} {events} events  {rate:>12.0} events/s  ({ratio:.2}x serde/all)");
    }
    drop(chunks);
    println!("query columns: {}", projection.columns().join(", "));
    for decoder in [DecoderKind::Serde, DecoderKind::Scan] {
        let run = RollupOptions {
            decoder,
            ..options.clone()
        };
        println!();
        let report = run_rollup(open(path)?, sql, &run).await?;
        print!("{report}");
    }
    println!("(peak RSS is the process's, including the in-memory copy of the file used above)");
    Ok(())
}
