//! Typed readers for raw JSON field values, with errors that name the field.
//! They work on raw JSON text slices (from serde's `RawValue` or the scanner) and never build a
//! `serde_json::Value`, so both decoders share every rule and message.

use std::borrow::Cow;

use super::reject::{FieldError, RejectKind};

fn json_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "string",
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

fn wrong_type(field: &str, expected: &str, raw: &str) -> FieldError {
    FieldError::new(
        RejectKind::InvalidType,
        format!("field `{field}` must be {expected}, got {}", json_kind(raw)),
    )
}

/// Reads a JSON string, borrowing it when it has no escapes.
pub(crate) fn string<'a>(field: &str, raw: &'a str) -> Result<Cow<'a, str>, FieldError> {
    let s = raw;
    if !s.starts_with('"') {
        return Err(wrong_type(field, "a string", s));
    }
    // A branch-free fold: these strings are short, and most events have no escapes at all.
    let escaped = s.bytes().fold(false, |acc, c| acc | (c == b'\\'));
    if !escaped && s.len() >= 2 {
        // The parser already validated the string; without escapes its content is verbatim.
        return Ok(Cow::Borrowed(&s[1..s.len() - 1]));
    }
    serde_json::from_str::<String>(s)
        .map(Cow::Owned)
        .map_err(|e| FieldError::new(RejectKind::InvalidType, format!("field `{field}`: {e}")))
}

/// Reads an optional string; absent and `null` both give `None`.
pub(crate) fn opt_string<'a>(field: &str, raw: Option<&'a str>) -> Result<Option<Cow<'a, str>>, FieldError> {
    raw.map(|r| string(field, r)).transpose()
}

/// Reads a required, non-empty string.
pub(crate) fn required_string<'a>(field: &str, raw: Option<&'a str>) -> Result<Cow<'a, str>, FieldError> {
    let value = string(field, raw.ok_or_else(|| FieldError::missing(field))?)?;
    let visible_first = value.as_bytes().first().is_some_and(u8::is_ascii_graphic);
    if !visible_first && value.trim().is_empty() {
        return Err(FieldError::new(
            RejectKind::InvalidValue,
            format!("field `{field}` must not be empty"),
        ));
    }
    Ok(value)
}

/// Reads an optional finite, non-negative number.
pub(crate) fn opt_non_negative_f64(field: &str, raw: Option<&str>) -> Result<Option<f64>, FieldError> {
    let Some(s) = raw else { return Ok(None) };
    if !matches!(s.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
        return Err(wrong_type(field, "a number", s));
    }
    let value: f64 = s.parse().map_err(|_| wrong_type(field, "a number", s))?;
    if !value.is_finite() || value < 0.0 {
        return Err(FieldError::new(
            RejectKind::InvalidValue,
            format!("field `{field}` must be a finite number >= 0, got {s}"),
        ));
    }
    Ok(Some(value))
}

/// Reads an optional non-negative integer. `12.0` is accepted as 12; `12.5` is not.
pub(crate) fn opt_non_negative_i64(field: &str, raw: Option<&str>) -> Result<Option<i64>, FieldError> {
    let Some(s) = raw else { return Ok(None) };
    if !matches!(s.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
        return Err(wrong_type(field, "an integer", s));
    }
    let value = match s.parse::<i64>() {
        Ok(v) => v,
        Err(_) => match s.parse::<f64>() {
            Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
            _ => return Err(wrong_type(field, "an integer", s)),
        },
    };
    if value < 0 {
        return Err(FieldError::new(
            RejectKind::InvalidValue,
            format!("field `{field}` must be >= 0, got {value}"),
        ));
    }
    Ok(Some(value))
}

/// Parses a UUID (stored later in its lower-case hyphenated form).
pub(crate) fn uuid(field: &str, value: &str) -> Result<uuid::Uuid, FieldError> {
    uuid::Uuid::parse_str(value)
        .map_err(|e| FieldError::new(RejectKind::InvalidValue, format!("field `{field}` must be a UUID: {e}")))
}

/// Parses an RFC 3339 timestamp into microseconds since the epoch.
pub(crate) fn rfc3339_micros(field: &str, value: &str) -> Result<i64, FieldError> {
    if let Some(micros) = super::rfc3339::fast_micros(value) {
        return Ok(micros);
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(value).map_err(|e| {
        FieldError::new(
            RejectKind::InvalidTimestamp,
            format!("field `{field}` must be an RFC 3339 timestamp (e.g. 2026-11-27T10:00:00Z), got {value:?}: {e}"),
        )
    })?;
    Ok(parsed.timestamp_micros())
}

/// Checks that a JSON object has only string values, without allocating.
pub(crate) struct StringMap;

struct AnyStr;

impl<'de> serde::Deserialize<'de> for AnyStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for StringMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StringMap, A::Error> {
                while map.next_entry::<AnyStr, AnyStr>()?.is_some() {}
                Ok(StringMap)
            }
        }
        d.deserialize_map(V)
    }
}
