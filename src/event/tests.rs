//! Decoder unit tests: one per validation rule, plus the OpenTelemetry name mapping.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};

use super::decode::{decode_batch_body, decode_json_array, decode_ndjson, decode_single};
use super::reject::RejectKind;

const ID: &str = "0b0e7d1c-2f5a-4c1e-9a51-4d7c3e2b1a00";

fn event(payload: &str) -> String {
    format!(
        r#"{{"event_id":"{ID}","timestamp":"2026-11-27T10:00:00.123456Z","source_module":"llm-observatory","event_type":"telemetry","payload":{payload}}}"#
    )
}

fn one(json: &str) -> super::DecodedBatch {
    decode_single(json.as_bytes(), 42).expect("body accepted")
}

fn reject_of(json: &str) -> (RejectKind, String) {
    let out = one(json);
    assert_eq!(out.batch.num_rows(), 0, "expected a rejection for {json}");
    let r = out.rejected.first().expect("one rejection");
    (r.error_type, r.reason.clone())
}

fn str_col(batch: &RecordBatch, name: &str) -> Option<String> {
    let col = batch.column_by_name(name).expect("column").as_string::<i32>();
    (!col.is_null(0)).then(|| col.value(0).to_string())
}

fn i64_col(batch: &RecordBatch, name: &str) -> Option<i64> {
    let col = batch.column_by_name(name).expect("column").as_primitive::<Int64Type>();
    (!col.is_null(0)).then(|| col.value(0))
}

fn f64_col(batch: &RecordBatch, name: &str) -> Option<f64> {
    let col = batch
        .column_by_name(name)
        .expect("column")
        .as_primitive::<Float64Type>();
    (!col.is_null(0)).then(|| col.value(0))
}

