//! The rewrite of a continuous query's SELECT: `GROUP BY tumble(ts, size)` / `hop(ts, slide,
//! size)` / `session(ts, gap)` become ordinary grouping on `window_start, window_end` columns
//! computed by the query's window UDFs, plus hidden output columns the engine needs:
//!
//! - session windows: `__cq_first` / `__cq_last`, the `min` / `max` event time of each group
//!   (the plan's gap-sized bucket; the engine reads them from the accumulator states to merge
//!   buckets into sessions);
//! - updating emission: `__cq_k0` = `window_start` and `__cq_k1..` = the other `GROUP BY`
//!   expressions, the key under which each (window, key) row is upserted.
//!
//! Hidden columns are stripped from the rows users and downstream queries see.

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, GroupByExpr, Ident,
    ObjectName, SelectItem, SetExpr, Statement as SqlStatement, TableFactor, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use super::CqError;

/// Name of the table each query's plan reads micro-batches from.
pub const INPUT_TABLE: &str = "__cq_input";

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
    /// `session(time, gap)`.
    Session {
        /// Time column.
        time: String,
        /// Gap expression.
        gap: String,
    },
}

impl WindowCall {
    /// The event-time column.
    pub fn time_column(&self) -> &str {
        match self {
            Self::Tumble { time, .. } | Self::Hop { time, .. } | Self::Session { time, .. } => time,
        }
    }
}

/// Prefix of every hidden output column.
pub const HIDDEN_PREFIX: &str = "__cq_";
/// Hidden column: first event time of a session bucket.
pub const SESSION_FIRST: &str = "__cq_first";
/// Hidden column: last event time of a session bucket.
pub const SESSION_LAST: &str = "__cq_last";
/// Internal column of the rewritten input: the event time for the hidden session aggregates.
const SESSION_TIME: &str = "__cq_ts";

/// Name of hidden key column `i` (`0` is `window_start`).
pub fn key_column(i: usize) -> String {
    format!("{HIDDEN_PREFIX}k{i}")
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
    /// Number of hidden key columns (`window_start` + other `GROUP BY` expressions); 0 unless
    /// keys were asked for.
    pub key_columns: usize,
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

/// The expression a `GROUP BY` item stands for when it names a SELECT item: a position
/// (`GROUP BY 2`) or an output alias that is not an input column.
fn resolve_group_item(e: &Expr, projection: &[SelectItem], source_columns: &[String]) -> Expr {
    match e {
        Expr::Value(v) => {
            if let Value::Number(n, _) = &v.value
                && let Ok(pos) = n.parse::<usize>()
                && let Some(item) = pos.checked_sub(1).and_then(|i| projection.get(i))
            {
                match item {
                    SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } => return x.clone(),
                    _ => {}
                }
            }
            e.clone()
        }
        Expr::Identifier(id) if !source_columns.iter().any(|c| c.eq_ignore_ascii_case(&id.value)) => projection
            .iter()
            .find_map(|item| match item {
                SelectItem::ExprWithAlias { expr, alias } if alias.value.eq_ignore_ascii_case(&id.value) => {
                    Some(expr.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| e.clone()),
        _ => e.clone(),
    }
}

fn hidden_item(expr: Expr, name: &str) -> SelectItem {
    SelectItem::ExprWithAlias {
        expr,
        alias: Ident::new(name),
    }
}

fn call(name: &str, arg: &str) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(
                Ident::new(arg),
            )))],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Rewrites a continuous query's SELECT. `source_columns` are the input's columns: an input
