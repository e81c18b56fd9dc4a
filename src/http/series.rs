//! Rollup families and the SQL of one metric series over them, shared by `/api/v1/metrics`
//! and `/api/v1/analytics`.
//!
//! A *family* is the continuous queries whose names share a prefix and end in a window suffix
//! (`_1m`, `_5m`, `_15m`, `_1h`, `_6h`, `_1d`, `_1w`, `_1mo`); a query without one is a family
//! of one. A series is read from the family's table of the asked window, or merged from a finer
//! one with the rules the shipped rollups use (`queries/llm_provider_model_1h.sql`): counts and
//! sums add, minima and maxima take min/max, sketches merge before their quantiles are read,
//! averages, rates and standard deviations are recomputed from their partial columns. Every
//! identifier in the SQL is one of the table's real columns (quoted), every value a parsed
//! number, timestamp or an escaped string literal.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use datafusion::arrow::datatypes::{DataType, SchemaRef};

/// Most windows a requested range may span, and most rows (points) in one answer.
pub const MAX_POINTS: usize = 10_000;
/// Windows in the default range (`start` = `end` − this many windows).
pub const DEFAULT_WINDOWS: i32 = 100;
/// The time columns of a window table.
pub const WINDOW_START: &str = "window_start";
/// See [`WINDOW_START`].
pub const WINDOW_END: &str = "window_end";
/// The name of the time column in every series.
pub const TIME: &str = "time";

/// A parameter problem: answered 400 naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The query parameter (or body field) at fault.
    pub param: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ParamError {
    /// A problem with `param`.
    pub fn new(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.param, self.message)
    }
}

impl From<ParamError> for super::ApiError {
    fn from(e: ParamError) -> Self {
        Self::bad_request("invalid_parameter", e.to_string())
    }
}

/// A rollup window length (the suffix of a table name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    /// `_1m`
    M1,
    /// `_5m`
    M5,
    /// `_15m`
    M15,
    /// `_1h`
    H1,
    /// `_6h`
    H6,
    /// `_1d`
    D1,
    /// `_1w` (weeks start on Mondays, as the continuous queries' weekly windows)
    W1,
    /// `_1mo` (calendar months, UTC)
    Mo1,
}

const MINUTE_US: i64 = 60_000_000;
const DAY_US: i64 = 1_440 * MINUTE_US;

impl Window {
    /// Every window, finest first.
    pub const ALL: [Self; 8] = [
        Self::M1,
        Self::M5,
        Self::M15,
        Self::H1,
        Self::H6,
        Self::D1,
        Self::W1,
        Self::Mo1,
    ];

    /// `1m`, `5m`, ...
    pub fn suffix(self) -> &'static str {
        match self {
            Self::M1 => "1m",
            Self::M5 => "5m",
            Self::M15 => "15m",
            Self::H1 => "1h",
            Self::H6 => "6h",
            Self::D1 => "1d",
            Self::W1 => "1w",
            Self::Mo1 => "1mo",
        }
    }

    /// The window of a suffix (`1m`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.suffix() == s)
    }

    /// Fixed length in µs (`None` for months).
    fn fixed_us(self) -> Option<i64> {
        match self {
            Self::M1 => Some(MINUTE_US),
            Self::M5 => Some(5 * MINUTE_US),
            Self::M15 => Some(15 * MINUTE_US),
            Self::H1 => Some(60 * MINUTE_US),
            Self::H6 => Some(360 * MINUTE_US),
            Self::D1 => Some(DAY_US),
            Self::W1 => Some(7 * DAY_US),
            Self::Mo1 => None,
        }
    }

    /// Whether windows of `self` tile windows of `coarse` exactly (so `coarse` can be merged
    /// from `self`): weeks do not tile months.
    pub fn tiles(self, coarse: Self) -> bool {
        match (self.fixed_us(), coarse.fixed_us()) {
            (Some(fine), Some(coarse)) => coarse % fine == 0,
            (Some(fine), None) => DAY_US % fine == 0,
            (None, None) => true,
            (None, Some(_)) => false,
        }
    }

    /// The start of the window holding `ts`.
    pub fn floor(self, ts: DateTime<Utc>) -> DateTime<Utc> {
        match self.fixed_us() {
            Some(us) => {
                // Weekly windows start on Mondays (1970-01-05), the others at the epoch.
                let origin = if self == Self::W1 { 4 * DAY_US } else { 0 };
                let t = ts.timestamp_micros();
                let start = t - (t - origin).rem_euclid(us);
                Utc.timestamp_micros(start).single().unwrap_or(ts)
            }
            None => Utc
                .with_ymd_and_hms(ts.year(), ts.month(), 1, 0, 0, 0)
                .single()
                .unwrap_or(ts),
        }
    }

    /// `ts` moved back by `n` windows.
    pub fn back(self, ts: DateTime<Utc>, n: i32) -> DateTime<Utc> {
        match self.fixed_us() {
            Some(us) => ts - Duration::microseconds(us.saturating_mul(i64::from(n))),
            None => ts
                .checked_sub_months(chrono::Months::new(n.unsigned_abs()))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        }
    }

    /// How many windows `[start, end)` spans (rounded up; months count as 28 days).
    pub fn count_in(self, start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
        let us = self.fixed_us().unwrap_or(28 * DAY_US);
        let span = (end - start).num_microseconds().unwrap_or(i64::MAX);
        span / us + i64::from(span % us != 0)
    }

    /// SQL of the start of the window of this length holding `column`'s value, aligned as
    /// the continuous queries align their windows.
    pub fn bucket_sql(self, column: &str) -> String {
        let c = ident(column);
        match self {
            Self::Mo1 => format!("date_trunc('month', {c})"),
            Self::W1 => format!("date_bin(INTERVAL '7 days', {c}, TIMESTAMP '1970-01-05T00:00:00Z')"),
            w => {
                let secs = w.fixed_us().unwrap_or(MINUTE_US) / 1_000_000;
                format!("date_bin(INTERVAL '{secs} seconds', {c}, TIMESTAMP '1970-01-01T00:00:00Z')")
            }
        }
    }
}

