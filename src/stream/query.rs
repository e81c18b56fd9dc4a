//! One running continuous query: window state, watermark, lateness, emission.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::compute::{filter_record_batch, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{
    DataType, IntervalMonthDayNanoType, IntervalUnit, SchemaRef, TimestampMicrosecondType,
};
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::CqError;
use super::catalog::{CqDefinition, CqOptions};
use super::late::LateEvent;
use super::plan::CqPlan;
use super::rewrite::{self, WindowCall};
use super::window::{Span, WindowSpec};
use crate::event::schema::timestamp_type;
use crate::event::time::rfc3339;

/// Compact a window's state once it holds this many state batches.
const COMPACT_AT: usize = 16;

/// State of one open window: accumulator state rows, one batch per micro-batch until compacted.
#[derive(Debug, Default)]
struct WindowState {
    batches: Vec<RecordBatch>,
}

/// What processing one input batch produced.
#[derive(Debug, Default)]
pub struct Processed {
    /// Output rows of windows that closed.
    pub output: Vec<RecordBatch>,
    /// Events too late for their window.
    pub late: Vec<LateEvent>,
}

/// Status of a query as shown by the API.
#[derive(Debug, Clone, Serialize)]
pub struct CqStatus {
    /// Name (and output table).
    pub name: String,
    /// The SELECT as registered.
    pub sql: String,
    /// Input table.
    pub source: String,
    /// Window description.
    pub window: String,
    /// `running` or `paused`.
    pub status: &'static str,
    /// Current watermark (RFC 3339) or null before the first event.
    pub watermark: Option<String>,
    /// Largest event time seen (clamped to wall clock + max_future).
    pub max_event_time: Option<String>,
    /// Windows holding state now.
    pub open_windows: usize,
    /// Output rows written.
    pub rows_emitted: u64,
    /// Windows finalized.
    pub windows_emitted: u64,
    /// Events that arrived after their window closed.
    pub late_events: u64,
    /// Input rows processed.
    pub rows_in: u64,
    /// Last execution error, if any.
    pub last_error: Option<String>,
    /// Options.
    pub options: CqOptions,
    /// Output columns and types.
    pub columns: Vec<crate::query::format::ColumnInfo>,
}

/// A planned, running continuous query.
#[derive(Debug)]
pub struct CqRuntime {
    /// Definition as registered.
    pub def: CqDefinition,
    /// Input table name.
    pub source: String,
    spec: WindowSpec,
    plan: CqPlan,
    time_idx: usize,
    id_idx: Option<usize>,
    open: BTreeMap<i64, WindowState>,
    max_event_us: Option<i64>,
    last_input: Instant,
    watermark_us: Option<i64>,
    /// Windows starting at or before this were emitted before a restart.
    pub emitted_through: Option<i64>,
    rows_emitted: u64,
    windows_emitted: u64,
    late_events: u64,
    rows_in: u64,
    /// Last execution error.
    pub last_error: Option<String>,
}

/// Evaluates an interval expression (`INTERVAL '5 minutes'`) with DataFusion.
async fn eval_span(expr: &str) -> Result<Span, CqError> {
    let ctx = SessionContext::new();
    let df = ctx
        .sql(&format!("SELECT {expr} AS v"))
        .await
        .map_err(|e| CqError::Invalid(format!("window size `{expr}`: {}", e.message())))?;
    let batches = df
        .collect()
        .await
        .map_err(|e| CqError::Invalid(format!("window size `{expr}`: {}", e.message())))?;
    let column = batches
        .first()
        .map(|b| Arc::clone(b.column(0)))
        .ok_or_else(|| CqError::Invalid(format!("window size `{expr}` is empty")))?;
    let as_interval = datafusion::arrow::compute::cast(&column, &DataType::Interval(IntervalUnit::MonthDayNano))
        .map_err(|_| {
            CqError::Invalid(format!(
                "window size `{expr}` must be an INTERVAL, e.g. INTERVAL '1 minute'"
            ))
        })?;
    let values = as_interval.as_primitive::<IntervalMonthDayNanoType>();
    if values.is_empty() || values.is_null(0) {
        return Err(CqError::Invalid(format!(
            "window size `{expr}` must be an INTERVAL, e.g. INTERVAL '1 minute'"
        )));
    }
    let v = values.value(0);
    Span::from_interval(v.months, v.days, v.nanoseconds).map_err(CqError::Invalid)
}

/// The window of a rewritten query.
async fn window_spec(call: &WindowCall) -> Result<WindowSpec, CqError> {
    let spec = match call {
        WindowCall::Tumble { size, .. } => WindowSpec::Tumble {
            size: eval_span(size).await?,
        },
        WindowCall::Hop { slide, size, .. } => match (eval_span(slide).await?, eval_span(size).await?) {
            (Span::Micros(slide_us), Span::Micros(size_us)) => WindowSpec::Hop { slide_us, size_us },
            _ => {
                return Err(CqError::Invalid(
                    "hopping windows must use fixed sizes (no months)".into(),
                ));
            }
        },
    };
    spec.validate().map_err(CqError::Invalid)?;
    Ok(spec)
}

