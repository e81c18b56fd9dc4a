//! `/api/v1/metrics`: the continuous queries' rollup tables as metric families, their latest
//! values and time series (never raw `events` scans). The SQL is built in [`super::series`].

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AppState;
use super::error::ApiError;
use super::series::{self, ColumnKind, Family, MAX_POINTS, SeriesParams, string_lit};
use crate::auth::Principal;
use crate::query::format::{self, ColumnInfo};
use crate::stream::CqError;

/// One row of a result, keyed by column name.
pub type Row = Map<String, Value>;

/// Runs `sql` with the caller's tenant confinement (as `/api/v1/sql`), keeping at most
/// `max_rows` rows; returns the rows and whether more matched.
pub(super) async fn run_rows(
    state: &AppState,
    principal: &Principal,
    sql: &str,
    max_rows: usize,
) -> Result<(Vec<Row>, bool), ApiError> {
    let result = state
        .engine
        .run(sql, Some(max_rows), principal.tenant.as_deref())
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, sql, "metrics query failed");
            ApiError::from(e)
        })?;
    let bytes = format::json_rows(&result.batches).map_err(ApiError::internal)?;
    let rows: Vec<Row> = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    Ok((rows, result.truncated))
}

/// Every family of rollup tables the caller can read (a tenant-bound caller: those with a
/// `tenant` column, as in SQL).
pub(super) async fn catalog(state: &AppState, principal: &Principal) -> Result<Vec<Family>, ApiError> {
    let Some(stream) = state.stream.as_ref() else {
        return Ok(Vec::new());
    };
    let queries = stream.list().await.map_err(|e| match e {
        CqError::Stopped => ApiError::unavailable(e.to_string(), 5),
        e => ApiError::internal(e),
    })?;
    let ctx = state.engine.context_for(principal.tenant.as_deref());
    let mut tables = Vec::new();
    for q in queries {
        let reference = datafusion::common::TableReference::bare(q.name.clone());
        if let Ok(provider) = ctx.table_provider(reference).await {
            tables.push((q.name, provider.schema()));
        }
    }
    Ok(series::families(tables))
}

/// Finds a family or table by name, or 404.
pub(super) fn find<'a>(
    families: &'a [Family],
    name: &str,
) -> Result<(&'a Family, Option<&'a series::Table>), ApiError> {
    series::resolve(families, name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no metric family or rollup table named {name:?}; GET /api/v1/metrics lists them"
        ))
    })
}

/// The now of a request (whole microseconds, as the tables store time).
pub(super) fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6)
}

/// `GET /api/v1/metrics`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricsList {
    /// Every family, by name.
    pub families: Vec<FamilyInfo>,
}

/// A family of rollup tables.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "name": "llm_provider_model",
    "windows": [{"window": "1m", "table": "llm_provider_model_1m", "latest_window_end": "2026-12-06T12:01:00Z"}],
    "columns": [{"name": "window_start", "type": "Timestamp(µs, \"UTC\")", "nullable": false}, {"name": "model", "type": "Utf8", "nullable": true}, {"name": "requests", "type": "Int64", "nullable": false}],
    "group_by": ["provider", "model"],
    "fields": ["requests", "p95_latency_ms"],
    "latest_window_end": "2026-12-06T12:01:00Z"
}))]
pub struct FamilyInfo {
    /// The family: the tables' shared prefix (or the table of a family of one).
    pub name: String,
    /// Its tables, finest window first.
    pub windows: Vec<WindowInfo>,
    /// Columns of its finest table, with their Arrow types.
    pub columns: Vec<ColumnInfo>,
    /// Group columns (text and other non-numeric columns but the window bounds and sketches).
    pub group_by: Vec<String>,
    /// Numeric columns (what `fields` may name).
    pub fields: Vec<String>,
    /// The newest `window_end` in any of its tables (null while they are empty).
    pub latest_window_end: Option<String>,
}

/// One table of a family.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WindowInfo {
    /// The window suffix (`1m`, `5m`, ..., `1mo`); null for a table without one.
    pub window: Option<String>,
    /// The table (continuous query) name.
    pub table: String,
    /// The newest `window_end` in the table (null while it is empty).
    pub latest_window_end: Option<String>,
}

