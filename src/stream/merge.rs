//! Cluster-wide continuous-query tables (issue #22): in a cluster each instance aggregates only
//! the events of its own share, so rows of one window and key come from several instances. A
//! table is cluster-wide when those rows can be merged at query time: its **merge form** is the
//! SELECT of the query that rolls it up (`llm_provider_model_5m` for `…_1m`; a derived level
//! reading a table of its own columns is its own), regrouped by `window_start, window_end` and
//! the keys instead of by a coarser window. Every shipped rollup qualifies; a query whose
//! columns cannot be merged (`count(DISTINCT …)`, `first_value`, a filter in the rollup) stays
//! per instance and says so (`scope` in `/api/v1/queries`).

use std::collections::HashMap;

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem, SetExpr, Statement as SqlStatement,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;

/// Aggregates whose result, aggregated again by themselves, is the aggregate of the union:
/// what a merge may apply to a column.
const MERGES: [&str; 4] = ["sum", "min", "max", "sketch_merge"];

/// Whether a base column computed by `base` is merged by `merge`.
fn merges(base: &str, merge: &str) -> bool {
    match merge {
        "sum" => matches!(base, "sum" | "count"),
        "min" => base == "min",
        "max" => base == "max",
        "sketch_merge" => matches!(base, "sketch_merge" | "quantile_sketch"),
        _ => false,
    }
}

/// How the rows of one window and key from several instances become one row.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeForm {
    /// The SELECT list (SQL), in the table's column order.
    items: Vec<String>,
    /// `window_start`, `window_end` and the keys.
    group_by: Vec<String>,
    /// Output columns that are one merge aggregate of the same column (`sum(requests) AS
    /// requests`): name → aggregate.
    direct: HashMap<String, String>,
}

impl MergeForm {
    /// The merge as SQL over `rows` (every instance's rows of the table).
    pub fn sql(&self, rows: &str) -> String {
        format!(
            "SELECT {} FROM {rows} GROUP BY {}",
            self.items.join(", "),
            self.group_by.join(", ")
        )
    }

    /// Whether this form merges the rows of a query whose SELECT is `base_sql` (every column
    /// this form merges directly was made by an aggregate that merge composes with), else why not.
    pub fn fits(&self, base_sql: &str) -> Result<(), String> {
        let base = base_aggregates(base_sql)?;
        for (column, merge) in &self.direct {
            match base.get(column) {
                Some(agg) if merges(agg, merge) => {}
                Some(agg) => return Err(format!("`{column}` is a {agg}(), which {merge}() does not merge")),
                None => return Err(format!("`{column}` is not one aggregate, so {merge}() cannot merge it")),
            }
        }
        Ok(())
    }
}

fn parse_select(sql: &str) -> Result<Box<datafusion::sql::sqlparser::ast::Select>, String> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| e.strip_backtrace())?;
    let (Some(Statement::Statement(stmt)), None) = (statements.pop_front(), statements.pop_front()) else {
        return Err("not one SELECT".into());
    };
    let SqlStatement::Query(query) = *stmt else {
        return Err("not a SELECT".into());
    };
    match *query.body {
        SetExpr::Select(select) => Ok(select),
        _ => Err("not a single SELECT".into()),
    }
}

fn item_parts(item: &SelectItem) -> Option<(&Expr, String)> {
    match item {
        SelectItem::ExprWithAlias { expr, alias } => Some((expr, alias.value.to_ascii_lowercase())),
        SelectItem::UnnamedExpr(e @ Expr::Identifier(id)) => Some((e, id.value.to_ascii_lowercase())),
        _ => None,
    }
}

fn function_name(f: &datafusion::sql::sqlparser::ast::Function) -> String {
    f.name.to_string().to_ascii_lowercase()
}