/// Splits a table name into its family prefix and window (`llm_provider_model_1h` →
/// `("llm_provider_model", Some(1h))`); a name without a window suffix is its own family.
pub fn split_window(name: &str) -> (&str, Option<Window>) {
    for w in Window::ALL {
        if let Some(prefix) = name.strip_suffix(w.suffix()).and_then(|p| p.strip_suffix('_'))
            && !prefix.is_empty()
        {
            return (prefix, Some(w));
        }
    }
    (name, None)
}

/// A double-quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A single-quoted SQL string literal.
pub fn string_lit(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A timestamp literal (UTC, microseconds).
pub fn timestamp_lit(ts: DateTime<Utc>) -> String {
    format!(
        "TIMESTAMP '{}'",
        ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

/// Parses an RFC 3339 time parameter.
pub fn parse_time(param: &'static str, value: &str) -> Result<DateTime<Utc>, ParamError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ParamError::new(param, format!("not an RFC 3339 time (e.g. 2026-01-01T00:00:00Z): {e}")))
}

/// What a column of a rollup table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `window_start` / `window_end`.
    Time,
    /// A number: a measure.
    Measure,
    /// A binary sketch (merged, never returned).
    Sketch,
    /// Text, booleans, dates and other timestamps: a group column.
    Group,
    /// Anything else (lists, structs, intervals, ...): neither measured nor grouped by.
    Other,
}

/// The kind of column `name` of type `data_type`.
pub fn column_kind(name: &str, data_type: &DataType) -> ColumnKind {
    if name == WINDOW_START || name == WINDOW_END {
        return ColumnKind::Time;
    }
    if data_type.is_numeric() {
        return ColumnKind::Measure;
    }
    match data_type {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            ColumnKind::Sketch
        }
        DataType::Dictionary(_, value) => column_kind(name, value),
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Boolean
        | DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..) => ColumnKind::Group,
        // Nested values, intervals, durations, ...: neither measured nor grouped by.
        _ => ColumnKind::Other,
    }
}

/// One table of a family.
#[derive(Debug, Clone)]
pub struct Table {
    /// The table (continuous query) name.
    pub name: String,
    /// Its window, from the suffix.
    pub window: Option<Window>,
    /// Its columns.
    pub schema: SchemaRef,
}

impl Table {
    /// The kind of every column, in schema order.
    pub fn columns(&self) -> Vec<(String, ColumnKind)> {
        self.schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), column_kind(f.name(), f.data_type())))
            .collect()
    }

    /// The names of the columns of `kind`, in schema order.
    pub fn names_of(&self, kind: ColumnKind) -> Vec<String> {
        self.columns()
            .into_iter()
            .filter(|(_, k)| *k == kind)
            .map(|(n, _)| n)
            .collect()
    }

    /// The kind of column `name`, if the table has it.
    pub fn kind_of(&self, name: &str) -> Option<ColumnKind> {
        self.columns().into_iter().find(|(n, _)| n == name).map(|(_, k)| k)
    }

    /// Whether the table has window columns (a series can be read from it).
    pub fn is_windowed(&self) -> bool {
        self.kind_of(WINDOW_START) == Some(ColumnKind::Time)
    }
}