#[test]
fn decodes_a_full_event() {
    let json = format!(
        r#"{{"event_id":"{}","timestamp":"2026-11-27T11:00:00.5+01:00","source_module":"llm-costops",
        "event_type":"cost","schema_version":"1.2.0","severity":"warning","environment":"prod",
        "correlation_id":"trace-1","parent_event_id":"{}","tags":{{"team":"a"}},
        "payload":{{"operation":"chat","provider":"openai","model":"gpt-4o","latency_ms":812.5,
        "ttft_ms":120,"input_tokens":100,"output_tokens":50,"cost_usd":0.0031,"status":"ok",
        "user_id":"u1","tenant":"acme","extra":{{"nested":[1,2]}}}}}}"#,
        ID.to_uppercase(),
        ID.replace('-', "")
    );
    let out = one(&json);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let b = &out.batch;
    assert_eq!(b.num_rows(), 1);
    assert_eq!(
        str_col(b, "event_id").as_deref(),
        Some(ID),
        "UUID normalised to lower case"
    );
    let ts = b
        .column_by_name("timestamp")
        .expect("ts")
        .as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_795_773_600_500_000, "10:00:00.5Z in microseconds");
    assert_eq!(str_col(b, "severity").as_deref(), Some("warning"));
    assert_eq!(str_col(b, "schema_version").as_deref(), Some("1.2.0"));
    assert_eq!(str_col(b, "environment").as_deref(), Some("prod"));
    assert_eq!(
        str_col(b, "parent_event_id").as_deref(),
        Some(ID),
        "simple-form UUID stored hyphenated"
    );
    assert_eq!(str_col(b, "tags").as_deref(), Some(r#"{"team":"a"}"#));
    assert_eq!(str_col(b, "provider").as_deref(), Some("openai"));
    assert_eq!(str_col(b, "model").as_deref(), Some("gpt-4o"));
    assert_eq!(f64_col(b, "latency_ms"), Some(812.5));
    assert_eq!(f64_col(b, "ttft_ms"), Some(120.0));
    assert_eq!(i64_col(b, "input_tokens"), Some(100));
    assert_eq!(i64_col(b, "output_tokens"), Some(50));
    assert_eq!(i64_col(b, "total_tokens"), Some(150));
    assert_eq!(f64_col(b, "cost_usd"), Some(0.0031));
    assert_eq!(str_col(b, "tenant").as_deref(), Some("acme"));
    assert!(str_col(b, "payload").expect("payload").contains(r#""nested":[1,2]"#));
}

#[test]
fn defaults_for_optional_envelope_fields() {
    let out = one(&event("{}"));
    let b = &out.batch;
    assert_eq!(str_col(b, "severity").as_deref(), Some("info"));
    assert_eq!(str_col(b, "schema_version").as_deref(), Some("1.0.0"));
    assert_eq!(str_col(b, "environment"), None);
    assert_eq!(str_col(b, "status"), None, "no LLM fields → no status");
    assert_eq!(i64_col(b, "total_tokens"), None);
}

#[test]
fn maps_opentelemetry_genai_names() {
    let out = one(&event(
        r#"{"gen_ai.operation.name":"chat","gen_ai.system":"anthropic","gen_ai.request.model":"claude-3",
        "gen_ai.response.model":"claude-3-5","gen_ai.usage.input_tokens":11,"gen_ai.usage.output_tokens":7,
        "error.type":"rate_limited"}"#,
    ));
    let b = &out.batch;
    assert_eq!(str_col(b, "operation").as_deref(), Some("chat"));
    assert_eq!(str_col(b, "provider").as_deref(), Some("anthropic"));
    assert_eq!(
        str_col(b, "model").as_deref(),
        Some("claude-3-5"),
        "response model wins"
    );
    assert_eq!(i64_col(b, "input_tokens"), Some(11));
    assert_eq!(i64_col(b, "output_tokens"), Some(7));
    assert_eq!(i64_col(b, "total_tokens"), Some(18));
    assert_eq!(str_col(b, "error_type").as_deref(), Some("rate_limited"));
    assert_eq!(
        str_col(b, "status").as_deref(),
        Some("error"),
        "error.type implies error"
    );

    let out = one(&event(
        r#"{"gen_ai.provider.name":"openai","gen_ai.system":"old","gen_ai.request.model":"m"}"#,
    ));
    assert_eq!(
        str_col(&out.batch, "provider").as_deref(),
        Some("openai"),
        "provider.name beats system"
    );
    assert_eq!(str_col(&out.batch, "model").as_deref(), Some("m"));
    assert_eq!(
        str_col(&out.batch, "status").as_deref(),
        Some("ok"),
        "LLM event without error is ok"
    );

    let out = one(&event(r#"{"provider":"native","gen_ai.provider.name":"otel"}"#));
    assert_eq!(
        str_col(&out.batch, "provider").as_deref(),
        Some("native"),
        "native names win"
    );
}

#[test]
fn rejects_malformed_json() {
    let (kind, reason) = reject_of(r#"{"event_id": "#);
    assert_eq!(kind, RejectKind::MalformedJson);
    assert!(reason.contains("malformed JSON"), "{reason}");
}

#[test]
fn rejects_non_object_event() {
    let (kind, reason) = reject_of("[1,2]");
    assert_eq!(kind, RejectKind::InvalidType);
    assert!(reason.contains("JSON object"), "{reason}");
}

#[test]
fn rejects_each_missing_required_field() {
    for field in ["event_id", "timestamp", "source_module", "event_type", "payload"] {
        let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&event("{}")).expect("valid");
        value.remove(field);
        let (kind, reason) = reject_of(&serde_json::to_string(&value).expect("json"));
        assert_eq!(kind, RejectKind::MissingField, "{field}");
        assert!(reason.contains(&format!("`{field}`")), "{reason}");
        // null counts as missing
        value.insert(field.to_string(), serde_json::Value::Null);
        let (kind, _) = reject_of(&serde_json::to_string(&value).expect("json"));
        assert_eq!(kind, RejectKind::MissingField, "{field} = null");
    }
}

#[test]
fn rejects_wrong_types_naming_the_field() {
    let cases = [
        (r#"{"latency_ms":"fast"}"#, "payload.latency_ms"),
        (r#"{"input_tokens":1.5}"#, "payload.input_tokens"),
        (
            r#"{"gen_ai.usage.output_tokens":"7"}"#,
            "payload.gen_ai.usage.output_tokens",
        ),
        (r#"{"model":42}"#, "payload.model"),
        (r#"{"cost_usd":true}"#, "payload.cost_usd"),
    ];
    for (payload, field) in cases {
        let (kind, reason) = reject_of(&event(payload));
        assert_eq!(kind, RejectKind::InvalidType, "{payload}");
        assert!(reason.contains(&format!("`{field}`")), "{reason}");
    }
    let bad_envelope = event("{}").replace(r#""source_module":"llm-observatory""#, r#""source_module":7"#);
    let (kind, reason) = reject_of(&bad_envelope);
    assert_eq!(kind, RejectKind::InvalidType);
    assert!(
        reason.contains("`source_module` must be a string, got number"),
        "{reason}"
    );
    let bad_tags = event("{}").replace(r#""payload""#, r#""tags":{"a":1},"payload""#);
    assert_eq!(reject_of(&bad_tags).0, RejectKind::InvalidType);
}

#[test]
fn rejects_unparseable_timestamps() {
    for ts in ["yesterday", "2026-11-27 10:00:00", "2026-13-01T00:00:00Z", "1764237600"] {
        let json = event("{}").replace("2026-11-27T10:00:00.123456Z", ts);
        let (kind, reason) = reject_of(&json);
        assert_eq!(kind, RejectKind::InvalidTimestamp, "{ts}");
        assert!(reason.contains("RFC 3339"), "{reason}");
    }
    let json = event("{}").replace(r#""2026-11-27T10:00:00.123456Z""#, "1764237600");
    assert_eq!(reject_of(&json).0, RejectKind::InvalidType);
}

#[test]
fn rejects_payload_that_is_not_an_object() {
    for payload in [r#""text""#, "[1]", "3", "true"] {
        let (kind, _) = reject_of(&event(payload));
        assert_eq!(kind, RejectKind::PayloadNotObject, "{payload}");
    }
}

#[test]
fn rejects_out_of_domain_values() {
    let cases = [
        event(r#"{"input_tokens":-1}"#),
        event(r#"{"latency_ms":-0.5}"#),
        event(r#"{"status":"maybe"}"#),
        event("{}").replace(ID, "not-a-uuid"),
        event("{}").replace(r#""payload""#, r#""severity":"fatal","payload""#),
        event("{}").replace(r#""event_type":"telemetry""#, r#""event_type":"  ""#),
    ];
    for json in cases {
        assert_eq!(reject_of(&json).0, RejectKind::InvalidValue, "{json}");
    }
    let v2 = event("{}").replace(r#""payload""#, r#""schema_version":"2.0.0","payload""#);
    assert_eq!(reject_of(&v2).0, RejectKind::UnsupportedSchemaVersion);
}

#[test]
fn escaped_strings_are_unescaped() {
    let out = one(&event(r#"{"model":"gpt\u002d4\"x\""}"#));
    assert_eq!(str_col(&out.batch, "model").as_deref(), Some("gpt-4\"x\""));
}

#[test]
fn batch_keeps_good_events_and_reports_bad_ones_by_index() {
    let good = event(r#"{"model":"a"}"#);
    let body = format!("{good}\n\n{{broken\n{good}\n{}\n", event(r#"{"status":"nope"}"#));
    let out = decode_ndjson(body.as_bytes(), 0).expect("ndjson");
    assert_eq!(out.total, 4, "blank lines are skipped");
    assert_eq!(out.batch.num_rows(), 2);
    let idx: Vec<_> = out.rejected.iter().map(|r| (r.index, r.error_type)).collect();
    assert_eq!(idx, vec![(1, RejectKind::MalformedJson), (3, RejectKind::InvalidValue)]);
    assert_eq!(out.rejected[1].source_module.as_deref(), Some("llm-observatory"));

    let array = format!("[{good}, 5, {good}]");
    let out = decode_json_array(array.as_bytes(), 0).expect("array");
    assert_eq!(out.batch.num_rows(), 2);
    assert_eq!(out.rejected[0].index, 1);
    assert_eq!(out.rejected[0].error_type, RejectKind::InvalidType);
}

#[test]
fn whole_body_errors() {
    assert!(matches!(decode_batch_body(b"  \n", 0), Err(super::BodyError::Empty)));
    assert!(matches!(decode_batch_body(b"[]", 0), Err(super::BodyError::Empty)));
    assert!(matches!(
        decode_batch_body(b"[{,]", 0),
        Err(super::BodyError::MalformedArray(_))
    ));
    assert!(matches!(decode_single(b"", 0), Err(super::BodyError::Empty)));
    let auto = decode_batch_body(format!("  [{}]", event("{}")).as_bytes(), 0).expect("array");
    assert_eq!(auto.batch.num_rows(), 1);
}
