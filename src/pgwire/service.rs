//! datafusion-postgres' session service with one step in front: client SQL that DataFusion
//! cannot run as written is rewritten to an equivalent it can, before datafusion-postgres
//! parses it (simple and extended protocol alike).
//!
//! The one rewrite so far is Grafana's schema filter, `quote_ident(table_schema) IN (SELECT ...
//! generate_series(array_lower(string_to_array(current_setting('search_path'), ...` — a
//! correlated table-function join DataFusion cannot plan. Its result is the schemas on the
//! search path, which on the Hub is always `public`, so it becomes `IN ('public')`.
//! (datafusion-postgres would otherwise turn the subquery into `''`, which lists every table
//! schema-qualified and finds no columns for an unqualified table name.)

use std::fmt::Debug;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use datafusion_postgres::DfSessionService;
use futures::{Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::hooks::sql_error;
use crate::query::complexity::ComplexityLimits;

/// Grafana's search-path membership test (`postgresMetaQuery.ts`, `buildSchemaConstraint`).
const GRAFANA_SEARCH_PATH_IN: &str = r#"IN (
    SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
    FROM generate_series(
        array_lower(string_to_array(current_setting('search_path'),','),1),
        array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
)"#;

/// What it is replaced with: the Hub's search path.
const SEARCH_PATH_IN: &str = "IN ('public')";

/// (pattern without whitespace, replacement) token lists.
static REWRITES: LazyLock<Vec<(Vec<Token>, Vec<Token>)>> = LazyLock::new(|| {
    [(GRAFANA_SEARCH_PATH_IN, SEARCH_PATH_IN)]
        .iter()
        .filter_map(|(from, to)| Some((significant(&tokens(from)?), tokens(to)?)))
        .collect()
});

fn tokens(sql: &str) -> Option<Vec<Token>> {
    Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()
}

fn significant(tokens: &[Token]) -> Vec<Token> {
    tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .cloned()
        .collect()
}

/// Whether `tokens[start..]` begins with `pattern` (whitespace skipped); the end index if so.
fn match_at(tokens: &[Token], start: usize, pattern: &[Token]) -> Option<usize> {
    let mut i = start;
    for want in pattern {
        while matches!(tokens.get(i), Some(Token::Whitespace(_))) {
            i += 1;
        }
        if !same_token(tokens.get(i)?, want) {
            return None;
        }
        i += 1;
    }
    Some(i)
}

/// Token equality with SQL's case rules: unquoted words (keywords and identifiers) compare
/// case-insensitively, everything else exactly (Grafana sends both `AS i` and `as i`).
fn same_token(a: &Token, b: &Token) -> bool {
    match (a, b) {
        (Token::Word(x), Token::Word(y)) if x.quote_style.is_none() && y.quote_style.is_none() => {
            x.value.eq_ignore_ascii_case(&y.value)
        }
        _ => a == b,
    }
}

/// Whether `token` is the keyword `user`, `current_user` or `session_user` (unquoted).
fn is_user_keyword(token: &Token) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none()
        && matches!(w.keyword, Keyword::USER | Keyword::CURRENT_USER | Keyword::SESSION_USER))
}

/// The last non-whitespace token of `out`.
fn last_significant(out: &[Token]) -> Option<&Token> {
    out.iter().rev().find(|t| !matches!(t, Token::Whitespace(_)))
}

