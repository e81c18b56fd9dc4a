//! Differential tests: the scanner and the serde reader must produce identical batches and
//! identical rejections (kind, reason, labels) for every input, valid or not.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::builders::Projection;
use super::decode::{DecodeOptions, DecoderKind, EventDecoder, decode_batch_body_with};
use crate::generate::{Generator, GeneratorConfig};

type Outcome = (usize, String, String, Option<String>, Option<String>);

fn decode_one(line: &str, kind: DecoderKind) -> (super::DecodedBatch, Vec<Outcome>) {
    let options = DecodeOptions {
        kind,
        projection: None,
        reuse_layouts: false,
    };
    let mut d = EventDecoder::with_options(1, line.len(), 7, &options);
    d.push(line.as_bytes());
    let out = d.finish().expect("builds");
    let rejects = out
        .rejected
        .iter()
        .map(|r| {
            (
                r.index,
                r.error_type.as_str().to_string(),
                r.reason.clone(),
                r.source_module.clone(),
                r.event_type.clone(),
            )
        })
        .collect();
    (out, rejects)
}

fn assert_same(line: &str) {
    let (a, ra) = decode_one(line, DecoderKind::Serde);
    let (b, rb) = decode_one(line, DecoderKind::Scan);
    assert_eq!(ra, rb, "rejections differ for {line}");
    assert_eq!(a.batch, b.batch, "batches differ for {line}");
}

/// Decodes `primer` and then `line` with one decoder: the scanner learns the primer's layout
/// (see `shape`) and reads `line` through it wherever it fits.
fn decode_after(primer: &str, line: &str, kind: DecoderKind) -> (super::DecodedBatch, Vec<Outcome>, u64) {
    let options = DecodeOptions {
        kind,
        projection: None,
        reuse_layouts: false,
    };
    let mut d = EventDecoder::with_options(2, primer.len() + line.len(), 7, &options);
    d.push(primer.as_bytes());
    d.push(line.as_bytes());
    let hits = d.shape_hits();
    let out = d.finish().expect("builds");
    let rejects = out
        .rejected
        .iter()
        .map(|r| (r.index, r.error_type.as_str().to_string(), r.reason.clone(), None, None))
        .collect();
    (out, rejects, hits)
}

/// [`assert_same`] for `line` read after `primer` (through the primer's shape when it fits);
/// returns whether the shape was used.
fn assert_same_after(primer: &str, line: &str) -> bool {
    let (a, ra, _) = decode_after(primer, line, DecoderKind::Serde);
    let (b, rb, hits) = decode_after(primer, line, DecoderKind::Scan);
    assert_eq!(ra, rb, "rejections differ for {line} after {primer}");
    assert_eq!(a.batch, b.batch, "batches differ for {line} after {primer}");
    hits > 0
}

const ID: &str = "0b0e7d1c-2f5a-4c1e-9a51-4d7c3e2b1a00";

fn base() -> String {
    format!(
        r#"{{"event_id":"{ID}","timestamp":"2026-11-27T10:00:00.123Z","source_module":"llm-observatory","event_type":"telemetry","schema_version":"1.0.0","severity":"info","environment":"prod","correlation_id":"c-1","parent_event_id":"{ID}","tags":{{"team":"a","app":"b"}},"payload":{{"operation":"chat","provider":"openai","model":"gpt-4o","latency_ms":812.5,"ttft_ms":120,"input_tokens":100,"output_tokens":50,"total_tokens":150,"cost_usd":0.0031,"status":"ok","error_type":null,"user_id":"u1","tenant":"acme","extra":{{"nested":[1,2,{{"x":null}}]}}}}}}"#
    )
}