/// Lists the families.
#[utoipa::path(
    get,
    path = "/api/v1/metrics",
    tag = "metrics",
    summary = "List metric families (the continuous queries' rollup tables)",
    description = "Continuous queries whose names share a prefix and end in a window suffix (`_1m`, `_5m`, `_15m`, `_1h`, `_6h`, `_1d`, `_1w`, `_1mo`) form a family; a query without one is a family of one. For each: its tables, columns, group columns, numeric fields and the latest `window_end`. A tenant-bound key sees the tables it can read. Needs the `read` role.",
    responses(
        (status = 200, description = "Every family", body = MetricsList),
        super::openapi::QueryErrors,
        super::openapi::AuthErrors,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let families = catalog(&state, &principal).await?;
    // The newest window_end of every windowed table, 50 tables a statement.
    let tables: Vec<&series::Table> = families
        .iter()
        .flat_map(|f| &f.tables)
        .filter(|t| t.kind_of(series::WINDOW_END) == Some(ColumnKind::Time))
        .collect();
    let mut latest: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for chunk in tables.chunks(50) {
        let sql = chunk
            .iter()
            .map(|t| {
                format!(
                    "SELECT {} AS t, max({}) AS latest FROM {}",
                    string_lit(&t.name),
                    series::ident(series::WINDOW_END),
                    series::ident(&t.name)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let (rows, _) = run_rows(&state, &principal, &sql, chunk.len()).await?;
        for row in rows {
            if let (Some(Value::String(t)), Some(Value::String(l))) = (row.get("t"), row.get("latest")) {
                latest.insert(t.clone(), l.clone());
            }
        }
    }
    let families = families
        .iter()
        .map(|f| {
            let windows: Vec<WindowInfo> = f
                .tables
                .iter()
                .map(|t| WindowInfo {
                    window: t.window.map(|w| w.suffix().to_string()),
                    table: t.name.clone(),
                    latest_window_end: latest.get(&t.name).cloned(),
                })
                .collect();
            let finest = f.finest();
            FamilyInfo {
                name: f.name.clone(),
                latest_window_end: windows.iter().filter_map(|w| w.latest_window_end.clone()).max(),
                windows,
                columns: finest.map(|t| format::columns(&t.schema)).unwrap_or_default(),
                group_by: finest.map(|t| t.names_of(ColumnKind::Group)).unwrap_or_default(),
                fields: finest.map(|t| t.names_of(ColumnKind::Measure)).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Json(MetricsList { families }).into_response())
}

/// `GET /api/v1/metrics/{name}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "name": "llm_provider_model", "table": "llm_provider_model_1m", "window": "1m",
    "window_start": "2026-12-06T12:00:00Z", "window_end": "2026-12-06T12:01:00Z",
    "rows": [{"provider": "openai", "model": "gpt-4o", "requests": 31, "p95_latency_ms": 1893.2}],
    "truncated": false
}))]
pub struct LatestValues {
    /// The family.
    pub name: String,
    /// The table read: the one named, else the family's finest.
    pub table: String,
    /// Its window suffix (null for a table without one).
    pub window: Option<String>,
    /// Start of the most recent window in the table (null while it is empty).
    pub window_start: Option<String>,
    /// End of the most recent window.
    pub window_end: Option<String>,
    /// One row per group of that window: the group columns and every numeric column.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Row>,
    /// More than 10,000 groups: the first 10,000 (by group columns) are returned.
    pub truncated: bool,
}

/// The latest values of a family.
#[utoipa::path(
    get,
    path = "/api/v1/metrics/{name}",
    tag = "metrics",
    summary = "Latest values per group of a metric family",
    description = "The rows of the most recent window of the family's finest table (or of the table named), one per group, ordered by the group columns: group columns and numeric columns (sketches left out). At most 10,000 rows. Needs the `read` role.",
    params(("name" = String, Path, description = "A family (`llm_provider_model`) or one of its tables (`llm_provider_model_1h`)")),
    responses(
        (status = 200, description = "The latest window's rows", body = LatestValues),
        (status = 400, description = "The table has no window columns", body = super::openapi::ErrorBody),
        (status = 404, description = "No such family or table", body = super::openapi::ErrorBody),
        super::openapi::QueryErrors,
        super::openapi::AuthErrors,
    )
)]
pub async fn latest(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let families = catalog(&state, &principal).await?;
    let (family, named) = find(&families, &name)?;
    let table = named
        .or_else(|| family.finest())
        .ok_or_else(|| ApiError::not_found(format!("`{name}` has no table")))?;
    if table.kind_of(series::WINDOW_END) != Some(ColumnKind::Time) || !table.is_windowed() {
        return Err(series::ParamError::new("name", format!("`{}` has no window columns", table.name)).into());
    }
    let groups = table.names_of(ColumnKind::Group);
    let mut columns = vec![series::ident(series::WINDOW_START), series::ident(series::WINDOW_END)];
    columns.extend(
        table
            .columns()
            .into_iter()
            .filter(|(_, k)| matches!(k, ColumnKind::Group | ColumnKind::Measure))
            .map(|(n, _)| series::ident(&n)),
    );
    let t = series::ident(&table.name);
    let end = series::ident(series::WINDOW_END);
    let mut sql = format!(
        "SELECT {} FROM {t} WHERE {end} = (SELECT max({end}) FROM {t})",
        columns.join(", ")
    );
    if !groups.is_empty() {
        let order: Vec<String> = groups.iter().map(|g| series::ident(g)).collect();
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    let (mut rows, truncated) = run_rows(&state, &principal, &sql, MAX_POINTS).await?;
    let mut bounds = (None, None);
    for row in &mut rows {
        let start = row.remove(series::WINDOW_START);
        let end = row.remove(series::WINDOW_END);
        if bounds.0.is_none() {
            bounds = (
                start.and_then(|v| v.as_str().map(str::to_string)),
                end.and_then(|v| v.as_str().map(str::to_string)),
            );
        }
    }
    Ok(Json(LatestValues {
        name: family.name.clone(),
        table: table.name.clone(),
        window: table.window.map(|w| w.suffix().to_string()),
        window_start: bounds.0,
        window_end: bounds.1,
        rows,
        truncated,
    })
    .into_response())
}

/// Parameters of `GET /api/v1/metrics/{name}/timeseries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimeseriesParams {
    /// `1m`, `5m`, `15m`, `1h`, `6h`, `1d`, `1w` or `1mo`. Default: the named table's window,
    /// else the family's finest. A window the family has no table for is merged from the
    /// coarsest finer table that tiles it.
    #[param(pattern = "^(1m|5m|15m|1h|6h|1d|1w|1mo)$")]
    window: Option<String>,
    /// Inclusive start of `window_start` (RFC 3339). Default: `end` − 100 windows. When
    /// merging, floored to the window.
    #[param(format = DateTime)]
    start: Option<String>,
    /// Exclusive end of `window_start` (RFC 3339). Default: now.
    #[param(format = DateTime)]
    end: Option<String>,
    /// Group columns to keep, comma separated (default: all of the table's; empty: totals
    /// over all groups). Fewer columns re-aggregate with the merge rules.
    group_by: Option<String>,
    /// Numeric columns, comma separated (default: every numeric column; those that can be
    /// re-aggregated when merging).
    fields: Option<String>,
}