fn arg_exprs(f: &datafusion::sql::sqlparser::ast::Function) -> Vec<&Expr> {
    match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Output column → its aggregate, for the SELECT items that are one aggregate call.
fn base_aggregates(sql: &str) -> Result<HashMap<String, String>, String> {
    let select = parse_select(sql)?;
    Ok(select
        .projection
        .iter()
        .filter_map(item_parts)
        .filter_map(|(expr, name)| match expr {
            Expr::Function(f) => Some((name, function_name(f))),
            _ => None,
        })
        .collect())
}

/// Checks one SELECT expression of a merge: columns outside an aggregate must be grouped on,
/// aggregates must be merges (`is_aggregate` names the session's aggregate functions).
fn check(expr: &Expr, groups: &[String], in_merge: bool, is_aggregate: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let recurse = |e: &Expr| check(e, groups, in_merge, is_aggregate);
    match expr {
        Expr::Identifier(id) => {
            if in_merge || groups.contains(&id.value.to_ascii_lowercase()) {
                Ok(())
            } else {
                Err(format!("`{}` is neither grouped on nor aggregated", id.value))
            }
        }
        Expr::Value(_) | Expr::Interval(_) | Expr::TypedString { .. } => Ok(()),
        Expr::Nested(e) | Expr::UnaryOp { expr: e, .. } | Expr::IsNull(e) | Expr::IsNotNull(e) => recurse(e),
        Expr::Cast { expr, .. } => recurse(expr),
        Expr::BinaryOp { left, right, .. } => recurse(left).and_then(|()| recurse(right)),
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            if let Some(o) = operand {
                recurse(o)?;
            }
            for when in conditions {
                recurse(&when.condition)?;
                recurse(&when.result)?;
            }
            else_result.as_deref().map_or(Ok(()), recurse)
        }
        Expr::Function(f) => {
            let name = function_name(f);
            if f.over.is_some() || f.filter.is_some() {
                return Err(format!("{name}() with OVER or FILTER"));
            }
            if MERGES.contains(&name.as_str()) {
                if matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment.is_some()) {
                    return Err(format!("{name}(DISTINCT …) is not a merge"));
                }
                return arg_exprs(f)
                    .into_iter()
                    .try_for_each(|e| check(e, groups, true, is_aggregate));
            }
            if is_aggregate(&name) {
                return Err(format!("{name}() of partial rows is not the {name}() of their events"));
            }
            arg_exprs(f).into_iter().try_for_each(recurse)
        }
        other => Err(format!("`{other}` is not supported in a merge")),
    }
}