/// Hand-written edge cases: every value kind in every field, escapes, unicode, OTel names.
fn edge_cases() -> Vec<String> {
    let b = base();
    let mut cases = vec![
        b.clone(),
        format!("  {b}  "),
        format!("{b}x"),
        format!("{b},"),
        b.replace(':', " : ").replace(',', " ,\t"),
        b.replace("\"event_id\"", "\"event\\u005fid\""),
        b.replace("\"model\"", "\"mod\\u0065l\""),
        b.replace("gpt-4o", "gpt\\u002d4\\\"o\\\\"),
        b.replace("gpt-4o", "gpt-\u{00e9}\u{4e2d}\u{1f600}"),
        b.replace("gpt-4o", "\\ud83d\\ude00"),
        b.replace("gpt-4o", "\\ud83d"),
        b.replace("gpt-4o", "bad\\x"),
        b.replace("gpt-4o", "tab\there"),
        b.replace("\"team\":\"a\"", "\"team\":\"\\u0041\""),
        b.replace("\"team\":\"a\"", "\"t\\u0065am\":\"a\""),
        b.replace("\"team\":\"a\"", "\"team\":1"),
        b.replace("\"team\":\"a\"", "\"team\":null"),
        b.replace("\"team\":\"a\"", "\"team\":\"\\ud800\""),
        b.replace("{\"team\":\"a\",\"app\":\"b\"}", "[\"a\"]"),
        b.replace("{\"team\":\"a\",\"app\":\"b\"}", "null"),
        b.replace("{\"team\":\"a\",\"app\":\"b\"}", "{}"),
        b.replace("{\"team\":\"a\",\"app\":\"b\"}", "{\"a\":\"1\",\"a\":\"2\"}"),
        b.replace("\"input_tokens\":100", "\"input_tokens\":\"100\""),
        b.replace("\"input_tokens\":100", "\"input_tokens\":100.0"),
        b.replace("\"input_tokens\":100", "\"input_tokens\":1e2"),
        b.replace("\"input_tokens\":100", "\"input_tokens\":-0"),
        b.replace("\"input_tokens\":100", "\"input_tokens\":01"),
        b.replace("\"input_tokens\":100", "\"input_tokens\":1."),
        b.replace("\"input_tokens\":100", "\"input_tokens\":99999999999999999999"),
        b.replace("\"latency_ms\":812.5", "\"latency_ms\":1e400"),
        b.replace("\"latency_ms\":812.5", "\"latency_ms\":-1E-2"),
        b.replace("\"latency_ms\":812.5", "\"latency_ms\":+1"),
        b.replace("\"latency_ms\":812.5", "\"latency_ms\":.5"),
        b.replace("\"latency_ms\":812.5", "\"latency_ms\":null"),
        b.replace("\"latency_ms\":812.5", "\"latency_ms\":true"),
        b.replace("\"latency_ms\":812.5", "\"latency_ms\":[1]"),
        b.replace("\"latency_ms\":812.5", "\"latency_ms\":{\"v\":1}"),
        b.replace("\"model\":\"gpt-4o\"", "\"model\":\"a\",\"model\":\"b\""),
        b.replace("\"model\":\"gpt-4o\"", "\"model\":null,\"model\":\"b\""),
        b.replace("\"severity\":\"info\"", "\"severity\":\"info\",\"severity\":\"info\""),
        b.replace("\"severity\":\"info\"", "\"severity\":\"fatal\""),
        b.replace("\"severity\":\"info\"", "\"severity\":null"),
        b.replace("\"schema_version\":\"1.0.0\"", "\"schema_version\":\"2.0\""),
        b.replace("\"status\":\"ok\"", "\"status\":\"maybe\""),
        b.replace("\"status\":\"ok\"", "\"status\":null"),
        b.replace("\"error_type\":null", "\"error.type\":\"boom\""),
        b.replace("\"event_type\":\"telemetry\"", "\"event_type\":\"  \""),
        b.replace("\"event_type\":\"telemetry\"", "\"event_type\":null"),
        b.replace("\"source_module\":\"llm-observatory\",", ""),
        b.replace("\"source_module\":\"llm-observatory\"", "\"source_module\":7"),
        b.replace(ID, "not-a-uuid"),
        b.replace(ID, &ID.to_uppercase()),
        b.replace(&format!("\"parent_event_id\":\"{ID}\""), "\"parent_event_id\":null"),
        b.replace("2026-11-27T10:00:00.123Z", "2026-11-27T11:00:00.5+01:00"),
        b.replace("2026-11-27T10:00:00.123Z", "2026-11-27t10:00:00z"),
        b.replace("2026-11-27T10:00:00.123Z", "2026-11-27 10:00:00Z"),
        b.replace("2026-11-27T10:00:00.123Z", "2026-11-27T10:00:60Z"),
        b.replace("2026-11-27T10:00:00.123Z", "2026-02-30T10:00:00Z"),
        b.replace("2026-11-27T10:00:00.123Z", "yesterday"),
        b.replace("\"2026-11-27T10:00:00.123Z\"", "1764237600"),
        b.replace("\"extra\"", "\"ex\\ntra\""),
        b.replace("[1,2,{\"x\":null}]", "[1,2,]"),
        b.replace("[1,2,{\"x\":null}]", "[1 2]"),
        b.replace("[1,2,{\"x\":null}]", "[tru]"),
        b.replace("[1,2,{\"x\":null}]", &format!("{}{}", "[".repeat(140), "]".repeat(140))),
        b.replace("[1,2,{\"x\":null}]", &format!("{}{}", "[".repeat(90), "]".repeat(90))),
        "[1,2]".to_string(),
        "\"text\"".to_string(),
        "42".to_string(),
        "null".to_string(),
        "{}".to_string(),
        "{\"event_id\": ".to_string(),
        "{\"event_id\":1}".to_string(),
        "\u{feff}{}".to_string(),
        "{\"a\":1,}".to_string(),
        "{\"a\" 1}".to_string(),
        "{'a':1}".to_string(),
        "{\"a\":\"\u{1}\"}".to_string(),
    ];
    for payload in ["\"text\"", "[1]", "3", "true", "null", "{}", "{\"a\":{}}"] {
        let start = b.find("\"payload\":").expect("payload") + "\"payload\":".len();
        cases.push(format!("{}{payload}}}", &b[..start]));
    }
    let otel = [
        r#"{"gen_ai.operation.name":"chat","gen_ai.system":"anthropic","gen_ai.request.model":"claude-3","gen_ai.response.model":"claude-3-5","gen_ai.usage.input_tokens":11,"gen_ai.usage.output_tokens":7,"error.type":"rate_limited"}"#,
        r#"{"gen_ai.provider.name":"openai","gen_ai.system":"old","gen_ai.request.model":"m"}"#,
        r#"{"provider":"native","gen_ai.provider.name":"otel","gen_ai.usage.prompt_tokens":3,"gen_ai.usage.completion_tokens":"4"}"#,
        r#"{"gen_ai.usage.prompt_tokens":3,"gen_ai.usage.completion_tokens":4,"ttft_ms":-1}"#,
        r#"{"gen_ai.operation.name":"a","gen_ai.operation.name":"b"}"#,
    ];
    for p in otel {
        let start = b.find("\"payload\":").expect("payload") + "\"payload\":".len();
        cases.push(format!("{}{p}}}", &b[..start]));
    }
    cases
}

