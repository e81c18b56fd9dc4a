//! One running continuous query: window state, watermark, lateness, emission.

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use serde::Serialize;

use super::CqError;
use super::catalog::{CqDefinition, CqOptions, EmitMode};
use super::emit::{DELETED, EMITTED_AT, FINAL, OutputLayout};
use super::fixed::{FixedWindows, Produced};
use super::keys::{Key, KeyCodec};
use super::late::LateEvent;
use super::plan::{CqPlan, PartialRunner};
use super::rewrite::{self, SESSION_FIRST, SESSION_LAST};
use super::session::{SessionColumns, SessionWindows};
use super::window::{WindowSpec, window_spec};
use crate::event::schema::timestamp_type;
use crate::event::time::rfc3339;

/// Rows a step of a query produced.
#[derive(Debug, Default)]
pub struct Emitted {
    /// Rows for the output store ([`CqRuntime::store_schema`]): output rows in final mode,
    /// versions in updating mode.
    pub rows: Vec<RecordBatch>,
    /// Final rows of closed windows in the SELECT's columns: what downstream queries read.
    pub closed: Vec<RecordBatch>,
    /// The accumulator states the rows were finalized from (the plan's state schema: one row
    /// per window and key, its whole state so far): what a state sink stores.
    pub states: Vec<RecordBatch>,
}

impl Emitted {
    fn extend(&mut self, other: Emitted) {
        self.rows.extend(other.rows);
        self.closed.extend(other.closed);
        self.states.extend(other.states);
    }
}

/// What processing one input batch produced.
#[derive(Debug, Default)]
pub struct Processed {
    /// Rows for the output store (see [`Emitted::rows`]).
    pub output: Vec<RecordBatch>,
    /// Final rows for downstream queries (see [`Emitted::closed`]).
    pub closed: Vec<RecordBatch>,
    /// States of the emitted rows (see [`Emitted::states`]).
    pub states: Vec<RecordBatch>,
    /// Events too late for their window.
    pub late: Vec<LateEvent>,
}

/// An input batch with its partial aggregate computed ahead ([`CqRuntime::preparer`]).
#[derive(Debug)]
pub struct Prepared {
    batch: RecordBatch,
    states: Vec<RecordBatch>,
}

/// Computes [`Prepared`] batches for one query on any thread.
#[derive(Debug, Clone)]
pub struct Preparer {
    runner: PartialRunner,
}

impl Preparer {
    /// Aggregates `batch` (with the query's input schema) into state rows.
    pub async fn prepare(&self, batch: RecordBatch) -> Result<Prepared, CqError> {
        let states = if batch.num_rows() == 0 {
            Vec::new()
        } else {
            self.runner.run(batch.clone()).await?
        };
        Ok(Prepared { batch, states })
    }
}

/// Status of a query as shown by the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// Windows (or sessions) holding state now.
    pub open_windows: usize,
    /// Output rows written (in updating mode: versions, including updates and deletions).
    pub rows_emitted: u64,
    /// Windows (or sessions) finalized.
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
    /// `cluster`: the table holds every instance's rows, merged when read; `instance`: this
    /// instance's own rows (standalone, or a query whose rows cannot be merged).
    pub scope: &'static str,
    /// In a cluster, why the table is this instance's own.
    pub scope_reason: Option<String>,
    /// The input partition holding the watermark below the max event time (Kafka: the
    /// slowest partition still delivering, `topic/partition`, with its event time), if any.
    pub watermark_held_by: Option<String>,
}

/// Open windows: fixed (tumbling, hopping) or sessions.
#[derive(Debug)]
enum Windows {
    Fixed(FixedWindows),
    Session(SessionWindows),
}