impl CqRuntime {
    /// Rewrites and plans `def` over input batches with `input_schema` (the schema of
    /// `source`, which the caller resolves from the rewritten SQL via [`source_of`]).
    pub async fn new(def: CqDefinition, input_schema: &SchemaRef) -> Result<Self, CqError> {
        let columns: Vec<String> = input_schema.fields().iter().map(|f| f.name().clone()).collect();
        let rewritten = rewrite::rewrite(&def.sql, &columns)?;
        let spec = window_spec(&rewritten.window).await?;
        let time_col = rewritten.window.time_column();
        let time_idx = input_schema.index_of(time_col).map_err(|_| {
            CqError::Invalid(format!(
                "window time column `{time_col}` does not exist in `{}`",
                rewritten.source
            ))
        })?;
        if !matches!(input_schema.field(time_idx).data_type(), DataType::Timestamp(_, _)) {
            return Err(CqError::Invalid(format!(
                "window time column `{time_col}` must be a timestamp"
            )));
        }
        let plan = CqPlan::build(&rewritten.sql, spec, input_schema).await?;
        if plan.output_schema.index_of("window_start").is_err() {
            return Err(CqError::Invalid(
                "the SELECT list must include `window_start` (and usually `window_end`)".into(),
            ));
        }
        Ok(Self {
            id_idx: input_schema.index_of("event_id").ok(),
            def,
            source: rewritten.source,
            spec,
            plan,
            time_idx,
            open: BTreeMap::new(),
            max_event_us: None,
            last_input: Instant::now(),
            watermark_us: None,
            emitted_through: None,
            rows_emitted: 0,
            windows_emitted: 0,
            late_events: 0,
            rows_in: 0,
            last_error: None,
        })
    }

