//! The read-only gate for user SQL: exactly one statement, and only queries, `EXPLAIN` of a
//! query, `SHOW` and `DESCRIBE`. Everything else (DDL, DML, `COPY`, `SET`, transactions) is
//! refused before DataFusion plans it.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{ObjectName, Query, SetExpr, Statement as SqlStatement, visit_relations};
use datafusion::sql::sqlparser::dialect::GenericDialect;

/// Why a statement may not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuardError {
    /// The text does not parse (the parser's error is the source).
    #[error("SQL parse error: {0}")]
    Parse(#[source] Arc<DataFusionError>),
    /// No statement at all.
    #[error("no SQL statement given")]
    Empty,
    /// More than one statement.
    #[error("exactly one SQL statement is allowed per request, got {0}")]
    Multiple(usize),
    /// A statement that could change data or settings.
    #[error("{0} statements are not allowed: this endpoint is read-only (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE)")]
    Refused(String),
    /// A statement beyond the shape limits (operators, set operations, tokens).
    #[error("query too complex: {0}")]
    TooComplex(String),
    /// A query naming a file or URL as a table.
    #[error("reading files or URLs is not allowed ({0}); query the Hub's tables instead")]
    FileAccess(String),
}

/// Two parse errors are equal when they say the same (the parser's error is not comparable).
impl PartialEq for GuardError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Parse(a), Self::Parse(b)) => a.to_string() == b.to_string(),
            (Self::Empty, Self::Empty) => true,
            (Self::Multiple(a), Self::Multiple(b)) => a == b,
            (Self::Refused(a), Self::Refused(b))
            | (Self::TooComplex(a), Self::TooComplex(b))
            | (Self::FileAccess(a), Self::FileAccess(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for GuardError {}

/// Whether a table name is really a path or URL (`'/etc/passwd'`, `'s3://b/x.parquet'`).
fn looks_like_location(name: &ObjectName) -> bool {
    let text = name.to_string().to_ascii_lowercase();
    text.contains('/')
        || text.contains('\\')
        || text.contains("://")
        || [".csv", ".parquet", ".json", ".ndjson", ".arrow", ".avro", ".arrows"]
            .iter()
            .any(|ext| text.trim_end_matches(['\'', '"', '`']).ends_with(ext))
}

/// The first table reference of a parsed SQL statement that names a file or URL.
pub fn sql_file_reference(stmt: &SqlStatement) -> Option<String> {
    match visit_relations(stmt, |name: &ObjectName| {
        if looks_like_location(name) {
            ControlFlow::Break(name.to_string())
        } else {
            ControlFlow::Continue(())
        }
    }) {
        ControlFlow::Break(name) => Some(name),
        ControlFlow::Continue(()) => None,
    }
}

/// The first table reference of `stmt` that names a file or URL.
fn file_reference(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::Statement(s) => sql_file_reference(s),
        Statement::Explain(e) => file_reference(&e.statement),
        _ => None,
    }
}

/// Whether a query writes a table (`SELECT ... INTO t`), anywhere in its set operations.
fn query_writes(query: &Query) -> bool {
    fn body_writes(body: &SetExpr) -> bool {
        match body {
            SetExpr::Select(select) => select.into.is_some(),
            SetExpr::Query(q) => query_writes(q),
            SetExpr::SetOperation { left, right, .. } => body_writes(left) || body_writes(right),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => true,
            SetExpr::Values(_) | SetExpr::Table(_) => false,
        }
    }
    body_writes(&query.body)
}

/// Whether a parsed SQL statement only reads: a query (without `INTO`), `EXPLAIN` of one,
/// `SHOW` or `DESCRIBE`.
pub fn sql_is_read_only(stmt: &SqlStatement) -> bool {
    match stmt {
        SqlStatement::Query(q) => !query_writes(q),
        SqlStatement::Explain { statement, .. } => sql_is_read_only(statement),
        SqlStatement::ShowTables { .. }
        | SqlStatement::ShowColumns { .. }
        | SqlStatement::ShowFunctions { .. }
        | SqlStatement::ShowSchemas { .. }
        | SqlStatement::ExplainTable { .. } => true,
        _ => false,
    }
}

fn is_read_only(stmt: &Statement) -> bool {
    match stmt {
        Statement::Statement(s) => sql_is_read_only(s),
        Statement::Explain(e) => is_read_only(&e.statement),
        Statement::CreateExternalTable(_) | Statement::CopyTo(_) | Statement::Reset(_) => false,
    }
}

/// The leading keywords of a statement, for messages (`CREATE TABLE`, `COPY`, ...).
fn kind(stmt: &Statement) -> String {
    statement_kind(&stmt.to_string())
}

/// The leading keywords of a statement's text, for messages (`CREATE TABLE`, `COPY`, ...).
pub fn statement_kind(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second] if matches!(first.to_uppercase().as_str(), "CREATE" | "DROP" | "ALTER" | "TRUNCATE") => {
            format!("{} {}", first.to_uppercase(), second.to_uppercase())
        }
        [first, ..] => first.to_uppercase(),
        [] => "empty".into(),
    }
}

