//! SQL front end of continuous queries: `CREATE CONTINUOUS QUERY name AS SELECT ...` and the
//! rewrite of `GROUP BY tumble(ts, size)` / `hop(ts, slide, size)` into ordinary grouping on
//! `window_start, window_end` columns computed by the query's window UDFs.

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, SetExpr, Statement as SqlStatement,
    TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use super::CqError;

/// Name of the table each query's plan reads micro-batches from.
pub const INPUT_TABLE: &str = "__cq_input";

/// `CREATE CONTINUOUS QUERY <name> AS <select>` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateStatement {
    /// Query name (also the name of its output table).
    pub name: String,
    /// The `SELECT`.
    pub select: String,
}

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
    let rest = words.get(3).map_or("", |r| r.trim_start());
    let name_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (name, after) = rest.split_at(name_end);
    let after = after.trim_start();
    let Some(select) = after
        .get(..2)
        .filter(|kw| kw.eq_ignore_ascii_case("as"))
        .map(|_| after[2..].trim())
    else {
        return Some(Err(CqError::Invalid(
            "expected `CREATE CONTINUOUS QUERY <name> AS SELECT ...`".into(),
        )));
    };
    let select = select.trim_end().trim_end_matches(';').to_string();
    Some(Ok(CreateStatement {
        name: name.to_string(),
        select,
    }))
}

/// The window function found in `GROUP BY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowCall {
    /// `tumble(time, size)`.
    Tumble {
        /// Time column.
        time: String,
        /// Size expression (SQL text), e.g. `INTERVAL '1 minute'`.
        size: String,
    },
    /// `hop(time, slide, size)`.
    Hop {
        /// Time column.
        time: String,
        /// Slide expression.
        slide: String,
        /// Size expression.
        size: String,
    },
}

impl WindowCall {
    /// The event-time column.
    pub fn time_column(&self) -> &str {
        match self {
            Self::Tumble { time, .. } | Self::Hop { time, .. } => time,
        }
    }
}

/// A continuous query's SELECT after the window rewrite.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// SQL over [`INPUT_TABLE`] with `window_start`/`window_end` grouping.
    pub sql: String,
    /// The window.
    pub window: WindowCall,
    /// The table the query reads (`events` or another continuous query).
    pub source: String,
}

fn invalid(message: impl Into<String>) -> CqError {
    CqError::Invalid(message.into())
}

fn window_args(f: &datafusion::sql::sqlparser::ast::Function) -> Result<Vec<Expr>, CqError> {
    let FunctionArguments::List(list) = &f.args else {
        return Err(invalid(format!("{} needs arguments", f.name)));
    };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
            _ => Err(invalid(format!("{}: only positional arguments are supported", f.name))),
        })
        .collect()
}

fn time_column(expr: &Expr) -> Result<String, CqError> {
    match expr {
        Expr::Identifier(id) => Ok(id.value.clone()),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .map(|p| p.value.clone())
            .ok_or_else(|| invalid("empty column")),
        other => Err(invalid(format!(
            "the first window argument must be a timestamp column, got `{other}`"
        ))),
    }
}