/// `sql` with the known client patterns replaced, and the bare `user` / `current_user` /
/// `session_user` keywords replaced by the login name as a string literal (what Postgres
/// evaluates them to; DataFusion has no per-connection user). Unchanged (and borrowed) when
/// nothing applies or the text does not tokenize (the parser then reports the error).
pub fn rewrite<'a>(sql: &'a str, login: Option<&str>) -> std::borrow::Cow<'a, str> {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("search_path") && !lower.contains("user") {
        return sql.into();
    }
    let Some(input) = tokens(sql) else {
        return sql.into();
    };
    let mut out: Vec<Token> = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    'outer: while i < input.len() {
        for (pattern, replacement) in REWRITES.iter() {
            if let Some(end) = match_at(&input, i, pattern) {
                out.extend(replacement.iter().cloned());
                i = end;
                changed = true;
                continue 'outer;
            }
        }
        let token = &input[i];
        let next = input[i + 1..].iter().find(|t| !matches!(t, Token::Whitespace(_)));
        let previous = last_significant(&out);
        let keyword_position = !matches!(next, Some(Token::LParen | Token::Period))
            && !matches!(previous, Some(Token::Period))
            && !matches!(previous, Some(Token::Word(w)) if matches!(w.keyword, Keyword::SHOW | Keyword::SET | Keyword::AS | Keyword::TO | Keyword::CREATE | Keyword::ALTER | Keyword::DROP));
        if let Some(login) = login
            && is_user_keyword(token)
            && keyword_position
        {
            // the tokenizer prints the value between quotes as is: escape them here
            out.push(Token::SingleQuotedString(login.replace('\'', "''")));
            changed = true;
        } else {
            out.push(token.clone());
        }
        i += 1;
    }
    if !changed {
        return sql.into();
    }
    out.iter().map(ToString::to_string).collect::<String>().into()
}

/// Client metadata key of the statement timeout in ms (set at login and by
/// `SET statement_timeout`, shared with datafusion-postgres).
pub const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

pub(super) fn statement_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Duration> {
    client
        .metadata()
        .get(STATEMENT_TIMEOUT_KEY)
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// Runs a result up to its first row while still inside the handler: DataFusion computes
/// aggregations on the first poll, and only the handler's part of a query can be interrupted
/// by a cancel request or the statement timeout. The rest of the rows stream as before.
///
/// The rows are counted as they stream: past `max_bytes` of row data the stream ends with an
/// error (SQLSTATE 54000, program_limit_exceeded), as Postgres ends a result that fails midway.
async fn first_row_now(response: Response, timeout: Option<Duration>, max_bytes: usize) -> PgWireResult<Response> {
    let Response::Query(mut query) = response else {
        return Ok(response);
    };
    let mut rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    let first = match timeout {
        Some(t) => tokio::time::timeout(t, rows.next())
            .await
            .map_err(|_| sql_error("57014", "canceling statement due to statement timeout".into()))?,
        None => rows.next().await,
    };
    let first = match first {
        Some(Err(e)) => return Err(e),
        other => other,
    };
    let rows = futures::stream::iter(first)
        .chain(rows)
        .scan(0usize, move |sent, row| {
            // `usize::MAX` marks a result already cut off.
            if *sent == usize::MAX {
                return futures::future::ready(None);
            }
            let row = row.and_then(|row| {
                *sent = sent.saturating_add(row.data.len());
                if *sent <= max_bytes {
                    return Ok(row);
                }
                *sent = usize::MAX;
                Err(sql_error(
                    SQLSTATE_RESULT_TOO_LARGE,
                    format!(
                        "the result exceeds query.max_result_bytes = {max_bytes} bytes; add a LIMIT, select fewer columns or aggregate"
                    ),
                ))
            });
            futures::future::ready(Some(row))
        });
    let time_columns = super::text::time_columns(&query.row_schema);
    query.data_rows = if time_columns.is_empty() {
        Box::pin(rows)
    } else {
        Box::pin(rows.map(move |row| row.map(|r| super::text::trim_row(r, &time_columns))))
    };
    Ok(Response::Query(query))
}

/// DataFusion-only statements the Postgres parser cannot even read (`CREATE EXTERNAL TABLE`,
/// DataFusion's `COPY ... TO 'file'`): refused like every other write, with 42501, instead of a
/// syntax error.
fn refuse_datafusion_only(sql: &str) -> PgWireResult<()> {
    let upper = sql.to_ascii_uppercase();
    if !(upper.contains("EXTERNAL") || upper.contains("COPY")) {
        return Ok(());
    }
    let Ok(statements) = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}) else {
        return Ok(());
    };
    for statement in &statements {
        if matches!(statement, DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_)) {
            let kind = crate::query::guard::statement_kind(&statement.to_string());
            return Err(sql_error(
                super::hooks::SQLSTATE_READ_ONLY,
                crate::query::GuardError::Refused(kind).to_string(),
            ));
        }
    }
    Ok(())
}