/// Tables sharing a name prefix, finest window first.
#[derive(Debug, Clone)]
pub struct Family {
    /// The shared prefix (or the table name of a family of one).
    pub name: String,
    /// Its tables, finest window first.
    pub tables: Vec<Table>,
}

impl Family {
    /// The table of exactly `window`.
    pub fn table_of(&self, window: Window) -> Option<&Table> {
        self.tables.iter().find(|t| t.window == Some(window))
    }

    /// The table named `name`.
    pub fn table_named(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The finest table.
    pub fn finest(&self) -> Option<&Table> {
        self.tables.first()
    }

    /// The table to read `window` from: its own table, or the coarsest finer one that tiles
    /// it (then merged); `None` when neither exists.
    pub fn source_for(&self, window: Window) -> Option<(&Table, bool)> {
        if let Some(t) = self.table_of(window) {
            return Some((t, false));
        }
        self.tables
            .iter()
            .rev()
            .filter(|t| t.window.is_some_and(|w| w < window && w.tiles(window)))
            .find(|t| t.is_windowed())
            .map(|t| (t, true))
    }

    /// The windows this family serves, as suffixes.
    pub fn window_list(&self) -> String {
        self.tables
            .iter()
            .filter_map(|t| t.window.map(Window::suffix))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Groups tables into families (sorted by name; tables finest first). A table without a
/// window suffix is a family of one, named after it.
pub fn families(tables: Vec<(String, SchemaRef)>) -> Vec<Family> {
    let mut by_name: HashMap<String, Vec<Table>> = HashMap::new();
    for (name, schema) in tables {
        let (prefix, window) = split_window(&name);
        let key = match window {
            Some(_) => prefix.to_string(),
            None => name.clone(),
        };
        by_name.entry(key).or_default().push(Table { name, window, schema });
    }
    let mut out: Vec<Family> = by_name
        .into_iter()
        .map(|(name, mut tables)| {
            tables.sort_by_key(|t| t.window);
            Family { name, tables }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Finds `name` among the families: a table name first (then that table is the one meant),
/// else a family name.
pub fn resolve<'a>(families: &'a [Family], name: &str) -> Option<(&'a Family, Option<&'a Table>)> {
    for f in families {
        if let Some(t) = f.table_named(name) {
            return Some((f, Some(t)));
        }
    }
    families.iter().find(|f| f.name == name).map(|f| (f, None))
}

/// How a column is re-aggregated (coarser windows or fewer group columns).
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// `sum(c)`: counts, sums, tokens, costs.
    Sum(String),
    /// `min(c)`.
    Min(String),
    /// `max(c)`.
    Max(String),
    /// `sketch_quantile(sketch_merge(sketch), q)`.
    Quantile {
        /// The sketch column.
        sketch: String,
        /// The quantile.
        q: f64,
    },
    /// `CAST(sum(num) AS DOUBLE) / sum(den)` (error rate = errors / requests).
    Ratio {
        /// Numerator column.
        num: String,
        /// Denominator column.
        den: String,
    },
    /// `sum(sum) / sum(count)`.
    Avg {
        /// The sum column.
        sum: String,
        /// The count column.
        count: String,
    },
    /// Sample standard deviation from count, sum and sum of squares.
    Stddev {
        /// The count column.
        count: String,
        /// The sum column.
        sum: String,
        /// The sum-of-squares column.
        sum_sq: String,
    },
}

impl Merge {
    /// The aggregate expression.
    pub fn sql(&self) -> String {
        match self {
            Self::Sum(c) => format!("sum({})", ident(c)),
            Self::Min(c) => format!("min({})", ident(c)),
            Self::Max(c) => format!("max({})", ident(c)),
            Self::Quantile { sketch, q } => format!("sketch_quantile(sketch_merge({}), {q})", ident(sketch)),
            Self::Ratio { num, den } => format!("CAST(sum({}) AS DOUBLE) / sum({})", ident(num), ident(den)),
            Self::Avg { sum, count } => format!("CAST(sum({}) AS DOUBLE) / sum({})", ident(sum), ident(count)),
            Self::Stddev { count, sum, sum_sq } => {
                let (n, s, sq) = (ident(count), ident(sum), ident(sum_sq));
                format!(
                    "CASE WHEN sum({n}) > 1 THEN sqrt(greatest(CAST(sum({sq}) AS DOUBLE) - CAST(sum({s}) AS DOUBLE) * sum({s}) / sum({n}), 0.0) / (sum({n}) - 1)) END"
                )
            }
        }
    }
}

/// Names summed when merged (besides the `_count`, `_sum`, `_sum_sq`, `_tokens`, `_usd` and
/// `_total` suffixes).
const SUMMED: &[&str] = &["requests", "errors", "events", "count", "n", "tokens"];
const SUMMED_SUFFIXES: &[&str] = &["_count", "_sum", "_sum_sq", "_tokens", "_usd", "_total"];

/// How `field` of `table` is merged, if known: only measure columns, and only by the rules
/// of the shipped rollups (derived columns need their partial columns in the table).
pub fn merge_rule(table: &Table, field: &str) -> Option<Merge> {
    if table.kind_of(field) != Some(ColumnKind::Measure) {
        return None;
    }
    let measure = |c: &str| table.kind_of(c) == Some(ColumnKind::Measure);
    let sketch = |c: &str| table.kind_of(c) == Some(ColumnKind::Sketch);
    // `avg_latency_ms` → the prefix `latency` of `latency_ms` with `latency_sum`/`_count`.
    let prefixes = |rest: &str| -> Vec<String> {
        let parts: Vec<&str> = rest.split('_').collect();
        (1..=parts.len()).rev().map(|n| parts[..n].join("_")).collect()
    };
    if field == "error_rate" && measure("errors") && measure("requests") {
        return Some(Merge::Ratio {
            num: "errors".into(),
            den: "requests".into(),
        });
    }
    if let Some(rest) = field.strip_prefix("avg_") {
        return prefixes(rest)
            .into_iter()
            .find(|p| measure(&format!("{p}_sum")) && measure(&format!("{p}_count")))
            .map(|p| Merge::Avg {
                sum: format!("{p}_sum"),
                count: format!("{p}_count"),
            });
    }
    if let Some(rest) = field.strip_prefix("stddev_") {
        return prefixes(rest)
            .into_iter()
            .find(|p| measure(&format!("{p}_sum")) && measure(&format!("{p}_count")) && measure(&format!("{p}_sum_sq")))
            .map(|p| Merge::Stddev {
                count: format!("{p}_count"),
                sum: format!("{p}_sum"),
                sum_sq: format!("{p}_sum_sq"),
            });
    }
    if let Some((digits, rest)) = field.strip_prefix('p').and_then(|r| r.split_once('_'))
        && digits.len() == 2
        && let Ok(pct) = digits.parse::<u8>()
        && (1..=99).contains(&pct)
    {
        return prefixes(rest)
            .into_iter()
            .find(|p| sketch(&format!("{p}_sketch")))
            .map(|p| Merge::Quantile {
                sketch: format!("{p}_sketch"),
                q: f64::from(pct) / 100.0,
            });
    }
    if field.starts_with("min_") {
        return Some(Merge::Min(field.into()));
    }
    if field.starts_with("max_") {
        return Some(Merge::Max(field.into()));
    }
    if SUMMED.contains(&field) || SUMMED_SUFFIXES.iter().any(|s| field.ends_with(s)) {
        return Some(Merge::Sum(field.into()));
    }
    None
}

/// A `column:value` filter on a group column.
pub type Filter = (String, String);

/// One series: which table, window, groups, fields and time range.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// The table read.
    pub table: &'a Table,
    /// The window of the answer (coarser than the table's when merging).
    pub window: Option<Window>,
    /// Group columns of the answer (a subset of the table's).
    pub group_by: Vec<String>,
    /// Measure columns of the answer.
    pub fields: Vec<String>,
    /// Inclusive start (of `window_start`).
    pub start: DateTime<Utc>,
    /// Exclusive end (of `window_start`).
    pub end: DateTime<Utc>,
    /// Only rows whose group column equals the value.
    pub filters: Vec<Filter>,
}

/// What a series request says before it is checked against the family.
#[derive(Debug, Clone, Default)]
pub struct SeriesParams<'p> {
    /// `window` (a suffix).
    pub window: Option<&'p str>,
    /// `start` (RFC 3339).
    pub start: Option<&'p str>,
    /// `end` (RFC 3339).
    pub end: Option<&'p str>,
    /// `group_by`: comma list (empty: no group column; absent: all of them).
    pub group_by: Option<&'p str>,
    /// The fields (validated by the caller's parameter name `fields_param`).
    pub fields: Option<Vec<String>>,
    /// The parameter the fields came from (`fields`, `metric`, ...).
    pub fields_param: &'static str,
    /// The parameter the family name came from (`name`, `metric`, ...).
    pub name_param: &'static str,
    /// Filters (`column:value`), with the parameter they came from.
    pub filters: Vec<(&'static str, &'p str)>,
}

/// Splits a comma list, trimming items and dropping empty ones.
pub fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks a series request against `family` (and the table it named, if any) and builds it.
pub fn plan<'a>(
    family: &'a Family,
    named: Option<&'a Table>,
    p: &SeriesParams<'_>,
    now: DateTime<Utc>,
) -> Result<(Series<'a>, bool), ParamError> {
    // The window: asked, else the named table's, else the finest.
    let window = match p.window {
        Some(w) => {
            let w = w.trim();
            Some(Window::parse(w).ok_or_else(|| {
                ParamError::new(
                    "window",
                    format!("unknown window {w:?}: one of 1m, 5m, 15m, 1h, 6h, 1d, 1w, 1mo"),
                )
            })?)
        }
        None => named.or_else(|| family.finest()).and_then(|t| t.window),
    };
    let (table, merged) = match window {
        Some(w) => family.source_for(w).ok_or_else(|| {
            ParamError::new(
                "window",
                format!(
                    "`{}` has no {} table and no finer one to merge it from (windows: {})",
                    family.name,
                    w.suffix(),
                    family.window_list()
                ),
            )
        })?,
        None => {
            let t = named
                .or_else(|| family.finest())
                .ok_or_else(|| ParamError::new(p.name_param, format!("`{}` has no table", family.name)))?;
            (t, false)
        }
    };
    if !table.is_windowed() {
        return Err(ParamError::new(
            p.name_param,
            format!("`{}` has no `window_start` column (not a windowed rollup)", table.name),
        ));
    }
    let groups = table.names_of(ColumnKind::Group);
    let group_by = match p.group_by {
        None => groups.clone(),
        Some(list) => {
            let list = comma_list(list);
            for g in &list {
                if !groups.contains(g) {
                    return Err(ParamError::new(
                        "group_by",
                        format!(
                            "{g:?} is not a group column of `{}` (group columns: {})",
                            table.name,
                            groups.join(", ")
                        ),
                    ));
                }
            }
            let mut seen = Vec::new();
            for g in list {
                if !seen.contains(&g) {
                    seen.push(g);
                }
            }
            seen
        }
    };
    let aggregated = merged || group_by.len() != groups.len();
    let fields = match &p.fields {
        Some(list) if !list.is_empty() => {
            let mut seen: Vec<String> = Vec::new();
            for f in list {
                match table.kind_of(f) {
                    Some(ColumnKind::Measure) => {}
                    Some(_) => {
                        return Err(ParamError::new(
                            p.fields_param,
                            format!("{f:?} is not a numeric column of `{}`", table.name),
                        ));
                    }
                    None => {
                        return Err(ParamError::new(
                            p.fields_param,
                            format!(
                                "`{}` has no column {f:?} (numeric columns: {})",
                                table.name,
                                table.names_of(ColumnKind::Measure).join(", ")
                            ),
                        ));
                    }
                }
                if aggregated && merge_rule(table, f).is_none() {
                    return Err(ParamError::new(
                        p.fields_param,
                        format!(
                            "{f:?} cannot be re-aggregated (merging `{}` to coarser windows or fewer group columns): only counts, sums, min_/max_, pNN_ from a sketch, avg_/stddev_ with their partial columns and error_rate can",
                            table.name
                        ),
                    ));
                }
                if !seen.contains(f) {
                    seen.push(f.clone());
                }
            }
            seen
        }
        Some(_) => return Err(ParamError::new(p.fields_param, "no field named")),
        None => table
            .names_of(ColumnKind::Measure)
            .into_iter()
            .filter(|f| !aggregated || merge_rule(table, f).is_some())
            .collect(),
    };
    if fields.iter().chain(&group_by).any(|c| c == TIME) {
        return Err(ParamError::new(
            p.fields_param,
            "a column named `time` clashes with the series' time column",
        ));
    }
    let mut filters = Vec::new();
    for (param, value) in &p.filters {
        let (column, v) = value
            .split_once(':')
            .ok_or_else(|| ParamError::new(param, "expected `column:value`, e.g. `model:gpt-4o`"))?;
        if !groups.iter().any(|g| g == column) {
            return Err(ParamError::new(
                param,
                format!(
                    "{column:?} is not a group column of `{}` (group columns: {})",
                    table.name,
                    groups.join(", ")
                ),
            ));
        }
        filters.push((column.to_string(), v.to_string()));
    }
    let end = match p.end {
        Some(v) => parse_time("end", v)?,
        None => now,
    };
    let start = match p.start {
        Some(v) => parse_time("start", v)?,
        None => match window {
            Some(w) => w.back(end, DEFAULT_WINDOWS),
            None => end - Duration::days(1),
        },
    };
    if start >= end {
        return Err(ParamError::new("start", "must be before `end`"));
    }
    if let Some(w) = window
        && w.count_in(start, end) > MAX_POINTS as i64
    {
        return Err(ParamError::new(
            "start",
            format!(
                "the range spans more than {MAX_POINTS} {} windows; narrow it or ask for a coarser `window`",
                w.suffix()
            ),
        ));
    }
    let series = Series {
        table,
        window,
        group_by,
        fields,
        start: if merged {
            window.map_or(start, |w| w.floor(start))
        } else {
            start
        },
        end,
        filters,
    };
    Ok((series, merged))
}

impl Series<'_> {
    /// Whether rows are re-aggregated: a coarser window or fewer group columns.
    pub fn aggregated(&self) -> bool {
        self.window != self.table.window || self.group_by.len() != self.table.names_of(ColumnKind::Group).len()
    }

