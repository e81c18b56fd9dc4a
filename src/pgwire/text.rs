//! Postgres text forms pgwire does not produce itself: timestamps and times print their
//! fractional seconds without trailing zeros (`2026-11-20 00:05:00+00`, `...:00.25+00`), not
//! always as six digits.

use bytes::{BufMut, BytesMut};
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::DataRow;

/// Whether column `field` is sent as text of a time type.
fn is_text_time(field: &FieldInfo) -> bool {
    field.format() == FieldFormat::Text
        && matches!(
            *field.datatype(),
            Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::TIME | Type::TIMETZ
        )
}

/// Indexes of the columns whose values [`trim_row`] rewrites; empty when none.
pub fn time_columns(fields: &[FieldInfo]) -> Vec<usize> {
    fields
        .iter()
        .enumerate()
        .filter(|(_, f)| is_text_time(f))
        .map(|(i, _)| i)
        .collect()
}

/// `value` with `.ffffff` trimmed the way Postgres prints it (trailing zeros, and the dot when
/// nothing is left); other text is returned unchanged.
pub fn trim_fraction(value: &[u8]) -> Option<Vec<u8>> {
    let dot = value.iter().position(|b| *b == b'.')?;
    let digits = value[dot + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let end = dot + 1 + digits;
    let kept = value[dot + 1..end]
        .iter()
        .rposition(|b| *b != b'0')
        .map_or(0, |p| p + 1);
    if kept == digits {
        return None;
    }
    let mut out = Vec::with_capacity(value.len());
    out.extend_from_slice(&value[..dot]);
    if kept > 0 {
        out.extend_from_slice(&value[dot..dot + 1 + kept]);
    }
    out.extend_from_slice(&value[end..]);
    Some(out)
}

/// Rewrites the time columns `columns` of one encoded row; the row unchanged if it does not
/// parse as expected.
pub fn trim_row(row: DataRow, columns: &[usize]) -> DataRow {
    let mut out = BytesMut::with_capacity(row.data.len());
    let mut at = 0usize;
    let data = &row.data[..];
    for index in 0..usize::try_from(row.field_count).unwrap_or(0) {
        let Some(len_bytes) = data.get(at..at + 4) else {
            return row;
        };
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        at += 4;
        let Ok(n) = usize::try_from(len) else {
            out.put_i32(len); // NULL
            continue;
        };
        let Some(value) = data.get(at..at + n) else {
            return row;
        };
        at += n;
        match columns.contains(&index).then(|| trim_fraction(value)).flatten() {
            Some(trimmed) => {
                out.put_i32(i32::try_from(trimmed.len()).unwrap_or(len));
                out.put_slice(&trimmed);
            }
            None => {
                out.put_i32(len);
                out.put_slice(value);
            }
        }
    }
    if at != data.len() {
        return row;
    }
    DataRow::new(out, row.field_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_print_like_postgres() {
        let t = |s: &str| trim_fraction(s.as_bytes()).map(|v| String::from_utf8(v).expect("utf8"));
        assert_eq!(
            t("2026-11-20 00:05:00.000000+00").as_deref(),
            Some("2026-11-20 00:05:00+00")
        );
        assert_eq!(
            t("2026-11-20 00:05:00.250000+00").as_deref(),
            Some("2026-11-20 00:05:00.25+00")
        );
        assert_eq!(t("2026-11-20 00:05:00.000000").as_deref(), Some("2026-11-20 00:05:00"));
        assert_eq!(t("10:00:00.000001"), None);
        assert_eq!(t("2026-11-20 00:05:00+00"), None);
    }

    #[test]
    fn rows_are_rewritten_column_by_column() {
        let mut data = BytesMut::new();
        for v in [Some("a.000000"), None, Some("2026-11-20 00:05:00.500000+00")] {
            match v {
                Some(v) => {
                    data.put_i32(v.len() as i32);
                    data.put_slice(v.as_bytes());
                }
                None => data.put_i32(-1),
            }
        }
        let row = trim_row(DataRow::new(data, 3), &[1, 2]);
        let mut want = BytesMut::new();
        want.put_i32(8);
        want.put_slice(b"a.000000");
        want.put_i32(-1);
        let trimmed = b"2026-11-20 00:05:00.5+00";
        want.put_i32(trimmed.len() as i32);
        want.put_slice(trimmed);
        assert_eq!(row.data, want);
    }
}