#[test]
fn scanner_matches_serde_on_edge_cases() {
    let base = base();
    let mut through_shape = 0;
    for case in edge_cases() {
        assert_same(&case);
        through_shape += usize::from(assert_same_after(&base, &case));
    }
    // Same layout, other values (wrong types, bad numbers, nested values, nulls...).
    assert!(
        through_shape > 25,
        "only {through_shape} edge cases were read through the shape"
    );
}

#[test]
fn scanner_matches_serde_on_every_truncation() {
    let b = base();
    for end in 0..b.len() {
        if let Some(prefix) = b.get(..end) {
            assert_same(prefix);
            assert!(
                !assert_same_after(&b, prefix),
                "a truncated event fit the shape: {prefix}"
            );
        }
    }
}

/// One random single-byte edit of `line`: a deletion, an insertion or a replacement by JSON
/// punctuation, a digit, a letter of a literal or a control byte.
fn edit(line: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"{}[]\",:\\ 0-1.eEtrunfl\x01ab";
    let mut m = line.to_vec();
    let at = rng.random_range(0..m.len());
    let byte = ALPHABET[rng.random_range(0..ALPHABET.len())];
    match rng.random_range(0..3) {
        0 => {
            m.remove(at);
        }
        1 => m.insert(at, byte),
        _ => m[at] = byte,
    }
    m
}