/// SQLSTATE of a result over `query.max_result_bytes`: program_limit_exceeded.
pub const SQLSTATE_RESULT_TOO_LARGE: &str = "54000";

/// SQLSTATE of a statement beyond the shape limits: statement_too_complex.
pub const SQLSTATE_TOO_COMPLEX: &str = "54001";

/// Refuses statements beyond the shape limits before anything parses them (see
/// `query::complexity`).
fn refuse_too_complex(sql: &str, limits: &ComplexityLimits) -> PgWireResult<()> {
    crate::query::complexity::check(sql, limits).map_err(|e| sql_error(SQLSTATE_TOO_COMPLEX, e.to_string()))
}

/// Builds the datafusion-postgres service of one tenant.
pub type TenantSessionFactory =
    Box<dyn Fn(&str) -> Result<Arc<DfSessionService>, datafusion::error::DataFusionError> + Send + Sync>;

/// datafusion-postgres services: one over the whole catalog, and one per tenant (built on its
/// first login) over that tenant's view of it ([`super::catalog::wire_context_for`]). A login
/// bound to a tenant is parsed, planned and run in its tenant's service only, so a statement's
/// plan never holds a table outside that view.
pub struct Sessions {
    whole: Arc<DfSessionService>,
    tenant_of_user: std::collections::HashMap<String, String>,
    by_tenant: std::sync::Mutex<std::collections::HashMap<String, Arc<DfSessionService>>>,
    make: TenantSessionFactory,
}

impl Sessions {
    /// `whole` for unbound logins; `tenant_of_user` maps bound logins; `make` builds a tenant's.
    pub fn new(
        whole: Arc<DfSessionService>,
        tenant_of_user: std::collections::HashMap<String, String>,
        make: TenantSessionFactory,
    ) -> Self {
        Self {
            whole,
            tenant_of_user,
            by_tenant: std::sync::Mutex::new(std::collections::HashMap::new()),
            make,
        }
    }

    /// The tenant the client's login is bound to (an API key's, or a configured user's).
    pub fn tenant_of<'a, C: ClientInfo + ?Sized>(&'a self, client: &'a C) -> Option<&'a str> {
        if let Some(t) = client.metadata().get(super::auth::METADATA_KEY_TENANT) {
            return Some(t);
        }
        let user = client.metadata().get(pgwire::api::METADATA_USER)?;
        self.tenant_of_user.get(user).map(String::as_str)
    }

    /// The service the client's statements run in.
    fn for_client<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<Arc<DfSessionService>> {
        let Some(tenant) = self.tenant_of(client) else {
            return Ok(Arc::clone(&self.whole));
        };
        let mut by_tenant = self.by_tenant.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = by_tenant.get(tenant) {
            return Ok(Arc::clone(s));
        }
        let made = (self.make)(tenant).map_err(|e| sql_error("XX000", format!("tenant session: {e}")))?;
        by_tenant.insert(tenant.to_string(), Arc::clone(&made));
        Ok(made)
    }
}

/// The session service the listener uses.
pub struct HubService {
    sessions: Arc<Sessions>,
    parser: Arc<HubParser>,
    max_result_bytes: usize,
    /// The result cache for extended-protocol portals, with the session it plans in (logins
    /// without a tenant; a tenant's portals are answered by its own session).
    cache: Option<(Arc<super::cache::WireCache>, Arc<datafusion::prelude::SessionContext>)>,
}

