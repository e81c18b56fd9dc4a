//! `/api/v1/analytics`: anomalies, correlations, trace chains and forecasts, each one SQL
//! statement over the rollup tables (or `events` for traces) using the functions of
//! docs/functions.md, run with the caller's tenant confinement exactly as `/api/v1/sql`.

pub mod anomalies;
pub mod correlations;
pub mod predictions;
pub mod traces;

use super::series::{self, Family, ParamError, Series, SeriesParams};

/// Most anomalies, forecast rows or trace events in one answer.
pub const MAX_ROWS: usize = series::MAX_POINTS;

/// Splits `family_or_table.column`.
pub fn split_metric<'v>(param: &'static str, value: &'v str) -> Result<(&'v str, &'v str), ParamError> {
    value
        .trim()
        .rsplit_once('.')
        .filter(|(name, column)| !name.is_empty() && !column.is_empty())
        .ok_or_else(|| {
            ParamError::new(
                param,
                format!(
                    "expected `<family or table>.<column>`, e.g. `llm_provider_model.p95_latency_ms`, got {value:?}"
                ),
            )
        })
}

/// The series of one metric column: `param` = `family_or_table.column`, read at `window`
/// over `[start, end)`, grouped by `group_by`, filtered by `filters`.
#[allow(clippy::too_many_arguments)]
pub fn metric_series<'a>(
    families: &'a [Family],
    param: &'static str,
    metric: &str,
    window: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    group_by: Option<&str>,
    filters: Vec<(&'static str, &str)>,
) -> Result<(Series<'a>, bool, String), ParamError> {
    let (name, column) = split_metric(param, metric)?;
    let (family, named) = series::resolve(families, name).ok_or_else(|| {
        ParamError::new(
            param,
            format!("no metric family or rollup table named {name:?}; GET /api/v1/metrics lists them"),
        )
    })?;
    let (series, merged) = series::plan(
        family,
        named,
        &SeriesParams {
            window,
            start,
            end,
            group_by,
            fields: Some(vec![column.to_string()]),
            fields_param: param,
            name_param: param,
            filters,
        },
        super::metrics_api::now(),
    )?;
    Ok((series, merged, column.to_string()))
}

/// Parses an optional number parameter within `[min, max]`.
pub fn number(param: &'static str, value: Option<&str>, default: f64, min: f64, max: f64) -> Result<f64, ParamError> {
    let Some(v) = value else { return Ok(default) };
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| ParamError::new(param, format!("not a number: {v:?}")))?;
    if !x.is_finite() || x < min || x > max {
        return Err(ParamError::new(param, format!("must be between {min} and {max}")));
    }
    Ok(x)
}

/// Parses an optional integer parameter within `[min, max]`.
pub fn integer(param: &'static str, value: Option<&str>, default: i64, min: i64, max: i64) -> Result<i64, ParamError> {
    let Some(v) = value else { return Ok(default) };
    let x: i64 = v
        .trim()
        .parse()
        .map_err(|_| ParamError::new(param, format!("not an integer: {v:?}")))?;
    if x < min || x > max {
        return Err(ParamError::new(param, format!("must be between {min} and {max}")));
    }
    Ok(x)
}

/// The group columns as a `PARTITION BY` (empty without any).
pub fn partition_by(groups: &[String]) -> String {
    if groups.is_empty() {
        return String::new();
    }
    let cols: Vec<String> = groups.iter().map(|g| series::ident(g)).collect();
    format!("PARTITION BY {} ", cols.join(", "))
}

/// `g1, g2, ` (with the trailing separator) for a SELECT list; empty without groups.
pub fn group_list(groups: &[String]) -> String {
    groups.iter().map(|g| format!("{}, ", series::ident(g))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_parsed_and_bounded() {
        assert_eq!(split_metric("metric", "a.b.c"), Ok(("a.b", "c")));
        assert_eq!(split_metric("metric", "abc").expect_err("no dot").param, "metric");
        assert_eq!(split_metric("metric", ".c").expect_err("no name").param, "metric");
        assert_eq!(number("threshold", None, 3.0, 0.1, 100.0), Ok(3.0));
        assert_eq!(number("threshold", Some("4.5"), 3.0, 0.1, 100.0), Ok(4.5));
        assert!(number("threshold", Some("NaN"), 3.0, 0.1, 100.0).is_err());
        assert!(number("threshold", Some("0"), 3.0, 0.1, 100.0).is_err());
        assert!(number("threshold", Some("1); DROP"), 3.0, 0.1, 100.0).is_err());
        assert_eq!(integer("horizon", Some(" 12 "), 10, 1, 1000), Ok(12));
        assert_eq!(
            integer("horizon", Some("1.5"), 10, 1, 1000).expect_err("int").param,
            "horizon"
        );
        assert_eq!(partition_by(&[]), "");
        assert_eq!(partition_by(&["model".into()]), "PARTITION BY \"model\" ");
    }
}