/// that already has `window_start`/`window_end` (another query's output) has them replaced.
/// With `keys`, the hidden key columns for updating emission are added.
pub fn rewrite(select_sql: &str, source_columns: &[String], keys: bool) -> Result<Rewritten, CqError> {
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

    for item in &select.projection {
        let name = match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.as_str()),
            SelectItem::UnnamedExpr(Expr::Identifier(id)) => Some(id.value.as_str()),
            _ => None,
        };
        if let Some(name) = name.filter(|n| n.to_ascii_lowercase().starts_with(HIDDEN_PREFIX)) {
            return Err(invalid(format!(
                "output column names starting with `{HIDDEN_PREFIX}` are reserved (`{name}`)"
            )));
        }
    }
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
                    ("session", [t, gap]) => WindowCall::Session {
                        time: time_column(t)?,
                        gap: gap.to_string(),
                    },
                    (n, _) => {
                        return Err(invalid(format!(
                            "wrong number of arguments to {n}: use tumble(ts, size), hop(ts, slide, size) or session(ts, gap)"
                        )));
                    }
                });
            }
            _ => kept.push(e),
        }
    }
    let Some(window) = window else {
        return Err(invalid(
            "GROUP BY must include a window: tumble(timestamp, INTERVAL '1 minute'), hop(timestamp, slide, size) or session(timestamp, gap)",
        ));
    };
    let mut key_columns = 0;
    if keys {
        let key_exprs: Vec<Expr> = std::iter::once(Expr::Identifier(Ident::new("window_start")))
            .chain(
                kept.iter()
                    .map(|e| resolve_group_item(e, &select.projection, source_columns)),
            )
            .collect();
        key_columns = key_exprs.len();
        for (i, e) in key_exprs.into_iter().enumerate() {
            select.projection.push(hidden_item(e, &key_column(i)));
        }
    }
    if matches!(window, WindowCall::Session { .. }) {
        select
            .projection
            .push(hidden_item(call("min", SESSION_TIME), SESSION_FIRST));
        select
            .projection
            .push(hidden_item(call("max", SESSION_TIME), SESSION_LAST));
    }
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
        WindowCall::Session { .. } => format!(
            "SELECT {all}, __window_start({time}) AS window_start, __window_end(__window_start({time})) AS window_end, __session_time({time}) AS {SESSION_TIME} FROM {INPUT_TABLE}"
        ),
    };
    let wrapper = format!("SELECT * FROM ({inner}) AS {}", Ident::with_quote('"', &alias));
    let mut parsed = DFParser::parse_sql_with_dialect(&wrapper, &GenericDialect {})
        .map_err(CqError::internal_in("window rewrite"))?;
    let relation = match parsed.pop_front() {
        Some(Statement::Statement(s)) => match *s {
            SqlStatement::Query(q) => match *q.body {
                SetExpr::Select(mut sel) if !sel.from.is_empty() => sel.from.remove(0).relation,
                _ => return Err(CqError::bug("window rewrite produced no FROM")),
            },
            _ => return Err(CqError::bug("window rewrite produced no query")),
        },
        _ => return Err(CqError::bug("window rewrite produced no statement")),
    };
    select.from[0].relation = relation;
    Ok(Rewritten {
        sql: query.to_string(),
        window,
        source,
        key_columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_tumble_and_hop() {
        let r = rewrite(
            "SELECT window_start, provider, count(*) AS n FROM events WHERE status = 'ok' GROUP BY tumble(timestamp, INTERVAL '1 minute'), provider",
            &[],
            false,
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
        let h = rewrite("SELECT window_start, count(*) FROM events GROUP BY hop(timestamp, INTERVAL '1 minute', INTERVAL '5 minutes')", &[], false)
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
            false,
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
    fn rewrites_session_and_adds_hidden_keys() {
        let cols = vec!["timestamp".to_string(), "model".to_string(), "provider".to_string()];
        let r = rewrite(
            "SELECT window_start, window_end, provider, lower(model) AS m, count(*) AS n FROM events GROUP BY session(timestamp, INTERVAL '5 minutes'), m, 3",
            &cols,
            true,
        )
        .expect("rewrite");
        assert_eq!(
            r.window,
            WindowCall::Session {
                time: "timestamp".into(),
                gap: "INTERVAL '5 minutes'".into()
            }
        );
        assert_eq!(r.key_columns, 3);
        assert!(r.sql.contains("window_start AS __cq_k0"), "{}", r.sql);
        assert!(r.sql.contains("lower(model) AS __cq_k1"), "alias resolved: {}", r.sql);
        assert!(r.sql.contains("provider AS __cq_k2"), "position resolved: {}", r.sql);
        assert!(r.sql.contains("min(__cq_ts) AS __cq_first"), "{}", r.sql);
        assert!(r.sql.contains("__session_time(\"timestamp\") AS __cq_ts"), "{}", r.sql);
        let plain = rewrite(
            "SELECT window_start, count(*) AS n FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute')",
            &cols,
            false,
        )
        .expect("rewrite");
        assert_eq!(plain.key_columns, 0);
        assert!(
            !plain.sql.contains("__cq_k") && !plain.sql.contains("__cq_first"),
            "{}",
            plain.sql
        );
    }

    #[test]
    fn rejects_unsupported_shapes() {
        for sql in [
            "SELECT count(*) FROM events",
            "SELECT count(*) FROM events GROUP BY model",
            "SELECT count(*) FROM events GROUP BY session(timestamp)",
            "SELECT window_start, count(*) AS __cq_n FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute')",
            "SELECT count(*) FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute') ORDER BY 1",
            "SELECT count(*) FROM events a JOIN events b ON a.event_id = b.event_id GROUP BY tumble(a.timestamp, INTERVAL '1 minute')",
            "SELECT count(*) FROM events GROUP BY tumble(timestamp + INTERVAL '1 second', INTERVAL '1 minute')",
            "SELECT count(*) FROM events GROUP BY tumble(timestamp), model",
            "INSERT INTO x VALUES (1)",
        ] {
            assert!(matches!(rewrite(sql, &[], false), Err(CqError::Invalid(_))), "{sql}");
        }
    }
}