/// Finalized windows of either kind, to settle after emission.
enum Settling {
    Fixed(Vec<super::fixed::FinalizedWindow>),
    Session(Vec<(Key, i64, Vec<i64>)>),
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
    layout: OutputLayout,
    /// Codec of the non-window group columns of state rows.
    codec: KeyCodec,
    /// Indices of those columns in state rows.
    key_idx: Vec<usize>,
    windows: Windows,
    time_idx: usize,
    id_idx: Option<usize>,
    /// The input's `tenant` column, copied into `late_events`.
    tenant_idx: Option<usize>,
    /// Input columns this query reads (see [`CqRuntime::input_columns`]).
    input_columns: Vec<String>,
    max_event_us: Option<i64>,
    /// When the last input arrived (the caller's clock, µs); idle advance counts from it.
    last_input_us: Option<i64>,
    /// When updating rows were last emitted (the caller's clock, µs; set on the first check).
    last_emit_us: Option<i64>,
    watermark_us: Option<i64>,
    /// Tumbling/hopping windows starting at or before this were emitted before a restart.
    pub emitted_through: Option<i64>,
    rows_emitted: u64,
    windows_emitted: u64,
    late_events: u64,
    rows_in: u64,
    /// Last execution error.
    pub last_error: Option<String>,
    /// The time column is an upstream window bound (see [`Self::on_input_watermark`]).
    follows_input_watermark: bool,
    /// The slowest active input lane's event time (see [`crate::stream::lanes`]): the
    /// watermark does not pass it minus the allowed lateness. `None`: no bound.
    input_bound: Option<i64>,
    /// The lane setting `input_bound`.
    input_bound_lane: Option<std::sync::Arc<str>>,
}

/// The index of `name` in `schema` when it is a `Utf8` column (read as text for `late_events`).
fn text_column(schema: &SchemaRef, name: &str) -> Option<usize> {
    schema
        .index_of(name)
        .ok()
        .filter(|&i| schema.field(i).data_type() == &DataType::Utf8)
}

impl CqRuntime {
    /// Rewrites and plans `def` over input batches with `input_schema` (the schema of
    /// `source`, which the caller resolves from the rewritten SQL via [`source_of`]).
    pub async fn new(def: CqDefinition, input_schema: &SchemaRef) -> Result<Self, CqError> {
        let columns: Vec<String> = input_schema.fields().iter().map(|f| f.name().clone()).collect();
        let updating = def.options.emit == EmitMode::Updating;
        let rewritten = rewrite::rewrite(&def.sql, &columns, updating)?;
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
        let mut input_columns = plan.input_columns();
        for extra in [time_col, "event_id"] {
            if input_schema.index_of(extra).is_ok() && !input_columns.iter().any(|c| c == extra) {
                input_columns.push(extra.to_string());
            }
        }
        let layout = OutputLayout::new(&plan.output_schema, rewritten.key_columns)?;
        let user = layout.user_schema();
        if user.index_of("window_start").is_err() {
            return Err(CqError::Invalid(
                "the SELECT list must include `window_start` (and usually `window_end`)".into(),
            ));
        }
        if updating
            && let Some(f) = user
                .fields()
                .iter()
                .find(|f| [EMITTED_AT, FINAL, DELETED].contains(&f.name().as_str()))
        {
            return Err(CqError::Invalid(format!(
                "`{}` is a column of updating output; rename that SELECT item",
                f.name()
            )));
        }
        let is_session = matches!(spec, WindowSpec::Session { .. });
        if is_session && user.index_of("window_end").is_err() {
            return Err(CqError::Invalid(
                "a session-window query must select `window_end` as well as `window_start` (a session's end is part of its identity)".into(),
            ));
        }
        let key_idx: Vec<usize> = (0..plan.group_len)
            .filter(|i| *i != plan.window_start_idx && *i != plan.window_end_idx)
            .collect();
        let key_types: Vec<DataType> = key_idx
            .iter()
            .map(|i| plan.state_schema.field(*i).data_type().clone())
            .collect();
        let codec = KeyCodec::new(&key_types)?;
        let windows = match spec {
            WindowSpec::Session { gap_us } => {
                let (Some(first), Some(last)) = (
                    plan.state_index_of("min", "__cq_ts"),
                    plan.state_index_of("max", "__cq_ts"),
                ) else {
                    return Err(CqError::bug(format!(
                        "session bounds ({SESSION_FIRST}, {SESSION_LAST}) not found among the aggregates"
                    )));
                };
                let cols = SessionColumns {
                    window_start: plan.window_start_idx,
                    window_end: plan.window_end_idx,
                    first,
                    last,
                    keys: key_idx.clone(),
                };
                Windows::Session(SessionWindows::new(gap_us, cols, updating))
            }
            _ => Windows::Fixed(FixedWindows::new(spec, updating)),
        };
        Ok(Self {
            id_idx: text_column(input_schema, "event_id"),
            tenant_idx: text_column(input_schema, crate::query::tenant::TENANT_COLUMN),
            input_columns,
            def,
            source: rewritten.source,
            spec,
            plan,
            layout,
            codec,
            key_idx,
            windows,
            time_idx,
            max_event_us: None,
            input_bound: None,
            input_bound_lane: None,
            last_input_us: None,
            last_emit_us: None,
            watermark_us: None,
            emitted_through: None,
            rows_emitted: 0,
            windows_emitted: 0,
            late_events: 0,
            rows_in: 0,
            last_error: None,
            follows_input_watermark: matches!(time_col, "window_start" | "window_end"),
        })
    }