impl HubService {
    /// Wraps datafusion-postgres' services.
    pub fn new(
        sessions: Arc<Sessions>,
        complexity: ComplexityLimits,
        max_result_bytes: usize,
        cache: Option<(Arc<super::cache::WireCache>, Arc<datafusion::prelude::SessionContext>)>,
    ) -> Self {
        let parser = Arc::new(HubParser {
            sessions: Arc::clone(&sessions),
            complexity,
        });
        Self {
            sessions,
            parser,
            max_result_bytes,
            cache,
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for HubService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        refuse_too_complex(query, &self.parser.complexity)?;
        refuse_datafusion_only(query)?;
        let login = client.metadata().get(pgwire::api::METADATA_USER).cloned();
        let query = rewrite(query, login.as_deref());
        let timeout = statement_timeout(client);
        let session = self.sessions.for_client(client)?;
        let mut out = Vec::new();
        for response in SimpleQueryHandler::do_query(session.as_ref(), client, &query).await? {
            out.push(first_row_now(response, timeout, self.max_result_bytes).await?);
        }
        Ok(out)
    }
}

type WireStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

#[async_trait]
impl ExtendedQueryHandler for HubService {
    type Statement = WireStatement;
    type QueryParser = HubParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.sessions.for_client(client)?;
        if let Some((cache, ctx)) = &self.cache
            && self.sessions.tenant_of(client).is_none()
            && let (_, Some((statement, plan))) = &portal.statement.statement
        {
            let variant = super::cache::extended_variant(portal);
            let params = || super::cache::parameter_values(portal, plan);
            let info: &(dyn ClientInfo + Send + Sync) = &*client;
            if let Some(response) = cache
                .extended(
                    (statement, plan),
                    &variant,
                    params,
                    &portal.result_column_format,
                    ctx,
                    info,
                )
                .await
            {
                return first_row_now(response?, statement_timeout(client), self.max_result_bytes).await;
            }
        }
        let response = ExtendedQueryHandler::do_query(session.as_ref(), client, portal, max_rows).await?;
        first_row_now(response, statement_timeout(client), self.max_result_bytes).await
    }
}

/// datafusion-postgres' parser (the client's session's) behind the rewrite.
pub struct HubParser {
    sessions: Arc<Sessions>,
    complexity: ComplexityLimits,
}

#[async_trait]
impl QueryParser for HubParser {
    type Statement = WireStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        refuse_too_complex(sql, &self.complexity)?;
        refuse_datafusion_only(sql)?;
        let sql = rewrite(
            sql,
            client.metadata().get(pgwire::api::METADATA_USER).map(String::as_str),
        );
        let session = self.sessions.for_client(client)?;
        session.query_parser().parse_sql(client, &sql, types).await
    }

    // The two below read only the parsed statement and its plan, whichever session made them.
    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.sessions.whole.query_parser().get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.sessions
            .whole
            .query_parser()
            .get_result_schema(stmt, column_format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_schema_filter_becomes_the_search_path() {
        let sql = r#"SELECT quote_ident(table_name) FROM information_schema.tables
          WHERE quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          ) ORDER BY 1"#;
        let out = rewrite(sql, Some("grafana"));
        assert!(out.contains("IN ('public') ORDER BY 1"), "{out}");
        assert!(!out.contains("generate_series"), "{out}");
        assert!(out.starts_with("SELECT quote_ident(table_name) FROM information_schema.tables"));
        assert!(matches!(rewrite("SELECT 1", Some("g")), std::borrow::Cow::Borrowed(_)));
        let other = "SELECT current_setting('search_path')";
        assert_eq!(rewrite(other, Some("g")), other);
    }

    #[test]
    fn patterns_match_keywords_in_any_case() {
        let upper = GRAFANA_SEARCH_PATH_IN
            .replace(" as i", " AS i")
            .replace("SELECT", "select");
        let sql = format!("SELECT 1 FROM information_schema.tables WHERE quote_ident(table_schema) {upper}");
        let out = rewrite(&sql, Some("grafana"));
        assert!(out.contains("IN ('public')"), "{out}");
    }

    #[test]
    fn user_keywords_become_the_login() {
        assert_eq!(
            rewrite("SELECT user AS u, current_user", Some("o'neil")),
            "SELECT 'o''neil' AS u, 'o''neil'"
        );
        assert_eq!(rewrite("SELECT session_user", Some("g")), "SELECT 'g'");
        for unchanged in [
            "SELECT \"user\" FROM t",
            "SELECT t.user FROM t",
            "SHOW session_user",
            "SELECT user_id FROM events",
            "SELECT count(*) AS user FROM t",
        ] {
            assert_eq!(rewrite(unchanged, Some("g")), unchanged);
        }
    }
}
