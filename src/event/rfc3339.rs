//! A fast path for the common RFC 3339 shapes (`2026-11-27T10:00:00.123456Z`,
//! `...+01:00`): fixed positions, no allocation. Anything it is not sure about returns `None`
//! and the caller falls back to chrono, so accepted values and results are exactly chrono's.

fn digits(b: &[u8], from: usize, n: usize) -> Option<u32> {
    let mut v = 0u32;
    for i in from..from + n {
        let d = b.get(i)?.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u32::from(d);
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` with a year in
/// 1970..=9999 and seconds below 60; `None` for anything else (including valid RFC 3339 the
/// fast path does not cover, such as leap seconds, lower-case `t`/`z` or a space separator).
pub(crate) fn fast_micros(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i64::from(digits(b, 0, 4)?);
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = i64::from(digits(b, 11, 2)?);
    let min = i64::from(digits(b, 14, 2)?);
    let sec = i64::from(digits(b, 17, 2)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let mut pos = 19;
    let mut nanos = 0i64;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            nanos = nanos * 10 + i64::from(b[pos] - b'0');
            pos += 1;
        }
        let n = pos - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos *= 10i64.pow(9 - n as u32);
    }
    let offset_secs = match b.get(pos)? {
        b'Z' if pos + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let oh = i64::from(digits(b, pos + 1, 2)?);
            let om = i64::from(digits(b, pos + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    Some(secs * 1_000_000 + nanos / 1000)
}

#[cfg(test)]
mod tests {
    use super::fast_micros;
    use rand::{Rng, SeedableRng};

    fn chrono_micros(s: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros())
    }

    #[test]
    fn agrees_with_chrono_whenever_it_answers() {
        let fixed = [
            "2026-11-27T10:00:00Z",
            "2026-11-27T10:00:00.5+01:00",
            "2026-11-27T10:00:00.123456789-23:59",
            "2024-02-29T23:59:59.999999Z",
            "2023-02-29T00:00:00Z",
            "1970-01-01T00:00:00+01:00",
            "2026-11-27T10:00:00.1234567891Z",
            "2026-11-27T10:00:60Z",
            "2026-11-27t10:00:00z",
            "2026-11-27 10:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:00:00.Z",
            "2026-11-27T10:00:00+24:00",
            "2026-11-27T10:00:00+0100",
            "2026-11-27T10:00:00Zx",
        ];
        for s in fixed {
            if let Some(v) = fast_micros(s) {
                assert_eq!(Some(v), chrono_micros(s), "{s}");
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100_000 {
            let s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{}",
                rng.random_range(1960..2200),
                rng.random_range(0..14),
                rng.random_range(0..33),
                rng.random_range(0..25),
                rng.random_range(0..61),
                rng.random_range(0..61),
                match rng.random_range(0..4) {
                    0 => String::new(),
                    1 => format!(".{}", rng.random_range(0..1000)),
                    2 => format!(".{:06}", rng.random_range(0..1_000_000)),
                    _ => format!(".{:09}", rng.random_range(0..1_000_000_000)),
                },
                match rng.random_range(0..3) {
                    0 => "Z".to_string(),
                    1 => format!("+{:02}:{:02}", rng.random_range(0..25), rng.random_range(0..61)),
                    _ => format!("-{:02}:{:02}", rng.random_range(0..25), rng.random_range(0..61)),
                }
            );
            let fast = fast_micros(&s);
            let slow = chrono_micros(&s);
            if fast.is_some() {
                assert_eq!(fast, slow, "{s}");
            } else {
                // The fast path may only decline what it does not cover.
                let year: i32 = s[..4].parse().expect("year");
                let leap_second = &s[17..19] == "60";
                assert!(
                    slow.is_none() || leap_second || year < 1970,
                    "{s} declined but chrono parses it"
                );
            }
        }
    }
}
