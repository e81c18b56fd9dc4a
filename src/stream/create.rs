//! `CREATE CONTINUOUS QUERY <name> [WITH (option = value, ...)] AS <select>`: the SQL form of
//! registration (sent to `/api/v1/sql`, and the format of the shipped `queries/*.sql` files).
//!
//! Options mirror the HTTP `options` object; durations are SQL interval strings:
//! `emit = 'updating'`, `emit_interval = '5 seconds'`, `allowed_lateness = '10 seconds'`,
//! `max_future = '1 minute'`, `idle_timeout = '30 seconds'` (or the `_ms` names with a number).

use datafusion::arrow::compute::kernels::cast_utils::parse_interval_month_day_nano;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::CqError;
use super::catalog::OptionsInput;

/// `CREATE CONTINUOUS QUERY` split into its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateStatement {
    /// Query name (also the name of its output table).
    pub name: String,
    /// The `SELECT`.
    pub select: String,
    /// Options from the `WITH (...)` clause (all unset without one).
    pub options: OptionsInput,
}

fn invalid(message: impl Into<String>) -> CqError {
    CqError::Invalid(message.into())
}

const SHAPE: &str = "expected `CREATE CONTINUOUS QUERY <name> [WITH (option = 'value', ...)] AS SELECT ...`";

/// Recognises `CREATE CONTINUOUS QUERY`; `None` for any other statement.
pub fn parse_create(sql: &str) -> Option<Result<CreateStatement, CqError>> {
    let trimmed = sql.trim_start();
    let words: Vec<&str> = trimmed.splitn(4, char::is_whitespace).collect();
    let is_create = words.len() >= 3
        && words[0].eq_ignore_ascii_case("create")
        && words[1].eq_ignore_ascii_case("continuous")
        && words[2].eq_ignore_ascii_case("query");
    if !is_create {
        return None;
    }
    Some(parse_rest(words.get(3).map_or("", |r| r.trim_start())))
}

fn starts_with_word(text: &str, word: &str) -> bool {
    text.get(..word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word))
        && text[word.len()..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || c == '(')
}

fn parse_rest(rest: &str) -> Result<CreateStatement, CqError> {
    let name_end = rest.find(|c: char| c.is_whitespace() || c == '(').unwrap_or(rest.len());
    let (name, mut after) = rest.split_at(name_end);
    after = after.trim_start();
    let mut options = OptionsInput::default();
    if starts_with_word(after, "with") {
        let body = after[4..].trim_start();
        let Some(inner) = body.strip_prefix('(') else {
            return Err(invalid(format!(
                "{SHAPE}: WITH must be followed by (option = 'value', ...)"
            )));
        };
        let close = closing_paren(inner).ok_or_else(|| invalid(format!("{SHAPE}: unclosed WITH (")))?;
        options = parse_options(&inner[..close])?;
        after = inner[close + 1..].trim_start();
    }
    if !starts_with_word(after, "as") {
        return Err(invalid(SHAPE));
    }
    let select = after[2..].trim().trim_end_matches(';').trim_end().to_string();
    Ok(CreateStatement {
        name: name.to_string(),
        select,
        options,
    })
}

/// Byte index of the `)` closing an already opened parenthesis, skipping quoted strings.
fn closing_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => return Some(i),
            ')' if !quoted => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A duration option value: an interval string (`'5 seconds'`) → milliseconds.
fn duration_ms(key: &str, value: &Token) -> Result<u64, CqError> {
    let text = match value {
        Token::SingleQuotedString(s) => s.clone(),
        other => {
            return Err(invalid(format!(
                "option `{key}` must be an interval string such as '5 seconds', got {other}"
            )));
        }
    };
    let bad = || {
        invalid(format!(
            "option `{key}` = '{text}' is not a duration: use e.g. '500 milliseconds', '5 seconds', '2 minutes'"
        ))
    };
    let has_unit = text.chars().any(|c| c.is_ascii_alphabetic());
    let v = parse_interval_month_day_nano(&text).map_err(|_| bad())?;
    if !has_unit || v.months != 0 || v.days < 0 || v.nanoseconds < 0 {
        return Err(bad());
    }
    u64::try_from(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000).map_err(|_| bad())
}

fn number(key: &str, value: &Token) -> Result<u64, CqError> {
    match value {
        Token::Number(n, _) => n.parse().map_err(|_| {
            invalid(format!(
                "option `{key}` must be a whole number of milliseconds, got {n}"
            ))
        }),
        other => Err(invalid(format!(
            "option `{key}` must be a whole number of milliseconds, got {other}"
        ))),
    }
}

