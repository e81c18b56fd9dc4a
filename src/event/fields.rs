//! Typed readers for raw JSON field values, with errors that name the field.
//! They work on raw JSON text slices (from serde's `RawValue` or the scanner) and never build a
//! `serde_json::Value`, so both decoders share every rule and message.

use std::borrow::Cow;

use wide::u8x16;

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

#[cold]
fn wrong_type(field: &str, expected: &str, raw: &str) -> FieldError {
    FieldError::new(
        RejectKind::InvalidType,
        format!("field `{field}` must be {expected}, got {}", json_kind(raw)),
    )
}

/// Reads a JSON string, borrowing it when it has no escapes. `verbatim`: the caller already
/// knows the event's text holds no backslash (the scanner saw none), so the string's content
/// is the text between its quotes.
#[inline(always)]
pub(crate) fn string_in<'a>(verbatim: bool, field: &str, raw: &'a str) -> Result<Cow<'a, str>, FieldError> {
    if verbatim
        && raw.starts_with('"')
        && let Some(content) = raw.get(1..raw.len().saturating_sub(1))
    {
        // The parser already validated the string; without escapes its content is verbatim.
        return Ok(Cow::Borrowed(content));
    }
    string_in_slow(verbatim, field, raw)
}

/// [`string_in`] when the text may hold escapes, or is not a string.
#[inline(never)]
fn string_in_slow<'a>(verbatim: bool, field: &str, raw: &'a str) -> Result<Cow<'a, str>, FieldError> {
    let s = raw;
    if !s.starts_with('"') {
        return Err(wrong_type(field, "a string", s));
    }
    // A branch-free fold: these strings are short, and most events have no escapes at all.
    let escaped = !verbatim && s.bytes().fold(false, |acc, c| acc | (c == b'\\'));
    if !escaped && s.len() >= 2 {
        return Ok(Cow::Borrowed(&s[1..s.len() - 1]));
    }
    serde_json::from_str::<String>(s)
        .map(Cow::Owned)
        .map_err(|e| FieldError::new(RejectKind::InvalidType, format!("field `{field}`: {e}")))
}

/// Reads an optional string; absent and `null` both give `None`.
pub(crate) fn opt_string<'a>(field: &str, raw: Option<&'a str>) -> Result<Option<Cow<'a, str>>, FieldError> {
    opt_string_in(false, field, raw)
}

/// [`opt_string`] with [`string_in`]'s `verbatim`.
#[inline(always)]
pub(crate) fn opt_string_in<'a>(
    verbatim: bool,
    field: &str,
    raw: Option<&'a str>,
) -> Result<Option<Cow<'a, str>>, FieldError> {
    raw.map(|r| string_in(verbatim, field, r)).transpose()
}

/// Reads a required, non-empty string ([`string_in`]'s `verbatim`).
#[inline]
pub(crate) fn required_string_in<'a>(
    verbatim: bool,
    field: &str,
    raw: Option<&'a str>,
) -> Result<Cow<'a, str>, FieldError> {
    let Some(raw) = raw else {
        return Err(FieldError::missing(field));
    };
    let value = string_in(verbatim, field, raw)?;
    let visible_first = value.as_bytes().first().is_some_and(u8::is_ascii_graphic);
    if !visible_first && value.trim().is_empty() {
        return Err(empty_string(field));
    }
    Ok(value)
}

#[cold]
fn empty_string(field: &str) -> FieldError {
    FieldError::new(RejectKind::InvalidValue, format!("field `{field}` must not be empty"))
}

/// Reads an optional finite, non-negative number.
#[inline(always)]
pub(crate) fn opt_non_negative_f64(field: &str, raw: Option<&str>) -> Result<Option<f64>, FieldError> {
    let Some(s) = raw else { return Ok(None) };
    // Plain decimals (digits and one `.`, starting with a digit) are finite and >= 0.
    if s.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && let Some(v) = fast_f64(s.as_bytes())
    {
        return Ok(Some(v));
    }
    non_negative_f64_slow(field, s).map(Some)
}

/// [`opt_non_negative_f64`] for signs, exponents, long mantissas and wrong types.
#[inline(never)]
fn non_negative_f64_slow(field: &str, s: &str) -> Result<f64, FieldError> {
    if !matches!(s.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
        return Err(wrong_type(field, "a number", s));
    }
    let value = match fast_f64(s.as_bytes()) {
        Some(v) => v,
        None => s.parse().map_err(|_| wrong_type(field, "a number", s))?,
    };
    if !value.is_finite() || value < 0.0 {
        return Err(FieldError::new(
            RejectKind::InvalidValue,
            format!("field `{field}` must be a finite number >= 0, got {s}"),
        ));
    }
    Ok(value)
}

/// Powers of ten that are exact `f64`s.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// Clinger's fast path for plain decimals such as `812.345`, `120` or `0.00031` (digits and at
/// most one `.`, no sign or exponent): when the digits as an integer are below 2^53 and there
/// are at most 22 decimals, both that integer and the power of ten are exact doubles, so one
/// IEEE division gives the correctly rounded value — the same bits `str::parse` gives.
/// `None` for anything else (the caller uses `str::parse`).
#[inline(always)]
pub(crate) fn fast_f64(s: &[u8]) -> Option<f64> {
    // At most 19 digits fit a u64; the 2^53 test below decides exactness.
    if s.len() > 20 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut point = s.len();
    for (i, &c) in s.iter().enumerate() {
        let digit = c.wrapping_sub(b'0');
        if digit < 10 {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
        } else if c == b'.' && point == s.len() {
            point = i;
        } else {
            return None;
        }
    }
    let has_point = point < s.len();
    let digits = s.len() - usize::from(has_point);
    if digits == 0 || digits > 19 || mantissa >= 1 << 53 {
        return None;
    }
    let decimals = if has_point { s.len() - point - 1 } else { 0 };
    let scale = POW10.get(decimals)?;
    Some(mantissa as f64 / scale)
}

