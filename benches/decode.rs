//! Decoding throughput: 100k generated events (NDJSON) → one Arrow `RecordBatch`.
//! Run: `cargo bench --bench decode`.

#![allow(clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use llm_analytics_hub::event::{DecodeOptions, DecoderKind, Projection, decode_batch_body_with};
use llm_analytics_hub::generate::{Generator, GeneratorConfig};

const EVENTS: usize = 100_000;

fn ndjson() -> Vec<u8> {
    let mut g = Generator::new(GeneratorConfig {
        disorder_ms: 2000,
        ..GeneratorConfig::default()
    });
    let mut body = String::new();
    for _ in 0..EVENTS {
        body.push_str(&g.next_event(None));
        body.push('\n');
    }
    body.into_bytes()
}

fn decode(c: &mut Criterion) {
    let body = ndjson();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    let rollup_columns = [
        "event_id",
        "timestamp",
        "provider",
        "model",
        "input_tokens",
        "cost_usd",
        "latency_ms",
        "status",
    ];
    let projection = Arc::new(Projection::new(&rollup_columns).expect("columns"));
    let runs = [
        ("ndjson_100k_events/serde", DecoderKind::Serde, None),
        ("ndjson_100k_events/scan", DecoderKind::Scan, None),
        (
            "ndjson_100k_events/scan_rollup_columns",
            DecoderKind::Scan,
            Some(projection),
        ),
    ];
    for (name, kind, projection) in runs {
        let options = DecodeOptions {
            kind,
            projection,
            ..DecodeOptions::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let out = decode_batch_body_with(&body, 0, &options).expect("decodes");
                assert_eq!(out.batch.num_rows(), EVENTS);
                out
            });
        });
    }
    group.finish();
    eprintln!(
        "input: {} events, {} bytes ({} bytes/event)",
        EVENTS,
        body.len(),
        body.len() / EVENTS
    );
}

criterion_group!(benches, decode);
criterion_main!(benches);