    /// The input columns this query needs: what its plan scans, plus the window's time column
    /// and `event_id` (named in late-event records). A decoder feeding only this query can build
    /// just these (`EventDecoder` with a projection) and plan the query over that narrower schema.
    pub fn input_columns(&self) -> &[String] {
        &self.input_columns
    }

    /// Schema of the rows the SELECT defines (what downstream queries read).
    pub fn output_schema(&self) -> SchemaRef {
        self.layout.user_schema()
    }

    /// Schema of the output store (versions in updating mode).
    pub fn store_schema(&self) -> SchemaRef {
        self.layout.store_schema()
    }

    /// Output layout (key columns of updating output).
    pub fn layout(&self) -> &OutputLayout {
        &self.layout
    }

    /// Mutable output layout (to continue `_emitted_at` after a restart).
    pub fn layout_mut(&mut self) -> &mut OutputLayout {
        &mut self.layout
    }

    /// The window.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Longest window plus lateness, µs: how far back a restart must replay.
    pub fn replay_horizon_us(&self) -> i64 {
        self.spec.max_len_us() + (self.def.options.allowed_lateness_ms as i64) * 1000
    }

    /// Session queries: closed sessions ending at or before this were handled before a restart.
    pub fn suppress_sessions_until(&mut self, until: Option<i64>) {
        if let Windows::Session(s) = &mut self.windows {
            s.suppress_until = until;
        }
    }

    /// Session queries: (watermark, earliest first event of an open session), the restart
    /// point written to the session checkpoint.
    pub fn session_checkpoint(&self) -> Option<(i64, Option<i64>)> {
        match &self.windows {
            Windows::Session(s) => self.watermark_us.map(|w| (w, s.open_since())),
            Windows::Fixed(_) => None,
        }
    }

    /// Why an event is late (the `reason` of `late_events`).
    pub fn late_reason(&self) -> String {
        let name = &self.def.name;
        match self.spec {
            WindowSpec::Session { .. } => format!(
                "arrived behind the watermark (max event time - allowed lateness); session windows cannot take it because it could belong to a session already emitted; query `{name}`"
            ),
            _ => format!(
                "arrived after its window closed (watermark = max event time - allowed lateness had passed the window end); query `{name}`"
            ),
        }
    }

    /// Processes one input batch. With `replay`, rows of windows emitted before a restart are
    /// skipped silently instead of being reported late.
    pub async fn on_batch(&mut self, batch: &RecordBatch, now_us: i64, replay: bool) -> Result<Processed, CqError> {
        self.process(batch, None, now_us, replay).await
    }

    /// Runs this query's partial aggregate on any thread, ahead of [`Self::on_prepared`]:
    /// micro-batches can be aggregated in parallel while the runtime takes them in order.
    pub fn preparer(&self) -> Preparer {
        Preparer {
            runner: self.plan.partial_runner(),
        }
    }

    /// Like [`Self::on_batch`] for a batch whose partial aggregate was computed ahead. When
    /// some of its rows must be left out (late, or emitted before a restart) the ahead states
    /// cover rows they must not, so the kept rows are aggregated again here.
    pub async fn on_prepared(&mut self, prepared: Prepared, now_us: i64, replay: bool) -> Result<Processed, CqError> {
        self.process(&prepared.batch, Some(prepared.states), now_us, replay)
            .await
    }