/// Reads an optional non-negative integer. `12.0` is accepted as 12; `12.5` is not.
#[inline(always)]
pub(crate) fn opt_non_negative_i64(field: &str, raw: Option<&str>) -> Result<Option<i64>, FieldError> {
    let Some(s) = raw else { return Ok(None) };
    // Up to 18 plain digits: no sign, no overflow, the value `str::parse` gives.
    if !s.is_empty() && s.len() <= 18 {
        let mut value = 0i64;
        let mut digits = true;
        for c in s.bytes() {
            let d = c.wrapping_sub(b'0');
            digits &= d < 10;
            value = value.wrapping_mul(10).wrapping_add(i64::from(d));
        }
        if digits {
            return Ok(Some(value));
        }
    }
    non_negative_i64_slow(field, s).map(Some)
}

/// [`opt_non_negative_i64`] for signs, fractions, exponents, long numbers and wrong types.
#[inline(never)]
fn non_negative_i64_slow(field: &str, s: &str) -> Result<i64, FieldError> {
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
    Ok(value)
}

/// Lower-case hex digits and hyphens of one 16-byte block, as bit masks (bit i: byte i).
#[inline(always)]
fn hex_and_hyphens(block: &[u8]) -> Option<(u32, u32)> {
    let bytes: [u8; 16] = block.try_into().ok()?;
    let v = u8x16::new(bytes);
    let within = |lo: u8, hi: u8| v.max(u8x16::splat(lo)).simd_eq(v) & v.min(u8x16::splat(hi)).simd_eq(v);
    let hex = (within(b'0', b'9') | within(b'a', b'f')).to_bitmask();
    let hyphens = v.simd_eq(u8x16::splat(b'-')).to_bitmask();
    Some((hex, hyphens))
}

/// Whether `text` is a UUID in the canonical form it is stored in: 36 bytes, lower-case hex
/// digits with hyphens at 8, 13, 18 and 23 (three 16-byte SIMD checks instead of a parse).
#[inline]
pub(crate) fn is_canonical_uuid(text: &[u8]) -> bool {
    // Bytes 0..16, 16..32 and 20..36 (overlapping), and where their hyphens must be.
    const HYPHENS: [(usize, u32); 3] = [(0, 1 << 8 | 1 << 13), (16, 1 << 2 | 1 << 7), (20, 1 << 3)];
    text.len() == uuid::fmt::Hyphenated::LENGTH
        && HYPHENS.iter().all(|&(at, want)| {
            text.get(at..at + 16)
                .and_then(hex_and_hyphens)
                .is_some_and(|(hex, hyphens)| hyphens == want && hex == !want & 0xFFFF)
        })
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

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    fn same(text: &str) {
        let expected: Option<f64> = text.parse().ok();
        if let Some(fast) = super::fast_f64(text.as_bytes()) {
            let expected = expected.unwrap_or_else(|| panic!("{text:?}: fast path accepted what parse rejects"));
            assert_eq!(fast.to_bits(), expected.to_bits(), "{text:?}");
        }
    }

    /// The SIMD canonical-UUID check agrees with parsing and re-formatting, on canonical ids,
    /// every single-byte change of one, and other accepted spellings.
    #[test]
    fn canonical_uuid_check_agrees_with_the_parser() {
        let reference = |t: &str| uuid::Uuid::parse_str(t).is_ok_and(|u| u.hyphenated().to_string() == t);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..2_000 {
            let id = uuid::Uuid::from_u128(rng.random()).hyphenated().to_string();
            assert!(super::is_canonical_uuid(id.as_bytes()), "{id}");
            for at in 0..id.len() {
                for c in [
                    b'0', b'9', b'a', b'f', b'g', b'A', b'F', b'-', b'/', b':', b'`', b'{', 0xC3,
                ] {
                    let mut b = id.clone().into_bytes();
                    b[at] = c;
                    let Ok(text) = String::from_utf8(b) else { continue };
                    assert_eq!(super::is_canonical_uuid(text.as_bytes()), reference(&text), "{text}");
                }
            }
            for other in [
                id.to_uppercase(),
                id.replace('-', ""),
                format!("{{{id}}}"),
                format!("urn:uuid:{id}"),
                id[..35].to_string(),
                format!("{id}0"),
            ] {
                assert!(!super::is_canonical_uuid(other.as_bytes()), "{other}");
            }
        }
    }

    /// The fast path gives the same bits as `str::parse` wherever it answers, and it answers
    /// for the usual latency and cost shapes.
    #[test]
    fn fast_f64_matches_str_parse() {
        for text in [
            "0",
            "0.0",
            "812.5",
            "812.345",
            "120",
            "0.00031",
            "0.1",
            "0.3",
            "12.",
            ".5",
            "9007199254740991",
            "9007199254740992",
            "1.7976931348623157",
            "123456789012345678",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "1e5",
            "-1.5",
            ".",
            "",
            "1.2.3",
            "00.5",
        ] {
            same(text);
        }
        assert!(super::fast_f64(b"812.345").is_some());
        assert!(super::fast_f64(b"-1.5").is_none());
        assert!(super::fast_f64(b".").is_none());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..500_000 {
            let magnitude = 10u64.pow(rng.random_range(1..8));
            let int: u64 = rng.random_range(0..magnitude);
            let frac_len = rng.random_range(0..9);
            let frac: String = (0..frac_len)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            let text = if frac_len == 0 {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            };
            same(&text);
            assert!(super::fast_f64(text.as_bytes()).is_some(), "{text}");
        }
    }
}