/// Checks that `sql` is a single read-only statement.
pub fn check_read_only(sql: &str) -> Result<(), GuardError> {
    let statements =
        DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| GuardError::Parse(Arc::new(e)))?;
    match statements.len() {
        0 => Err(GuardError::Empty),
        1 => {
            let stmt = &statements[0];
            if !is_read_only(stmt) {
                return Err(GuardError::Refused(kind(stmt)));
            }
            match file_reference(stmt) {
                Some(name) => Err(GuardError::FileAccess(name)),
                None => Ok(()),
            }
        }
        n => Err(GuardError::Multiple(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_queries() {
        for sql in [
            "SELECT 1",
            "select count(*) from events where model = 'x'",
            "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
            "EXPLAIN SELECT * FROM events",
            "SHOW TABLES",
            "SHOW COLUMNS FROM events",
            "DESCRIBE events",
            "SELECT 1; ",
        ] {
            assert_eq!(check_read_only(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn refuses_writes_and_settings() {
        for (sql, kind) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
                "CREATE EXTERNAL",
            ),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE events", "DROP TABLE"),
            ("INSERT INTO events VALUES (1)", "INSERT"),
            ("DELETE FROM events", "DELETE"),
            ("UPDATE events SET model = 'x'", "UPDATE"),
            ("COPY events TO '/tmp/x.csv'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN COPY events TO '/tmp/x'", "EXPLAIN"),
            ("BEGIN", "BEGIN"),
            ("SELECT * INTO t2 FROM events", "SELECT"),
        ] {
            match check_read_only(sql) {
                Err(GuardError::Refused(k)) => assert_eq!(k, kind, "{sql}"),
                other => panic!("{sql}: expected refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_file_and_url_tables() {
        for sql in [
            "SELECT * FROM '/etc/passwd'",
            "SELECT * FROM 'data/events/events-000000000000.parquet'",
            "SELECT * FROM 'https://example.com/x.csv'",
            "SELECT * FROM \"x.parquet\"",
            "WITH a AS (SELECT * FROM '/tmp/x.json') SELECT * FROM a",
            "EXPLAIN SELECT * FROM '/etc/passwd'",
            "SELECT * FROM events WHERE event_id IN (SELECT event_id FROM 'f.csv')",
        ] {
            assert!(matches!(check_read_only(sql), Err(GuardError::FileAccess(_))), "{sql}");
        }
        assert_eq!(check_read_only("SELECT '/path' AS p, payload FROM events"), Ok(()));
    }

    #[test]
    fn rejects_garbage_and_multiple() {
        let parse = check_read_only("SELEC 1");
        assert!(matches!(parse, Err(GuardError::Parse(_))));
        // The parser's error is kept as the source.
        assert!(parse.err().as_ref().and_then(std::error::Error::source).is_some());
        assert_eq!(check_read_only("  "), Err(GuardError::Empty));
        assert_eq!(check_read_only("SELECT 1; SELECT 2"), Err(GuardError::Multiple(2)));
    }
}