    async fn process(
        &mut self,
        batch: &RecordBatch,
        ahead: Option<Vec<RecordBatch>>,
        now_us: i64,
        replay: bool,
    ) -> Result<Processed, CqError> {
        if batch.num_rows() == 0 {
            return Ok(Processed::default());
        }
        self.last_input_us = Some(now_us);
        self.rows_in += batch.num_rows() as u64;
        let times = datafusion::arrow::compute::cast(batch.column(self.time_idx), &timestamp_type())
            .map_err(CqError::internal)?;
        let times = times.as_primitive::<TimestampMicrosecondType>();
        let text = |idx: Option<usize>, row: usize| {
            let a = batch.column(idx?).as_string::<i32>();
            (!a.is_null(row)).then(|| a.value(row).to_string())
        };
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
                    event_id: text(self.id_idx, i),
                    event_time: ts,
                    tenant: text(self.tenant_idx, i),
                    window_end: match self.spec {
                        WindowSpec::Session { gap_us } => ts.saturating_add(gap_us),
                        _ => earliest_end,
                    },
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
        let all_kept = keep.iter().all(|k| *k);
        let states = match ahead {
            Some(states) if all_kept => states,
            _ => {
                let kept = if all_kept {
                    batch.clone()
                } else {
                    filter_record_batch(batch, &BooleanArray::from(keep)).map_err(CqError::internal)?
                };
                if kept.num_rows() > 0 {
                    self.plan.partial(kept).await?
                } else {
                    Vec::new()
                }
            }
        };
        if !states.is_empty() {
            for state in &states {
                self.add_state(state)?;
            }
            match &mut self.windows {
                Windows::Fixed(f) => f.compact(&self.plan).await?,
                Windows::Session(s) => s.compact(&self.plan, &self.codec).await?,
            }
        }
        self.advance(self.bounded(self.max_event_us));
        let mut out = self.close_due(now_us).await?;
        out.extend(self.emit_updates_if_due(now_us).await?);
        Ok(Processed {
            output: out.rows,
            closed: out.closed,
            states: out.states,
            late,
        })
    }

    fn add_state(&mut self, state: &RecordBatch) -> Result<(), CqError> {
        match &mut self.windows {
            Windows::Fixed(f) => f.add(
                state,
                &self.plan,
                &self.codec,
                &self.key_idx,
                self.watermark_us,
                self.emitted_through,
            ),
            Windows::Session(s) => s.add(state, &self.codec),
        }
    }

    /// Sets how far the slowest active input lane got (`None`: no lane bounds this query);
    /// the engine sets it before each batch and tick of a query over raw events.
    pub fn set_input_bound(&mut self, bound: Option<(i64, std::sync::Arc<str>)>) {
        (self.input_bound, self.input_bound_lane) = match bound {
            Some((t, lane)) => (Some(t), Some(lane)),
            None => (None, None),
        };
    }

    /// `max_event` held back to the input lanes' bound.
    fn bounded(&self, max_event: Option<i64>) -> Option<i64> {
        let max = max_event?;
        let bounded = self.input_bound.map_or(max, |b| max.min(b));
        // A lane announced but not read yet holds the watermark where it is.
        (bounded != i64::MIN).then_some(bounded)
    }

    fn advance(&mut self, max_event: Option<i64>) {
        let Some(max) = max_event else { return };
        let candidate = max.saturating_sub(self.def.options.allowed_lateness_ms as i64 * 1000);
        self.watermark_us = Some(self.watermark_us.map_or(candidate, |w| w.max(candidate)));
    }