/// The merge form a rollup's SELECT gives, or why it gives none: one tumble or hop window,
/// keys that are plain columns, no WHERE / HAVING / DISTINCT, and every column a merge
/// aggregate (sum, min, max, sketch_merge), a key, or an expression over those.
pub fn merge_form(select_sql: &str, is_aggregate: &dyn Fn(&str) -> bool) -> Result<MergeForm, String> {
    let select = parse_select(select_sql)?;
    if select.selection.is_some() || select.having.is_some() {
        return Err("it filters rows (WHERE / HAVING)".into());
    }
    if select.distinct.is_some() {
        return Err("SELECT DISTINCT".into());
    }
    let GroupByExpr::Expressions(exprs, modifiers) = &select.group_by else {
        return Err("GROUP BY ALL".into());
    };
    if !modifiers.is_empty() {
        return Err("GROUP BY modifiers".into());
    }
    let mut group_by = vec!["window_start".to_string(), "window_end".to_string()];
    let mut windows = 0;
    for e in exprs {
        match e {
            Expr::Function(f) if matches!(function_name(f).as_str(), "tumble" | "hop") => windows += 1,
            Expr::Function(f) if function_name(f) == "session" => {
                return Err("session windows merge across instances only as sessions".into());
            }
            Expr::Identifier(id) => group_by.push(id.value.to_ascii_lowercase()),
            other => return Err(format!("the key `{other}` is not a plain column")),
        }
    }
    if windows != 1 {
        return Err("not one tumble or hop window".into());
    }
    let mut items = Vec::with_capacity(select.projection.len());
    let mut direct = HashMap::new();
    for item in &select.projection {
        let Some((expr, name)) = item_parts(item) else {
            return Err(format!("`{item}` has no name"));
        };
        check(expr, &group_by, false, is_aggregate)?;
        if let Expr::Function(f) = expr
            && let [Expr::Identifier(arg)] = arg_exprs(f).as_slice()
            && arg.value.eq_ignore_ascii_case(&name)
            && MERGES.contains(&function_name(f).as_str())
        {
            direct.insert(name, function_name(f));
        }
        items.push(item.to_string());
    }
    Ok(MergeForm {
        items,
        group_by,
        direct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aggregates(name: &str) -> bool {
        matches!(
            name,
            "count" | "sum" | "min" | "max" | "avg" | "stddev" | "quantile_sketch" | "sketch_merge" | "first_value"
        )
    }

    const BASE_1M: &str = "SELECT window_start, window_end, model, count(*) AS requests, \
        sum(input_tokens) AS input_tokens, max(latency_ms) AS max_latency_ms, \
        quantile_sketch(latency_ms) AS latency_sketch, \
        sketch_quantile(quantile_sketch(latency_ms), 0.99) AS p99_latency_ms \
        FROM events WHERE model IS NOT NULL GROUP BY tumble(timestamp, INTERVAL '1 minute'), model";

    const ROLLUP_5M: &str = "SELECT window_start, window_end, model, sum(requests) AS requests, \
        sum(input_tokens) AS input_tokens, max(max_latency_ms) AS max_latency_ms, \
        sketch_merge(latency_sketch) AS latency_sketch, \
        sketch_quantile(sketch_merge(latency_sketch), 0.99) AS p99_latency_ms \
        FROM m_1m GROUP BY tumble(window_start, INTERVAL '5 minutes'), model";

    #[test]
    fn a_rollup_gives_the_merge_of_its_level_and_of_the_level_below() {
        let form = merge_form(ROLLUP_5M, &aggregates).expect("a merge");
        assert_eq!(
            form.sql("rows"),
            "SELECT window_start, window_end, model, sum(requests) AS requests, sum(input_tokens) AS input_tokens, \
             max(max_latency_ms) AS max_latency_ms, sketch_merge(latency_sketch) AS latency_sketch, \
             sketch_quantile(sketch_merge(latency_sketch), 0.99) AS p99_latency_ms FROM rows \
             GROUP BY window_start, window_end, model"
        );
        form.fits(ROLLUP_5M).expect("its own rows");
        form.fits(BASE_1M)
            .expect("the level below: count → sum, max → max, sketch → merge");
    }

    #[test]
    fn a_query_over_events_is_not_a_merge_form() {
        let err = merge_form(BASE_1M, &aggregates).expect_err("filters");
        assert!(err.contains("WHERE"), "{err}");
        let unfiltered = BASE_1M.replace("WHERE model IS NOT NULL ", "");
        let err = merge_form(&unfiltered, &aggregates).expect_err("count of rows");
        assert!(err.contains("count()"), "{err}");
    }

    #[test]
    fn what_cannot_be_merged_is_named() {
        let cases = [
            (ROLLUP_5M.replace("sum(requests)", "avg(requests)"), "avg()"),
            (ROLLUP_5M.replace("sum(requests)", "sum(DISTINCT requests)"), "DISTINCT"),
            (format!("{ROLLUP_5M} HAVING sum(requests) > 1"), "HAVING"),
            (
                ROLLUP_5M.replace(", model, sum(requests)", ", model, provider AS p, sum(requests)"),
                "`provider`",
            ),
            (
                ROLLUP_5M.replace(
                    "tumble(window_start, INTERVAL '5 minutes')",
                    "session(window_start, INTERVAL '5 minutes')",
                ),
                "session",
            ),
            (
                ROLLUP_5M.replace(
                    "GROUP BY tumble(window_start, INTERVAL '5 minutes'), model",
                    "GROUP BY tumble(window_start, INTERVAL '5 minutes'), lower(model)",
                ),
                "plain column",
            ),
        ];
        for (sql, needle) in cases {
            let result = merge_form(&sql, &aggregates);
            match result {
                Err(e) => assert!(e.contains(needle), "{sql}: {e}"),
                Ok(_) => panic!("{sql} must not merge"),
            }
        }
    }

    #[test]
    fn a_merge_that_does_not_compose_with_the_base_is_refused() {
        let form = merge_form(ROLLUP_5M, &aggregates).expect("a merge");
        let min_base = BASE_1M.replace("max(latency_ms) AS max_latency_ms", "min(latency_ms) AS max_latency_ms");
        let err = form.fits(&min_base).expect_err("max of mins");
        assert!(err.contains("`max_latency_ms` is a min()"), "{err}");
        let derived = BASE_1M.replace("count(*) AS requests", "count(*) + 1 AS requests");
        let err = form.fits(&derived).expect_err("not one aggregate");
        assert!(err.contains("`requests`"), "{err}");
    }
}