    /// Schema of the output table.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.plan.output_schema)
    }

    /// Longest window plus lateness, µs: how far back a restart must replay.
    pub fn replay_horizon_us(&self) -> i64 {
        self.spec.max_len_us() + (self.def.options.allowed_lateness_ms as i64) * 1000
    }

    /// Processes one input batch. With `replay`, rows of windows emitted before a restart are
    /// skipped silently instead of being reported late.
    pub async fn on_batch(&mut self, batch: &RecordBatch, now_us: i64, replay: bool) -> Result<Processed, CqError> {
        if self.def.paused || batch.num_rows() == 0 {
            return Ok(Processed::default());
        }
        self.last_input = Instant::now();
        self.rows_in += batch.num_rows() as u64;
        let times = datafusion::arrow::compute::cast(batch.column(self.time_idx), &timestamp_type())
            .map_err(CqError::internal)?;
        let times = times.as_primitive::<TimestampMicrosecondType>();
        let ids = self.id_idx.map(|i| batch.column(i).as_string::<i32>().clone());
        let mut keep = Vec::with_capacity(times.len());
        let mut late = Vec::new();
        let mut max_kept: Option<i64> = None;
        for i in 0..times.len() {
            if times.is_null(i) {
                keep.push(false);
                continue;
            }
            let ts = times.value(i);
            let suppressed = replay && self.emitted_through.is_some_and(|e| self.spec.latest_start(ts) <= e);
            let earliest_end = self.spec.earliest_end(ts);
            let is_late = !suppressed && self.watermark_us.is_some_and(|w| earliest_end <= w);
            if is_late && !replay {
                late.push(LateEvent {
                    event_id: ids
                        .as_ref()
                        .and_then(|a| (!a.is_null(i)).then(|| a.value(i).to_string())),
                    event_time: ts,
                    window_end: earliest_end,
                });
            }
            let take = !suppressed && (!is_late || matches!(self.spec, WindowSpec::Hop { .. }));
            keep.push(take);
            if take {
                max_kept = Some(max_kept.map_or(ts, |m| m.max(ts)));
            }
        }
        self.late_events += late.len() as u64;
        if let Some(m) = max_kept {
            let bounded = m.min(now_us.saturating_add(self.def.options.max_future_ms as i64 * 1000));
            self.max_event_us = Some(self.max_event_us.map_or(bounded, |x| x.max(bounded)));
        }
        let kept = filter_record_batch(batch, &BooleanArray::from(keep)).map_err(CqError::internal)?;
        if kept.num_rows() > 0 {
            let states = self.plan.partial(kept).await?;
            for state in states {
                self.add_state(state)?;
            }
            self.compact().await?;
        }
        self.advance(self.max_event_us);
        let output = self.close_due().await?;
        Ok(Processed { output, late })
    }

    /// Splits state rows by window and files them under their window.
    fn add_state(&mut self, state: RecordBatch) -> Result<(), CqError> {
        if state.num_rows() == 0 {
            return Ok(());
        }
        let col = state.column(self.plan.window_start_idx);
        let order = sort_to_indices(col, None, None).map_err(CqError::internal)?;
        let sorted = take_record_batch(&state, &order).map_err(CqError::internal)?;
        let starts: ArrayRef = Arc::clone(sorted.column(self.plan.window_start_idx));
        let ranges = partition(&[Arc::clone(&starts)]).map_err(CqError::internal)?.ranges();
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        for range in ranges {
            let start = starts.value(range.start);
            let closed = self.watermark_us.is_some_and(|w| self.spec.end_of(start) <= w);
            let emitted = self.emitted_through.is_some_and(|e| start <= e);
            if closed || emitted {
                continue; // hopping windows of a partly late event that already closed
            }
            let slice = sorted.slice(range.start, range.end - range.start);
            self.open.entry(start).or_default().batches.push(slice);
        }
        Ok(())
    }

    async fn compact(&mut self) -> Result<(), CqError> {
        let due: Vec<i64> = self
            .open
            .iter()
            .filter(|(_, w)| w.batches.len() >= COMPACT_AT)
            .map(|(k, _)| *k)
            .collect();
        for start in due {
            if let Some(window) = self.open.get_mut(&start) {
                let states = std::mem::take(&mut window.batches);
                window.batches = self.plan.reduce(states).await?;
            }
        }
        Ok(())
    }

    fn advance(&mut self, max_event: Option<i64>) {
        let Some(max) = max_event else { return };
        let candidate = max.saturating_sub(self.def.options.allowed_lateness_ms as i64 * 1000);
        self.watermark_us = Some(self.watermark_us.map_or(candidate, |w| w.max(candidate)));
    }

    /// Finalizes every window whose end is at or before the watermark.
    async fn close_due(&mut self) -> Result<Vec<RecordBatch>, CqError> {
        let Some(w) = self.watermark_us else {
            return Ok(Vec::new());
        };
        let due: Vec<i64> = self
            .open
            .keys()
            .copied()
            .take_while(|s| self.spec.end_of(*s) <= w)
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut states = Vec::new();
        for start in &due {
            if let Some(window) = self.open.remove(start) {
                states.extend(window.batches);
            }
        }
        let output = self.plan.finalize(states).await?;
        self.windows_emitted += due.len() as u64;
        self.rows_emitted += output.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        Ok(output)
    }

    /// Wall-clock tick: after `idle_timeout_ms` without input, event time is assumed to move
    /// with the wall clock (never past it), so the last windows close.
    pub async fn on_tick(&mut self, now_us: i64) -> Result<Vec<RecordBatch>, CqError> {
        if self.def.paused {
            return Ok(Vec::new());
        }
        let idle = self.last_input.elapsed();
        if idle.as_millis() as u64 >= self.def.options.idle_timeout_ms
            && let Some(max) = self.max_event_us
        {
            let advanced = max.saturating_add(idle.as_micros() as i64).min(now_us.max(max));
            self.advance(Some(advanced));
        }
        self.close_due().await
    }

    /// Closes every open window regardless of the watermark (end of a finite input: tests and
    /// the benchmark).
    pub async fn finish(&mut self) -> Result<Vec<RecordBatch>, CqError> {
        self.watermark_us = Some(i64::MAX);
        self.close_due().await
    }

    /// Current status.
    pub fn status(&self) -> CqStatus {
        CqStatus {
            name: self.def.name.clone(),
            sql: self.def.sql.clone(),
            source: self.source.clone(),
            window: match self.spec {
                WindowSpec::Tumble { size } => format!("tumble {}", size.describe()),
                WindowSpec::Hop { slide_us, size_us } => {
                    format!(
                        "hop slide {} size {}",
                        Span::Micros(slide_us).describe(),
                        Span::Micros(size_us).describe()
                    )
                }
            },
            status: if self.def.paused { "paused" } else { "running" },
            watermark: self.watermark_us.map(rfc3339),
            max_event_time: self.max_event_us.map(rfc3339),
            open_windows: self.open.len(),
            rows_emitted: self.rows_emitted,
            windows_emitted: self.windows_emitted,
            late_events: self.late_events,
            rows_in: self.rows_in,
            last_error: self.last_error.clone(),
            options: self.def.options.clone(),
            columns: crate::query::format::columns(&self.plan.output_schema),
        }
    }

    /// The current watermark, µs.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark_us
    }
}

/// The input table a definition reads, without planning it.
pub fn source_of(sql: &str) -> Result<String, CqError> {
    rewrite::rewrite(sql, &[]).map(|r| r.source)
}