    /// The SELECT of the series: `time`, the group columns and the fields, ordered by time
    /// then groups.
    pub fn sql(&self) -> String {
        let aggregated = self.aggregated();
        let merging = self.window != self.table.window;
        let time = match (merging, self.window) {
            (true, Some(w)) => w.bucket_sql(WINDOW_START),
            _ => ident(WINDOW_START),
        };
        let mut select = vec![format!("{time} AS {}", ident(TIME))];
        select.extend(self.group_by.iter().map(|g| ident(g)));
        for f in &self.fields {
            let expr = if aggregated {
                merge_rule(self.table, f).map_or_else(|| format!("sum({})", ident(f)), |m| m.sql())
            } else {
                ident(f)
            };
            select.push(format!("{expr} AS {}", ident(f)));
        }
        let mut conditions = vec![
            format!("{} >= {}", ident(WINDOW_START), timestamp_lit(self.start)),
            format!("{} < {}", ident(WINDOW_START), timestamp_lit(self.end)),
        ];
        for (column, value) in &self.filters {
            conditions.push(format!("CAST({} AS VARCHAR) = {}", ident(column), string_lit(value)));
        }
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {}",
            select.join(", "),
            ident(&self.table.name),
            conditions.join(" AND ")
        );
        if aggregated {
            let mut keys = vec![time];
            keys.extend(self.group_by.iter().map(|g| ident(g)));
            sql.push_str(&format!(" GROUP BY {}", keys.join(", ")));
        }
        let mut order = vec![ident(TIME)];
        order.extend(self.group_by.iter().map(|g| ident(g)));
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        sql
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn rollup_schema(with_tenant: bool) -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields = vec![
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
        ];
        if with_tenant {
            fields.push(Field::new("tenant", DataType::Utf8, true));
        }
        fields.push(Field::new("provider", DataType::Utf8, true));
        fields.push(Field::new("model", DataType::Utf8, true));
        for (name, t) in [
            ("requests", DataType::Int64),
            ("errors", DataType::Int64),
            ("error_rate", DataType::Float64),
            ("latency_count", DataType::Int64),
            ("latency_sum", DataType::Float64),
            ("latency_sum_sq", DataType::Float64),
            ("avg_latency_ms", DataType::Float64),
            ("min_latency_ms", DataType::Float64),
            ("max_latency_ms", DataType::Float64),
            ("stddev_latency_ms", DataType::Float64),
            ("latency_sketch", DataType::Binary),
            ("p95_latency_ms", DataType::Float64),
            ("cost_usd", DataType::Float64),
            ("weird_score", DataType::Float64),
        ] {
            fields.push(Field::new(name, t, true));
        }
        Arc::new(Schema::new(fields))
    }

    fn shipped() -> Vec<Family> {
        let mut tables = Vec::new();
        for w in ["1m", "5m", "15m", "1h", "6h", "1d", "1w", "1mo"] {
            tables.push((format!("llm_provider_model_{w}"), rollup_schema(false)));
        }
        tables.push(("llm_tenant_model_1m".into(), rollup_schema(true)));
        tables.push(("llm_tenant_model_1h".into(), rollup_schema(true)));
        tables.push(("tokens_hop".into(), rollup_schema(false)));
        families(tables)
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse_time("t", s).expect("time")
    }

    #[test]
    fn names_split_into_families_and_windows() {
        assert_eq!(
            split_window("llm_provider_model_1mo"),
            ("llm_provider_model", Some(Window::Mo1))
        );
        assert_eq!(split_window("a_15m"), ("a", Some(Window::M15)));
        assert_eq!(split_window("a_1m"), ("a", Some(Window::M1)));
        assert_eq!(split_window("_1m"), ("_1m", None));
        assert_eq!(split_window("a15m"), ("a15m", None));
        let f = shipped();
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["llm_provider_model", "llm_tenant_model", "tokens_hop"]);
        assert_eq!(f[0].tables.len(), 8);
        assert_eq!(f[0].tables[0].name, "llm_provider_model_1m");
        assert_eq!(f[0].tables[7].name, "llm_provider_model_1mo");
        let (family, table) = resolve(&f, "llm_tenant_model_1h").expect("table");
        assert_eq!(
            (family.name.as_str(), table.map(|t| t.name.as_str())),
            ("llm_tenant_model", Some("llm_tenant_model_1h"))
        );
        assert!(resolve(&f, "llm_tenant_model").expect("family").1.is_none());
        assert!(resolve(&f, "nope").is_none());
    }

    #[test]
    fn windows_tile_floor_and_bucket_like_the_continuous_queries() {
        assert!(Window::M1.tiles(Window::H1) && Window::M15.tiles(Window::H1));
        assert!(Window::D1.tiles(Window::W1) && Window::H6.tiles(Window::Mo1));
        assert!(!Window::W1.tiles(Window::Mo1) && !Window::H1.tiles(Window::M15));
        assert_eq!(Window::W1.floor(t("2026-11-27T10:00:00Z")), t("2026-11-23T00:00:00Z"));
        assert_eq!(Window::Mo1.floor(t("2026-11-27T10:00:00Z")), t("2026-11-01T00:00:00Z"));
        assert_eq!(Window::M15.floor(t("2026-11-27T10:44:59Z")), t("2026-11-27T10:30:00Z"));
        assert_eq!(
            Window::Mo1.back(t("2026-03-31T00:00:00Z"), 1),
            t("2026-02-28T00:00:00Z")
        );
        assert_eq!(
            Window::M1.count_in(t("2026-01-01T00:00:00Z"), t("2026-01-01T00:10:30Z")),
            11
        );
        assert_eq!(
            Window::W1.bucket_sql("window_start"),
            "date_bin(INTERVAL '7 days', \"window_start\", TIMESTAMP '1970-01-05T00:00:00Z')"
        );
        assert_eq!(
            Window::Mo1.bucket_sql("window_start"),
            "date_trunc('month', \"window_start\")"
        );
    }

    #[test]
    fn merge_rules_follow_the_shipped_rollups() {
        let f = shipped();
        let table = &f[0].tables[0];
        assert_eq!(merge_rule(table, "requests"), Some(Merge::Sum("requests".into())));
        assert_eq!(
            merge_rule(table, "latency_sum_sq"),
            Some(Merge::Sum("latency_sum_sq".into()))
        );
        assert_eq!(merge_rule(table, "cost_usd"), Some(Merge::Sum("cost_usd".into())));
        assert_eq!(
            merge_rule(table, "min_latency_ms"),
            Some(Merge::Min("min_latency_ms".into()))
        );
        assert_eq!(
            merge_rule(table, "p95_latency_ms"),
            Some(Merge::Quantile {
                sketch: "latency_sketch".into(),
                q: 0.95
            })
        );
        assert_eq!(
            merge_rule(table, "avg_latency_ms").map(|m| m.sql()),
            Some("CAST(sum(\"latency_sum\") AS DOUBLE) / sum(\"latency_count\")".into())
        );
        assert!(matches!(
            merge_rule(table, "stddev_latency_ms"),
            Some(Merge::Stddev { .. })
        ));
        assert!(matches!(merge_rule(table, "error_rate"), Some(Merge::Ratio { .. })));
        assert_eq!(merge_rule(table, "weird_score"), None, "unknown: not merged");
        assert_eq!(merge_rule(table, "latency_sketch"), None, "sketches are not fields");
        assert_eq!(merge_rule(table, "model"), None);
        assert_eq!(
            column_kind(
                "d",
                &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::DayTime)
            ),
            ColumnKind::Other
        );
        assert_eq!(column_kind("tenant", &DataType::Utf8View), ColumnKind::Group);
    }

    fn params<'p>(window: Option<&'p str>, group_by: Option<&'p str>, fields: Option<&str>) -> SeriesParams<'p> {
        SeriesParams {
            window,
            start: Some("2026-01-01T00:07:00Z"),
            end: Some("2026-01-01T01:00:00Z"),
            group_by,
            fields: fields.map(comma_list),
            fields_param: "fields",
            name_param: "name",
            filters: Vec::new(),
        }
    }

    #[test]
    fn a_window_of_the_family_is_read_as_it_is() {
        let f = shipped();
        let (series, merged) = plan(
            &f[0],
            None,
            &params(Some("15m"), None, Some("requests,weird_score")),
            Utc::now(),
        )
        .expect("plan");
        assert!(!merged);
        assert_eq!(
            series.sql(),
            "SELECT \"window_start\" AS \"time\", \"provider\", \"model\", \"requests\" AS \"requests\", \"weird_score\" AS \"weird_score\" FROM \"llm_provider_model_15m\" WHERE \"window_start\" >= TIMESTAMP '2026-01-01T00:07:00.000000Z' AND \"window_start\" < TIMESTAMP '2026-01-01T01:00:00.000000Z' ORDER BY \"time\", \"provider\", \"model\""
        );
    }

    #[test]
    fn a_missing_window_is_merged_from_the_coarsest_finer_one() {
        let f = shipped();
        let (series, merged) = plan(
            &f[1],
            None,
            &params(Some("15m"), Some("model"), Some("requests,p95_latency_ms")),
            Utc::now(),
        )
        .expect("plan");
        assert!(merged);
        assert_eq!(series.table.name, "llm_tenant_model_1m");
        assert_eq!(
            series.sql(),
            "SELECT date_bin(INTERVAL '900 seconds', \"window_start\", TIMESTAMP '1970-01-01T00:00:00Z') AS \"time\", \"model\", sum(\"requests\") AS \"requests\", sketch_quantile(sketch_merge(\"latency_sketch\"), 0.95) AS \"p95_latency_ms\" FROM \"llm_tenant_model_1m\" WHERE \"window_start\" >= TIMESTAMP '2026-01-01T00:00:00.000000Z' AND \"window_start\" < TIMESTAMP '2026-01-01T01:00:00.000000Z' GROUP BY date_bin(INTERVAL '900 seconds', \"window_start\", TIMESTAMP '1970-01-01T00:00:00Z'), \"model\" ORDER BY \"time\", \"model\"",
            "the start is floored to the 15-minute window"
        );
        // 6h from 1h (the coarsest finer table), default fields only the mergeable ones.
        let (series, _) = plan(&f[1], None, &params(Some("6h"), None, None), Utc::now()).expect("plan");
        assert_eq!(series.table.name, "llm_tenant_model_1h");
        assert!(
            !series.fields.contains(&"weird_score".to_string()),
            "{:?}",
            series.fields
        );
        assert!(series.fields.contains(&"stddev_latency_ms".to_string()));
    }

    #[test]
    fn every_parameter_problem_names_the_parameter() {
        let f = shipped();
        let now = Utc::now();
        let err = |p: SeriesParams<'_>| plan(&f[1], None, &p, now).expect_err("refused").param;
        assert_eq!(err(params(Some("2m"), None, None)), "window");
        assert_eq!(
            plan(&f[2], None, &params(Some("1m"), None, None), now)
                .expect_err("no table")
                .param,
            "window",
            "a family of one serves its own table only"
        );
        assert_eq!(err(params(None, Some("model,region"), None)), "group_by");
        assert_eq!(err(params(None, Some("requests"), None)), "group_by");
        assert_eq!(err(params(None, None, Some("nope"))), "fields");
        assert_eq!(err(params(None, None, Some("model"))), "fields");
        assert_eq!(
            err(params(Some("15m"), None, Some("weird_score"))),
            "fields",
            "not mergeable"
        );
        assert_eq!(
            err(params(None, Some("model"), Some("weird_score"))),
            "fields",
            "not mergeable"
        );
        let mut p = params(None, None, None);
        p.start = Some("yesterday");
        assert_eq!(err(p), "start");
        let mut p = params(None, None, None);
        p.end = Some("2026-01-01T00:00:00Z");
        assert_eq!(err(p), "start", "start after end");
        let mut p = params(None, None, None);
        p.start = Some("2000-01-01T00:00:00Z");
        assert_eq!(err(p), "start", "too many windows");
        let mut p = params(None, None, None);
        p.filters = vec![("filter_a", "region:eu")];
        assert_eq!(err(p), "filter_a");
        let mut p = params(None, None, None);
        p.filters = vec![("filter_a", "model")];
        assert_eq!(err(p), "filter_a");
    }

    #[test]
    fn values_are_quoted_never_interpolated() {
        let f = shipped();
        let mut p = params(None, Some(""), Some("requests"));
        p.filters = vec![("filter_a", "model:x' OR '1'='1")];
        let (series, _) = plan(&f[0], None, &p, Utc::now()).expect("plan");
        let sql = series.sql();
        assert!(sql.contains("CAST(\"model\" AS VARCHAR) = 'x'' OR ''1''=''1'"), "{sql}");
        assert!(
            sql.contains("GROUP BY \"window_start\" ORDER BY \"time\""),
            "totals: {sql}"
        );
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