    /// Runs finalized states through the final aggregate and shapes the rows: final rows for
    /// downstream, and store rows (versions plus deletions in updating mode).
    async fn emit(
        &mut self,
        states: Vec<RecordBatch>,
        settling: Settling,
        is_final: bool,
        now_us: i64,
    ) -> Result<Emitted, CqError> {
        let mut out = Emitted {
            states: states.clone(),
            ..Emitted::default()
        };
        let output = if states.is_empty() {
            Vec::new()
        } else {
            self.plan.finalize(states).await?
        };
        if is_final {
            out.closed = output
                .iter()
                .map(|b| self.layout.user_rows(b))
                .collect::<Result<_, _>>()?;
        }
        if !self.layout.updating() {
            out.rows = out.closed.clone();
        } else {
            let produced: Produced = self.layout.produced(&output)?;
            let mut retract = match (settling, &mut self.windows) {
                (Settling::Fixed(w), Windows::Fixed(f)) => f.settle(w, &produced),
                (Settling::Session(s), Windows::Session(sw)) => sw.settle(s, &produced),
                _ => return Err(CqError::bug("window kind changed")),
            };
            retract.sort_unstable();
            retract.dedup();
            let at = self.layout.next_emitted_at(now_us);
            for b in &output {
                if b.num_rows() > 0 {
                    out.rows.push(self.layout.versions(b, at, is_final)?);
                }
            }
            out.rows.extend(self.layout.deletions(&retract, at, is_final)?);
        }
        self.rows_emitted += out.rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        Ok(out)
    }

    /// The states so far of every open tumbling or hopping window (none for sessions, whose
    /// boundaries are not final): what a state sink keeps of this instance's share when it
    /// stops for good before they close.
    pub fn open_states(&self) -> Vec<RecordBatch> {
        match &self.windows {
            Windows::Fixed(f) => f.open_states(),
            Windows::Session(_) => Vec::new(),
        }
    }

    /// Finalizes every window (session) the watermark has closed.
    async fn close_due(&mut self, now_us: i64) -> Result<Emitted, CqError> {
        let Some(w) = self.watermark_us else {
            return Ok(Emitted::default());
        };
        let (states, settling, count) = match &mut self.windows {
            Windows::Fixed(f) => {
                let due = f.take_due(w);
                let n = due.windows.len();
                (due.states, Settling::Fixed(due.windows), n)
            }
            Windows::Session(s) => {
                let due = s.take_due(w)?;
                let n = due.sessions.len();
                (due.states, Settling::Session(due.sessions), n)
            }
        };
        if count == 0 {
            return Ok(Emitted::default());
        }
        self.windows_emitted += count as u64;
        self.emit(states, settling, true, now_us).await
    }

    /// Updating mode: the current rows of every (window, key) that changed, once the emit
    /// interval has passed since the last emission.
    async fn emit_updates_if_due(&mut self, now_us: i64) -> Result<Emitted, CqError> {
        let Some(interval) = self.def.options.emit_interval_ms else {
            return Ok(Emitted::default());
        };
        let last_emit = *self.last_emit_us.get_or_insert(now_us);
        if !self.layout.updating() || now_us.saturating_sub(last_emit) < (interval as i64).saturating_mul(1000) {
            return Ok(Emitted::default());
        }
        self.emit_updates(now_us).await
    }

    /// Updating mode: the current rows of every (window, key) that changed since the last call.
    pub async fn emit_updates(&mut self, now_us: i64) -> Result<Emitted, CqError> {
        self.last_emit_us = Some(now_us);
        let (states, settling) = match &mut self.windows {
            Windows::Fixed(f) => {
                let d = f.take_dirty(&self.codec, &self.key_idx)?;
                (d.states, Settling::Fixed(d.windows))
            }
            Windows::Session(s) => {
                let d = s.take_dirty()?;
                (d.states, Settling::Session(d.sessions))
            }
        };
        let nothing = match &settling {
            Settling::Fixed(w) => w.is_empty(),
            Settling::Session(s) => s.is_empty(),
        };
        if nothing {
            return Ok(Emitted::default());
        }
        self.emit(states, settling, false, now_us).await
    }

    /// Wall-clock tick: after `idle_timeout_ms` without input, event time is assumed to move
    /// with the wall clock (never past it), so the last windows close; in updating mode,
    /// changed windows are emitted when the interval has passed.
    pub async fn on_tick(&mut self, now_us: i64) -> Result<Emitted, CqError> {
        let idle_us = self.last_input_us.map_or(0, |last| now_us.saturating_sub(last).max(0));
        if idle_us >= (self.def.options.idle_timeout_ms as i64).saturating_mul(1000)
            && let Some(max) = self.max_event_us
        {
            let advanced = max.saturating_add(idle_us).min(now_us.max(max));
            self.advance(self.bounded(Some(advanced)));
        } else {
            // A lane that held the watermark back may have caught up or gone idle since.
            self.advance(self.bounded(self.max_event_us));
        }
        let mut out = self.close_due(now_us).await?;
        out.extend(self.emit_updates_if_due(now_us).await?);
        Ok(out)
    }