/// Rewrites a continuous query's SELECT. `source_columns` are the input's columns: an input
/// that already has `window_start`/`window_end` (another query's output) has them replaced.
pub fn rewrite(select_sql: &str, source_columns: &[String]) -> Result<Rewritten, CqError> {
    let mut statements = DFParser::parse_sql_with_dialect(select_sql, &GenericDialect {})
        .map_err(|e| invalid(format!("SQL parse error: {}", e.strip_backtrace())))?;
    if statements.len() != 1 {
        return Err(invalid("a continuous query is exactly one SELECT statement"));
    }
    let Some(Statement::Statement(stmt)) = statements.pop_front() else {
        return Err(invalid("a continuous query must be a SELECT"));
    };
    let SqlStatement::Query(mut query) = *stmt else {
        return Err(invalid("a continuous query must be a SELECT"));
    };
    if query.with.is_some() {
        return Err(invalid(
            "WITH is not supported in continuous queries; use a subquery-free SELECT",
        ));
    }
    if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(invalid(
            "ORDER BY / LIMIT are not supported in continuous queries (order the output table when you query it)",
        ));
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(invalid("a continuous query must be a single SELECT (no UNION)"));
    };
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(invalid("a continuous query reads exactly one table, without joins"));
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = &select.from[0].relation
    else {
        return Err(invalid("a continuous query reads a table (`FROM events`)"));
    };
    let source = name.to_string().trim_matches('"').to_string();
    let alias = alias.as_ref().map_or_else(|| source.clone(), |a| a.name.value.clone());

    let GroupByExpr::Expressions(exprs, modifiers) = &mut select.group_by else {
        return Err(invalid("GROUP BY ALL is not supported; group by a window function"));
    };
    if !modifiers.is_empty() {
        return Err(invalid("GROUP BY modifiers (ROLLUP, CUBE, ...) are not supported"));
    }
    let mut window = None;
    let mut kept = Vec::with_capacity(exprs.len() + 1);
    for e in exprs.drain(..) {
        let call = match &e {
            Expr::Function(f) => Some((f.name.to_string().to_ascii_lowercase(), f.clone())),
            _ => None,
        };
        match call {
            Some((name, f)) if matches!(name.as_str(), "tumble" | "hop" | "session") => {
                if window.is_some() {
                    return Err(invalid("only one window function per continuous query"));
                }
                let args = window_args(&f)?;
                window = Some(match (name.as_str(), args.as_slice()) {
                    ("tumble", [t, size]) => WindowCall::Tumble {
                        time: time_column(t)?,
                        size: size.to_string(),
                    },
                    ("hop", [t, slide, size]) => WindowCall::Hop {
                        time: time_column(t)?,
                        slide: slide.to_string(),
                        size: size.to_string(),
                    },
                    ("session", _) => {
                        return Err(invalid(
                            "session windows are not supported yet; use tumble(ts, size) or hop(ts, slide, size)",
                        ));
                    }
                    (n, _) => {
                        return Err(invalid(format!(
                            "wrong number of arguments to {n}: use tumble(ts, size) or hop(ts, slide, size)"
                        )));
                    }
                });
            }
            _ => kept.push(e),
        }
    }
    let Some(window) = window else {
        return Err(invalid(
            "GROUP BY must include a window: tumble(timestamp, INTERVAL '1 minute') or hop(timestamp, slide, size)",
        ));
    };
    let mut grouped = vec![
        Expr::Identifier(Ident::new("window_start")),
        Expr::Identifier(Ident::new("window_end")),
    ];
    grouped.extend(kept);
    *exprs = grouped;

    let time = Ident::with_quote('"', window.time_column()).to_string();
    let shadowed: Vec<String> = ["window_start", "window_end"]
        .iter()
        .filter(|c| source_columns.iter().any(|s| s == *c))
        .map(|c| Ident::with_quote('"', *c).to_string())
        .collect();
    let all = if shadowed.is_empty() {
        "*".to_string()
    } else {
        format!("* EXCLUDE ({})", shadowed.join(", "))
    };
    let inner = match &window {
        WindowCall::Tumble { .. } => format!(
            "SELECT {all}, __window_start({time}) AS window_start, __window_end(__window_start({time})) AS window_end FROM {INPUT_TABLE}"
        ),
        WindowCall::Hop { .. } => format!(
            "SELECT *, __window_end(window_start) AS window_end FROM (SELECT {all}, unnest(__window_starts({time})) AS window_start FROM {INPUT_TABLE})"
        ),
    };
    let wrapper = format!("SELECT * FROM ({inner}) AS {}", Ident::with_quote('"', &alias));
    let mut parsed = DFParser::parse_sql_with_dialect(&wrapper, &GenericDialect {})
        .map_err(|e| CqError::Internal(format!("window rewrite: {e}")))?;
    let relation = match parsed.pop_front() {
        Some(Statement::Statement(s)) => match *s {
            SqlStatement::Query(q) => match *q.body {
                SetExpr::Select(mut sel) if !sel.from.is_empty() => sel.from.remove(0).relation,
                _ => return Err(CqError::Internal("window rewrite produced no FROM".into())),
            },
            _ => return Err(CqError::Internal("window rewrite produced no query".into())),
        },
        _ => return Err(CqError::Internal("window rewrite produced no statement".into())),
    };
    select.from[0].relation = relation;
    Ok(Rewritten {
        sql: query.to_string(),
        window,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_create_continuous_query() {
        let c = parse_create("  create Continuous QUERY llm_1m AS SELECT 1;")
            .expect("is create")
            .expect("valid");
        assert_eq!(
            c,
            CreateStatement {
                name: "llm_1m".into(),
                select: "SELECT 1".into()
            }
        );
        assert!(parse_create("SELECT 1").is_none());
        assert!(matches!(
            parse_create("CREATE CONTINUOUS QUERY x SELECT 1"),
            Some(Err(_))
        ));
    }

    #[test]
    fn rewrites_tumble_and_hop() {
        let r = rewrite(
            "SELECT window_start, provider, count(*) AS n FROM events WHERE status = 'ok' GROUP BY tumble(timestamp, INTERVAL '1 minute'), provider",
            &[],
        )
        .expect("rewrite");
        assert_eq!(r.source, "events");
        assert_eq!(
            r.window,
            WindowCall::Tumble {
                time: "timestamp".into(),
                size: "INTERVAL '1 minute'".into()
            }
        );
        assert!(
            r.sql.contains("GROUP BY window_start, window_end, provider"),
            "{}",
            r.sql
        );
        assert!(r.sql.contains("__window_start(\"timestamp\")"), "{}", r.sql);
        let h = rewrite("SELECT window_start, count(*) FROM events GROUP BY hop(timestamp, INTERVAL '1 minute', INTERVAL '5 minutes')", &[])
            .expect("hop");
        assert!(matches!(h.window, WindowCall::Hop { .. }));
        assert!(h.sql.contains("unnest(__window_starts(\"timestamp\"))"), "{}", h.sql);
    }

    #[test]
    fn chained_sources_replace_their_window_columns() {
        let cols = vec!["window_start".to_string(), "window_end".to_string(), "n".to_string()];
        let r = rewrite(
            "SELECT window_start, sum(n) AS n FROM q1 GROUP BY tumble(window_start, INTERVAL '5 minutes')",
            &cols,
        )
        .expect("rewrite");
        assert_eq!(r.source, "q1");
        assert!(
            r.sql.contains("EXCLUDE (\"window_start\", \"window_end\")"),
            "{}",
            r.sql
        );
    }

    #[test]
    fn rejects_unsupported_shapes() {
        for sql in [
            "SELECT count(*) FROM events",
            "SELECT count(*) FROM events GROUP BY model",
            "SELECT count(*) FROM events GROUP BY session(timestamp, INTERVAL '5 minutes')",
            "SELECT count(*) FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute') ORDER BY 1",
            "SELECT count(*) FROM events a JOIN events b ON a.event_id = b.event_id GROUP BY tumble(a.timestamp, INTERVAL '1 minute')",
            "SELECT count(*) FROM events GROUP BY tumble(timestamp + INTERVAL '1 second', INTERVAL '1 minute')",
            "SELECT count(*) FROM events GROUP BY tumble(timestamp), model",
            "INSERT INTO x VALUES (1)",
        ] {
            assert!(matches!(rewrite(sql, &[]), Err(CqError::Invalid(_))), "{sql}");
        }
    }
}