/// `GET /api/v1/metrics/{name}/timeseries`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "name": "llm_provider_model", "window": "15m", "source_table": "llm_provider_model_15m", "merged_from": null,
    "start": "2026-12-06T10:00:00Z", "end": "2026-12-06T12:00:00Z", "group_by": ["model"], "fields": ["requests", "p95_latency_ms"],
    "points": [{"time": "2026-12-06T10:00:00Z", "model": "gpt-4o", "requests": 412, "p95_latency_ms": 1893.2}],
    "truncated": false
}))]
pub struct Timeseries {
    /// The family.
    pub name: String,
    /// The window of the points (null for a table without a window suffix).
    pub window: Option<String>,
    /// The table read.
    pub source_table: String,
    /// The finer table the points were merged from (null when read as stored).
    pub merged_from: Option<String>,
    /// Start of the range (RFC 3339).
    pub start: String,
    /// End of the range (RFC 3339).
    pub end: String,
    /// The group columns of each point.
    pub group_by: Vec<String>,
    /// The fields of each point.
    pub fields: Vec<String>,
    /// `{"time": window start, <group columns>, <fields>}`, by time then group.
    #[schema(value_type = Vec<Object>)]
    pub points: Vec<Row>,
    /// More than 10,000 points: the first 10,000 are returned.
    pub truncated: bool,
}

/// A metric family's time series.
#[utoipa::path(
    get,
    path = "/api/v1/metrics/{name}/timeseries",
    tag = "metrics",
    summary = "Time series of a metric family",
    description = "Points of the family's table for `window`, or merged from a finer one (counts and sums add, `min_`/`max_` take min/max, `pNN_` columns merge their sketch, `avg_`, `stddev_` and `error_rate` are recomputed from their partial columns; other fields are refused when merging). The range spans at most 10,000 windows; at most 10,000 points are returned. Needs the `read` role.",
    params(("name" = String, Path, description = "A family (`llm_provider_model`) or one of its tables"), TimeseriesParams),
    responses(
        (status = 200, description = "The points", body = Timeseries),
        (status = 400, description = "A parameter is invalid (named in the message)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such family or table", body = super::openapi::ErrorBody),
        super::openapi::QueryErrors,
        super::openapi::AuthErrors,
    )
)]
pub async fn timeseries(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    Path(name): Path<String>,
    params: Result<Query<TimeseriesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let families = catalog(&state, &principal).await?;
    let (family, named) = find(&families, &name)?;
    let (series, merged) = series::plan(
        family,
        named,
        &SeriesParams {
            window: p.window.as_deref(),
            start: p.start.as_deref(),
            end: p.end.as_deref(),
            group_by: p.group_by.as_deref(),
            fields: p.fields.as_deref().map(series::comma_list),
            fields_param: "fields",
            name_param: "name",
            filters: Vec::new(),
        },
        now(),
    )?;
    let (points, truncated) = run_rows(&state, &principal, &series.sql(), MAX_POINTS).await?;
    Ok(Json(Timeseries {
        name: family.name.clone(),
        window: series.window.map(|w| w.suffix().to_string()),
        source_table: series.table.name.clone(),
        merged_from: merged.then(|| series.table.name.clone()),
        start: rfc3339(series.start),
        end: rfc3339(series.end),
        group_by: series.group_by.clone(),
        fields: series.fields.clone(),
        points,
        truncated,
    })
    .into_response())
}

/// RFC 3339 with `Z`.
pub(super) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