/// Random single-byte edits of generated events: deletions, insertions of JSON punctuation,
/// swaps. Most produce invalid JSON or wrong types; both readers must agree on every one.
#[test]
fn scanner_matches_serde_on_mutated_events() {
    let mut g = Generator::new(GeneratorConfig {
        invalid_ratio: 0.05,
        ..GeneratorConfig::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut through_shape = 0;
    for _ in 0..3000 {
        let line = g.next_event(None).into_bytes();
        let original = std::str::from_utf8(&line).expect("utf8");
        assert_same(original);
        for _ in 0..3 {
            let m = edit(&line, &mut rng);
            if let Ok(text) = std::str::from_utf8(&m) {
                assert_same(text);
                // The same edit read through the original's layout.
                through_shape += usize::from(assert_same_after(original, text));
            }
        }
    }
    assert!(
        through_shape > 1000,
        "only {through_shape} edits were read through a shape"
    );
}

#[test]
fn scanner_matches_serde_on_generated_bodies_and_projections() {
    let mut g = Generator::new(GeneratorConfig {
        invalid_ratio: 0.02,
        disorder_ms: 2000,
        ..GeneratorConfig::default()
    });
    let mut body = String::new();
    for _ in 0..5000 {
        body.push_str(&g.next_event(None));
        body.push('\n');
    }
    let opts = |kind, projection| DecodeOptions {
        kind,
        projection,
        reuse_layouts: false,
    };
    let serde = decode_batch_body_with(body.as_bytes(), 1, &opts(DecoderKind::Serde, None)).expect("serde");
    let scan = decode_batch_body_with(body.as_bytes(), 1, &opts(DecoderKind::Scan, None)).expect("scan");
    assert_eq!(serde.batch, scan.batch);
    assert_eq!(serde.total, scan.total);
    let reasons = |d: &super::DecodedBatch| {
        d.rejected
            .iter()
            .map(|r| (r.index, r.reason.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(reasons(&serde), reasons(&scan));
    assert!(!serde.rejected.is_empty() && serde.batch.num_rows() > 4000);

    // The scanner read nearly all of them through learned layouts.
    let mut d = EventDecoder::with_options(5000, body.len(), 1, &opts(DecoderKind::Scan, None));
    for line in body.lines() {
        d.push(line.as_bytes());
    }
    assert!(d.shape_hits() > 4800, "{} events read through a shape", d.shape_hits());
    assert_eq!(d.finish().expect("builds").batch, scan.batch);

    let columns = ["timestamp", "provider", "model", "latency_ms", "status", "event_id"];
    let projection = std::sync::Arc::new(Projection::new(&columns).expect("columns"));
    let narrow = decode_batch_body_with(
        body.as_bytes(),
        1,
        &opts(DecoderKind::Scan, Some(std::sync::Arc::clone(&projection))),
    )
    .expect("projected");
    let expected = scan
        .batch
        .project(
            &projection
                .columns()
                .iter()
                .map(|c| scan.batch.schema().index_of(c).expect("col"))
                .collect::<Vec<_>>(),
        )
        .expect("project");
    assert_eq!(narrow.batch, expected);
    assert_eq!(reasons(&narrow), reasons(&scan), "projection validates in full");

    let empty = Projection::new::<&str>(&[]).expect("empty");
    let none = decode_batch_body_with(
        body.as_bytes(),
        1,
        &opts(DecoderKind::Scan, Some(std::sync::Arc::new(empty))),
    )
    .expect("no columns");
    assert_eq!(none.batch.num_rows(), scan.batch.num_rows());
    assert!(Projection::new(&["nope"]).is_err());
}

/// Where the scanner answers, its field slices are exactly serde's `RawValue` texts.
fn assert_same_fields(line: &str) -> bool {
    use super::raw::{EventFields, PayloadFields, RawEvent, RawPayload};
    let mut scanned = super::scan::Scanned::default();
    if super::scan::scan_event(line, &mut Vec::new(), &mut scanned).is_none() {
        return false;
    }
    let raw: RawEvent<'_> = serde_json::from_str(line).expect("serde parses what the scanner accepts");
    assert_eq!(scanned.fields, EventFields::from(&raw), "{line}");
    if let Some(p) = scanned.pre.payload {
        let text = scanned.fields.payload.expect("payload text");
        let rp: RawPayload<'_> = serde_json::from_str(text).expect("payload parses");
        assert_eq!(p, PayloadFields::from(&rp), "{line}");
    }
    true
}

#[test]
fn scanner_answers_for_ordinary_events_with_serde_slices() {
    let mut g = Generator::new(GeneratorConfig::default());
    for _ in 0..2000 {
        let line = g.next_event(None);
        assert!(assert_same_fields(&line), "scanner declined a generated event: {line}");
    }
    assert!(assert_same_fields(&base()));
    let answered = edge_cases().iter().filter(|c| assert_same_fields(c)).count();
    assert!(answered > 40, "scanner answered only {answered} edge cases");
    for declined in [
        base().replace("\"event_id\"", "\"event\\u005fid\""),
        base().replace("\"model\":\"gpt-4o\"", "\"model\":\"a\",\"model\":\"b\""),
        format!("{}x", base()),
        "[1]".to_string(),
    ] {
        let mut out = super::scan::Scanned::default();
        assert!(
            super::scan::scan_event(&declined, &mut Vec::new(), &mut out).is_none(),
            "{declined}"
        );
    }
}

#[test]
fn invalid_utf8_takes_the_serde_path() {
    let mut line = base().into_bytes();
    let at = line.windows(6).position(|w| w == b"gpt-4o").expect("model");
    line[at] = 0xff;
    for kind in [DecoderKind::Serde, DecoderKind::Scan] {
        let options = DecodeOptions {
            kind,
            projection: None,
            reuse_layouts: false,
        };
        let mut d = EventDecoder::with_options(1, line.len(), 0, &options);
        assert!(!d.push(&line));
        let out = d.finish().expect("builds");
        assert_eq!(out.rejected[0].error_type.as_str(), "malformed_json");
    }
}

/// The scanner's eight-bytes-at-a-time number reader against a state machine of the JSON
/// number grammar, on random strings of number-ish bytes (and UTF-8 bytes >= 0xFA, whose
/// carry the word trick must not let through).
#[test]
fn number_reader_agrees_with_the_grammar_byte_by_byte() {
    /// The grammar as a state machine over one byte at a time (longest match).
    fn reference(b: &[u8], start: usize) -> Option<usize> {
        #[derive(Clone, Copy)]
        enum S {
            Start,
            Minus,
            Zero,
            Int,
            Dot,
            Frac,
            E,
            ESign,
            Exp,
        }
        let (mut state, mut i) = (S::Start, start);
        while let Some(next) = b.get(i).and_then(|&c| match (state, c) {
            (S::Start, b'-') => Some(S::Minus),
            (S::Start | S::Minus, b'0') => Some(S::Zero),
            (S::Start | S::Minus | S::Int, b'1'..=b'9') | (S::Int, b'0') => Some(S::Int),
            (S::Zero | S::Int, b'.') => Some(S::Dot),
            (S::Dot | S::Frac, b'0'..=b'9') => Some(S::Frac),
            (S::Zero | S::Int | S::Frac, b'e' | b'E') => Some(S::E),
            (S::E, b'+' | b'-') => Some(S::ESign),
            (S::E | S::ESign | S::Exp, b'0'..=b'9') => Some(S::Exp),
            _ => None,
        }) {
            state = next;
            i += 1;
        }
        matches!(state, S::Zero | S::Int | S::Frac | S::Exp).then_some(i)
    }
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let alphabet = b"0123456789999999000.eE+-x/:\xfa\xff\x2a\x3f ";
    for _ in 0..200_000 {
        let len = rng.random_range(0..40);
        let s: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        for start in 0..s.len().min(3) {
            assert_eq!(
                super::scan::number_end(&s, start),
                reference(&s, start),
                "{:?} from {start}",
                String::from_utf8_lossy(&s)
            );
        }
    }
}

/// A producer whose every event has its own layout (a key that changes each time): nothing
/// fits a learned shape, learning stops once it does not pay off, and the batch is serde's.
#[test]
fn events_with_ever_new_layouts_decode_the_same_and_stop_the_learning() {
    let base = base();
    let body: String = (0..2000)
        .map(|i| base.replacen("\"extra\"", &format!("\"extra_{i}\""), 1) + "\n")
        .collect();
    let opts = |kind| DecodeOptions {
        kind,
        projection: None,
        reuse_layouts: false,
    };
    let serde = decode_batch_body_with(body.as_bytes(), 1, &opts(DecoderKind::Serde)).expect("serde");
    let mut d = EventDecoder::with_options(2000, body.len(), 1, &opts(DecoderKind::Scan));
    for line in body.lines() {
        d.push(line.as_bytes());
    }
    assert_eq!(d.shape_hits(), 0);
    assert_eq!(
        d.shapes_learned(),
        16,
        "learning stops after the free learns without hits"
    );
    assert_eq!(d.finish().expect("builds").batch, serde.batch);
}

/// Generated events (six layouts) each followed by a single-byte edit of it, in one body: the
/// decoder learns every layout, so the edits are tried against several shapes in turn before
/// the generic scanner or serde reads them. Same batch and rejections as serde.
#[test]
fn edits_read_among_many_learned_shapes_match_serde() {
    let mut g = Generator::new(GeneratorConfig {
        invalid_ratio: 0.02,
        ..GeneratorConfig::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let mut lines = Vec::new();
    for _ in 0..4000 {
        let line = g.next_event(None);
        let edited = edit(line.as_bytes(), &mut rng);
        lines.push(line);
        if let Ok(text) = String::from_utf8(edited) {
            lines.push(text);
        }
    }
    let body = lines.join("\n");
    let opts = |kind| DecodeOptions {
        kind,
        projection: None,
        reuse_layouts: false,
    };
    let serde = decode_batch_body_with(body.as_bytes(), 1, &opts(DecoderKind::Serde)).expect("serde");
    let scan = decode_batch_body_with(body.as_bytes(), 1, &opts(DecoderKind::Scan)).expect("scan");
    let reasons = |d: &super::DecodedBatch| {
        d.rejected
            .iter()
            .map(|r| (r.index, r.error_type.as_str(), r.reason.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(reasons(&serde), reasons(&scan));
    assert_eq!(serde.batch, scan.batch);
    assert!(scan.readers.layout > 5000, "{:?}", scan.readers);
    assert!(serde.rejected.len() > 1000, "edits should break many events");
}

/// Layouts outlive their decoder on the thread that learned them: a second small body (an
/// HTTP request, a Kafka batch) is read through them from its first event, with the same
/// result as a decoder that starts from nothing.
#[test]
fn later_bodies_on_a_thread_reuse_the_learned_layouts() {
    let mut g = Generator::new(GeneratorConfig::default());
    let body = |g: &mut Generator| (0..200).map(|_| g.next_event(None) + "\n").collect::<String>();
    let (first, second) = (body(&mut g), body(&mut g));
    let opts = |reuse_layouts| DecodeOptions {
        kind: DecoderKind::Scan,
        projection: None,
        reuse_layouts,
    };
    let fresh = decode_batch_body_with(second.as_bytes(), 1, &opts(false)).expect("fresh");
    assert!(fresh.readers.scan > 0, "{:?}", fresh.readers);
    decode_batch_body_with(first.as_bytes(), 1, &opts(true)).expect("first");
    let reused = decode_batch_body_with(second.as_bytes(), 1, &opts(true)).expect("second");
    assert_eq!(reused.readers.scan, 0, "{:?}", reused.readers);
    assert_eq!(reused.readers.layout, 200);
    assert_eq!(reused.batch, fresh.batch);
}

/// Events with several nested objects and arrays: read through the shape (one index of the
/// line serves every nested value), with serde's results, including when a later nested value
/// is invalid or too deep.
#[test]
fn several_nested_values_read_through_a_shape() {
    let b = base();
    let primer = b.replace(
        "\"tenant\":\"acme\"",
        "\"tenant\":\"acme\",\"meta\":{\"a\":[1,{\"b\":\"c\"}]}",
    );
    let primer = primer.replacen("\"tags\":", "\"ctx\":[{\"k\":\"v\"},[]],\"tags\":", 1);
    let variants = [
        primer.clone(),
        primer.replace("{\"b\":\"c\"}", "{\"b\":\"d\",\"e\":[true,null]}"),
        primer.replace("{\"b\":\"c\"}", "{\"b\":\"c\",}"),
        primer.replace("{\"b\":\"c\"}", &format!("{}{}", "[".repeat(120), "]".repeat(120))),
        primer.replace("[{\"k\":\"v\"},[]]", "[{\"k\":\"v\"},[1,2,3]]"),
        primer.replace("{\"nested\":[1,2,{\"x\":null}]}", "{\"nested\":[1,2,{\"x\":nul}]}"),
    ];
    let through_shape = variants.iter().filter(|v| assert_same_after(&primer, v)).count();
    assert_eq!(through_shape, 3, "the valid variants fit the primer's shape");
}