    /// The watermark this query passes downstream, in the time of its output rows
    /// (`window_start`): every row it emits from now on starts at or after it. `None` before its
    /// first event.
    pub fn output_watermark(&self) -> Option<i64> {
        let w = self.watermark_us?;
        let start = self.spec.first_open_start(w);
        Some(match &self.windows {
            Windows::Session(s) => s.open_since().map_or(start, |o| o.min(start)),
            Windows::Fixed(_) => start,
        })
    }

    /// A query reading another query's rows by their window (`window_start` or `window_end` as
    /// its time column) advances with that query's [`Self::output_watermark`]: no later input
    /// row can be earlier, so its own windows close as soon as the upstream's do, instead of
    /// waiting for the first row of the next upstream window (one upstream window plus the
    /// allowed lateness later).
    pub async fn on_input_watermark(&mut self, input_watermark: i64, now_us: i64) -> Result<Emitted, CqError> {
        if !self.follows_input_watermark || self.watermark_us.is_some_and(|w| w >= input_watermark) {
            return Ok(Emitted::default());
        }
        self.watermark_us = Some(input_watermark);
        let mut out = self.close_due(now_us).await?;
        out.extend(self.emit_updates_if_due(now_us).await?);
        Ok(out)
    }

    /// Closes every open window regardless of the watermark (end of a finite input: tests and
    /// the benchmark). Returns the store rows.
    pub async fn finish(&mut self) -> Result<Vec<RecordBatch>, CqError> {
        Ok(self.finish_all().await?.rows)
    }

    /// Like [`Self::finish`], with the final rows for downstream queries too.
    pub async fn finish_all(&mut self) -> Result<Emitted, CqError> {
        self.watermark_us = Some(i64::MAX);
        self.close_due(crate::event::time::now_micros()).await
    }

    /// After a restart: (window start, key) rows already in the output that are neither final
    /// nor deleted, so later emissions retract them when they go stale.
    pub fn adopt_emitted(&mut self, rows: &[(i64, Key)]) {
        match &mut self.windows {
            Windows::Fixed(f) => f.adopt(rows),
            Windows::Session(s) => s.adopt(rows),
        }
    }

    /// Current status.
    pub fn status(&self) -> CqStatus {
        CqStatus {
            name: self.def.name.clone(),
            sql: self.def.sql.clone(),
            source: self.source.clone(),
            window: self.spec.describe(),
            status: if self.def.paused { "paused" } else { "running" },
            watermark: self.watermark_us.map(rfc3339),
            max_event_time: self.max_event_us.map(rfc3339),
            open_windows: match &self.windows {
                Windows::Fixed(f) => f.open_count(),
                Windows::Session(s) => s.open_count(),
            },
            rows_emitted: self.rows_emitted,
            windows_emitted: self.windows_emitted,
            late_events: self.late_events,
            rows_in: self.rows_in,
            last_error: self.last_error.clone(),
            options: self.def.options.clone(),
            columns: crate::query::format::columns(&self.output_schema()),
            scope: "instance",
            scope_reason: None,
            watermark_held_by: match (self.input_bound, &self.input_bound_lane, self.max_event_us) {
                (Some(i64::MIN), Some(lane), Some(_)) => Some(format!("{lane} (assigned, nothing read yet)")),
                (Some(b), Some(lane), Some(max)) if b < max => Some(format!("{lane} at {}", rfc3339(b))),
                _ => None,
            },
        }
    }

    /// The current watermark, µs.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark_us
    }
}

/// The input table a definition reads, without planning it.
pub fn source_of(sql: &str) -> Result<String, CqError> {
    rewrite::rewrite(sql, &[], false).map(|r| r.source)
}