fn parse_options(text: &str) -> Result<OptionsInput, CqError> {
    let tokens = Tokenizer::new(&GenericDialect {}, text)
        .tokenize()
        .map_err(|e| invalid(format!("WITH options: {e}")))?;
    let tokens: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let mut options = OptionsInput::default();
    let mut seen = Vec::new();
    for item in tokens.split(|t| *t == Token::Comma) {
        let [Token::Word(key), Token::Eq, value] = item else {
            return Err(invalid(format!(
                "WITH options must be `name = value` pairs separated by commas, got `{}`",
                item.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
            )));
        };
        let key = key.value.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(invalid(format!("option `{key}` is given twice")));
        }
        match key.as_str() {
            "emit" => match value {
                Token::SingleQuotedString(s) => options.emit = Some(s.clone()),
                Token::Word(w) => options.emit = Some(w.value.clone()),
                other => {
                    return Err(invalid(format!(
                        "option `emit` must be 'final' or 'updating', got {other}"
                    )));
                }
            },
            "emit_interval" => options.emit_interval_ms = Some(duration_ms(&key, value)?),
            "emit_interval_ms" => options.emit_interval_ms = Some(number(&key, value)?),
            "allowed_lateness" => options.allowed_lateness_ms = Some(duration_ms(&key, value)?),
            "allowed_lateness_ms" => options.allowed_lateness_ms = Some(number(&key, value)?),
            "max_future" => options.max_future_ms = Some(duration_ms(&key, value)?),
            "max_future_ms" => options.max_future_ms = Some(number(&key, value)?),
            "idle_timeout" => options.idle_timeout_ms = Some(duration_ms(&key, value)?),
            "idle_timeout_ms" => options.idle_timeout_ms = Some(number(&key, value)?),
            other => {
                return Err(invalid(format!(
                    "unknown option `{other}` in WITH (...): use emit, emit_interval, allowed_lateness, max_future or idle_timeout"
                )));
            }
        }
        seen.push(key);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_create_continuous_query() {
        let c = parse_create("  create Continuous QUERY llm_1m AS SELECT 1;")
            .expect("is create")
            .expect("valid");
        assert_eq!(c.name, "llm_1m");
        assert_eq!(c.select, "SELECT 1");
        assert_eq!(c.options, OptionsInput::default());
        assert!(parse_create("SELECT 1").is_none());
        assert!(matches!(
            parse_create("CREATE CONTINUOUS QUERY x SELECT 1"),
            Some(Err(_))
        ));
    }

    #[test]
    fn parses_with_options() {
        let c = parse_create(
            "CREATE CONTINUOUS QUERY x WITH (emit = 'updating', emit_interval = '5 seconds', allowed_lateness = '1 minute', idle_timeout_ms = 250) AS SELECT 1",
        )
        .expect("is create")
        .expect("valid");
        assert_eq!(c.name, "x");
        assert_eq!(c.select, "SELECT 1");
        assert_eq!(c.options.emit.as_deref(), Some("updating"));
        assert_eq!(c.options.emit_interval_ms, Some(5_000));
        assert_eq!(c.options.allowed_lateness_ms, Some(60_000));
        assert_eq!(c.options.idle_timeout_ms, Some(250));
        let c = parse_create("CREATE CONTINUOUS QUERY y WITH(emit='final')AS SELECT ')'")
            .expect("is create")
            .expect("valid");
        assert_eq!((c.name.as_str(), c.select.as_str()), ("y", "SELECT ')'"));
        assert_eq!(c.options.emit.as_deref(), Some("final"));
    }

    #[test]
    fn rejects_bad_options() {
        for (sql, needle) in [
            (
                "CREATE CONTINUOUS QUERY x WITH (colour = 'red') AS SELECT 1",
                "unknown option `colour`",
            ),
            (
                "CREATE CONTINUOUS QUERY x WITH (emit_interval = 'soon') AS SELECT 1",
                "not a duration",
            ),
            (
                "CREATE CONTINUOUS QUERY x WITH (emit_interval = '5') AS SELECT 1",
                "not a duration",
            ),
            (
                "CREATE CONTINUOUS QUERY x WITH (emit_interval = '1 month') AS SELECT 1",
                "not a duration",
            ),
            (
                "CREATE CONTINUOUS QUERY x WITH (emit_interval = 5) AS SELECT 1",
                "interval string",
            ),
            (
                "CREATE CONTINUOUS QUERY x WITH (emit 'final') AS SELECT 1",
                "name = value",
            ),
            (
                "CREATE CONTINUOUS QUERY x WITH (emit = 'final', emit = 'final') AS SELECT 1",
                "twice",
            ),
            ("CREATE CONTINUOUS QUERY x WITH (emit = 'final' AS SELECT 1", "unclosed"),
            (
                "CREATE CONTINUOUS QUERY x WITH emit = 'final' AS SELECT 1",
                "WITH must be followed",
            ),
        ] {
            match parse_create(sql) {
                Some(Err(CqError::Invalid(m))) => assert!(m.contains(needle), "{sql}: {m}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
    }
}
