//! Decoding throughput: 100k generated events (NDJSON) → one Arrow `RecordBatch`.
//! Run: `cargo bench --bench decode`.

#![allow(clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_analytics_hub::event::decode_batch_body;
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
    group.bench_function("ndjson_100k_events", |b| {
        b.iter(|| {
            let out = decode_batch_body(&body, 0).expect("decodes");
            assert_eq!(out.batch.num_rows(), EVENTS);
            out
        });
    });
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
