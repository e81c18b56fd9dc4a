//! The read-only gate of the wire endpoint, as a datafusion-postgres query hook that runs before
//! the built-in ones: the same rules as `POST /api/v1/sql` (`query::guard`), plus the session
//! statements clients send on their own (`BEGIN`, `SET`, `DISCARD ALL`, ...) accepted as
//! harmless no-ops. Refusals carry SQLSTATE 42501 (insufficient privilege).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use pgwire::api::ClientInfo;
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};

use crate::query::guard::{GuardError, sql_file_reference, sql_is_read_only, statement_kind};

/// SQLSTATE of a refused statement: insufficient_privilege.
pub const SQLSTATE_READ_ONLY: &str = "42501";

/// Session variables datafusion-postgres' `SET` hook keeps per connection (the rest would be
/// applied to the shared session, so they are acknowledged and ignored here).
const PER_CONNECTION_VARIABLES: [&str; 7] = [
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

/// What the gate decided for one statement.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Run it (a query, or a session statement a later hook answers).
    Pass,
    /// Answer `SHOW name` with this value (server facts datafusion-postgres reports its own way).
    Show(&'static str, &'static str),
    /// Answer with this command tag and do nothing.
    NoOp(&'static str),
    /// Refuse it.
    Refuse(String),
}

/// An `ERROR` with SQLSTATE `code`, as the client sees it.
pub(crate) fn sql_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message)))
}

fn refusal(message: String) -> PgWireError {
    sql_error(SQLSTATE_READ_ONLY, message)
}

/// Whether a `SET` is one datafusion-postgres keeps per connection.
fn set_is_per_connection(set: &Set) -> bool {
    match set {
        Set::SingleAssignment {
            scope: None,
            hivevar: false,
            variable,
            values,
        } => {
            let name = variable.to_string().to_lowercase();
            PER_CONNECTION_VARIABLES.contains(&name.as_str())
                && (name == "statement_timeout" || matches!(values.first(), Some(Expr::Value(_))))
        }
        Set::SetTimeZone { local: false, .. } => true,
        _ => false,
    }
}

/// `SHOW` variables answered with the Postgres version the Hub announces.
fn server_setting(statement: &Statement) -> Option<(&'static str, &'static str)> {
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    let [name] = variable.as_slice() else {
        return None;
    };
    match name.value.to_ascii_lowercase().as_str() {
        "server_version" => Some(("server_version", super::auth::SERVER_VERSION)),
        "server_version_num" => Some(("server_version_num", super::functions::SERVER_VERSION_NUM)),
        _ => None,
    }
}

fn verdict(statement: &Statement) -> Verdict {
    if let Some((name, value)) = server_setting(statement) {
        return Verdict::Show(name, value);
    }
    match statement {
        Statement::Set(set) if set_is_per_connection(set) => Verdict::Pass,
        Statement::Set(_) => Verdict::NoOp("SET"),
        Statement::Discard { .. } => Verdict::NoOp("DISCARD ALL"),
        Statement::Deallocate { .. } => Verdict::NoOp("DEALLOCATE"),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Verdict::Pass,
        Statement::Declare { .. } => match sql_file_reference(statement) {
            Some(name) => Verdict::Refuse(GuardError::FileAccess(name).to_string()),
            None => Verdict::Pass,
        },
        s if sql_is_read_only(s) => match sql_file_reference(s) {
            Some(name) => Verdict::Refuse(GuardError::FileAccess(name).to_string()),
            None => Verdict::Pass,
        },
        s => Verdict::Refuse(GuardError::Refused(statement_kind(&s.to_string())).to_string()),
    }
}

/// A plan with no columns and no rows, for statements answered by a tag only.
fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(DFSchema::empty()),
    })
}

/// One text row `value` in a column `name`.
fn show_response(name: &str, value: &str) -> PgWireResult<Response> {
    let fields = Arc::new(vec![FieldInfo::new(
        name.to_string(),
        None,
        None,
        Type::TEXT,
        FieldFormat::Text,
    )]);
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    encoder.encode_field(&Some(value))?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter([Ok(row)]),
    )))
}

/// The plan `Describe` sees for a `SHOW` the hook answers: one text column.
fn show_plan(name: &str) -> PgWireResult<LogicalPlan> {
    let schema = Schema::new(vec![Field::new(name, DataType::Utf8, false)]);
    let schema = DFSchema::try_from(schema).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: true,
        schema: Arc::new(schema),
    }))
}

/// The read-only gate (first in the hook list).
#[derive(Debug, Default)]
pub struct ReadOnlyHook;

impl ReadOnlyHook {
    fn answer(statement: &Statement) -> Option<PgWireResult<Response>> {
        match verdict(statement) {
            Verdict::Pass => None,
            Verdict::Show(name, value) => Some(show_response(name, value)),
            Verdict::NoOp(tag) => Some(Ok(Response::Execution(Tag::new(tag)))),
            Verdict::Refuse(message) => {
                tracing::info!(statement = %statement_kind(&statement.to_string()), "pgwire: refused a statement");
                Some(Err(refusal(message)))
            }
        }
    }
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::answer(statement)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match verdict(statement) {
            Verdict::Pass => None,
            Verdict::Show(name, _) => Some(show_plan(name)),
            Verdict::NoOp(_) => Some(Ok(empty_plan())),
            Verdict::Refuse(message) => Some(Err(refusal(message))),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::answer(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn verdict_of(sql: &str) -> Verdict {
        let statements = PostgresCompatibilityParser::new().parse(sql).expect("parses");
        verdict(&statements[0])
    }

    #[test]
    fn queries_and_session_statements_pass() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT * FROM events",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SET statement_timeout = 5000",
            "SET application_name = 'grafana'",
            "SET TIME ZONE 'UTC'",
            "SHOW statement_timeout",
            "DECLARE c CURSOR FOR SELECT 1",
        ] {
            assert_eq!(verdict_of(sql), Verdict::Pass, "{sql}");
        }
        assert_eq!(verdict_of("DISCARD ALL"), Verdict::NoOp("DISCARD ALL"));
        assert_eq!(
            verdict_of("SHOW server_version"),
            Verdict::Show("server_version", "16.6")
        );
        assert_eq!(
            verdict_of("SHOW server_version_num"),
            Verdict::Show("server_version_num", "160006")
        );
        assert_eq!(
            verdict_of("SET datafusion.execution.batch_size = 1"),
            Verdict::NoOp("SET")
        );
        assert_eq!(verdict_of("SET search_path TO public"), Verdict::NoOp("SET"));
    }

    #[test]
    fn writes_and_files_are_refused() {
        for sql in [
            "CREATE TABLE t (a INT)",
            "DROP TABLE events",
            "INSERT INTO events VALUES (1)",
            "UPDATE events SET model = 'x'",
            "DELETE FROM events",
            "COPY events TO STDOUT",
            "SELECT * INTO t2 FROM events",
            "SELECT * FROM '/etc/passwd'",
            "DECLARE c CURSOR FOR SELECT * FROM 'x.csv'",
            "EXPLAIN SELECT * FROM 'data/x.parquet'",
            "CREATE VIEW v AS SELECT 1",
        ] {
            assert!(matches!(verdict_of(sql), Verdict::Refuse(_)), "{sql}");
        }
    }
}
