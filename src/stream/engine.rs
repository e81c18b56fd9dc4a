//! Owns the continuous queries and runs them on one task: input batches from the ingest path,
//! API commands, and a wall-clock tick for idle watermark advance and storage maintenance.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use tokio::sync::{mpsc, oneshot};

use super::CqError;
use super::catalog::{self, CqDefinition, CqOptions};
use super::lanes::{LaneMark, Lanes};
use super::late::{self, LATE_EVENTS_TABLE};
use super::output::{self, SessionCheckpoint};
use super::query::{CqRuntime, CqStatus, Emitted, Prepared, Preparer, Processed, source_of};
use super::state_sink::QueryEmissions;
use super::window::WindowSpec;
use crate::event::time::now_micros;
use crate::event::{EVENTS_TABLE, events_schema};
use crate::metrics::Metrics;
use crate::storage::EventStore;
use crate::storage::local::{LocalStore, LocalStoreConfig};

mod control;

/// Input batches queued between ingest and the engine; when full, ingest waits.
const QUEUE_DEPTH: usize = 64;
/// Queued input batches are merged into micro-batches of up to this many rows.
const COALESCE_ROWS: usize = 65_536;

/// What the engine needs from the rest of the service.
#[derive(Clone)]
pub struct EngineDeps {
    /// `<data_dir>/cq`.
    pub dir: PathBuf,
    /// The events store (replayed after a restart).
    pub events: Arc<dyn EventStore>,
    /// The ad-hoc SQL session, where output tables are registered.
    pub query_ctx: SessionContext,
    /// Settings for output stores.
    pub storage: LocalStoreConfig,
    /// Storage health shared with the other stores.
    pub storage_health: crate::storage::health::StorageHealth,
    /// Metrics.
    pub metrics: Metrics,
    /// Receives the registered definitions (in dependency order) whenever they change, for
    /// sinks that store outputs elsewhere.
    pub published: tokio::sync::watch::Sender<Vec<CqDefinition>>,
    /// Where the output tables (and `late_events`) are registered with their stores, for the
    /// data versions result caches key on.
    pub versions: crate::storage::versions::TableVersions,
    /// Where emitted rows are published live (topic `cq:<name>`).
    pub live: crate::live::LiveFeed,
    /// In a cluster: where output stores are shared, so tables hold every instance's rows.
    pub shared: Option<Arc<dyn super::shared::SharedOutputs>>,
    /// Where the states of emitted windows go before the rows enter the output stores (the
    /// PostgreSQL rollup sink).
    pub state_sink: Option<Arc<dyn super::state_sink::StateSink>>,
}

impl std::fmt::Debug for EngineDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineDeps").field("dir", &self.dir).finish()
    }
}

/// A query as the preparers know it: name and registration time (a query deleted and
/// registered again under the same name is another query).
pub type QueryId = (String, i64);

/// Batches smaller than this are not aggregated ahead: the engine coalesces small batches
/// (single events) into one micro-batch, which is cheaper than one plan run each.
const PREPARE_MIN_ROWS: usize = 1024;

/// Accepted events, with the partial aggregates some queries' preparers computed ahead.
#[derive(Debug)]
struct EventsInput {
    batch: RecordBatch,
    ahead: Vec<(QueryId, Prepared)>,
    /// How far each of the source's lanes got with this batch (Kafka partitions; none for HTTP).
    lanes: Vec<LaneMark>,
}

#[derive(Debug)]
enum Command {
    Batch(EventsInput),
    Register(CqDefinition, oneshot::Sender<Result<CqStatus, CqError>>),
    Delete(String, oneshot::Sender<Result<(), CqError>>),
    SetPaused(String, bool, oneshot::Sender<Result<CqStatus, CqError>>),
    List(oneshot::Sender<Vec<CqStatus>>),
}

/// Cheap handle to the engine task.
#[derive(Debug, Clone)]
pub struct StreamHandle {
    tx: mpsc::Sender<Command>,
    /// The partial-aggregate runners of every query over raw events.
    preparers: tokio::sync::watch::Receiver<Arc<Vec<(QueryId, Preparer)>>>,
}

impl StreamHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, CqError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| CqError::Stopped)?;
        rx.await.map_err(|_| CqError::Stopped)
    }

    /// Feeds a batch of accepted events (waits when the engine is behind).
    pub async fn push(&self, batch: RecordBatch) -> Result<(), CqError> {
        self.push_prepared(batch, Vec::new(), Vec::new()).await
    }

    /// Computes `batch`'s partial aggregate for every query over raw events, on the caller's
    /// task (ingest requests do this in parallel, while their append syncs; the engine task
    /// then only merges states in order, as `bench rollup` does on its decoder threads).
    /// Small batches, and queries whose preparation fails, are left to the engine.
    pub async fn prepare(&self, batch: &RecordBatch) -> Vec<(QueryId, Prepared)> {
        if batch.num_rows() < PREPARE_MIN_ROWS {
            return Vec::new();
        }
        let preparers = Arc::clone(&self.preparers.borrow());
        let mut ahead = Vec::with_capacity(preparers.len());
        for (id, preparer) in preparers.iter() {
            match preparer.prepare(batch.clone()).await {
                Ok(p) => ahead.push((id.clone(), p)),
                Err(e) => {
                    tracing::debug!(query = %id.0, error = %e, "partial aggregate ahead failed; the engine computes it")
                }
            }
        }
        ahead
    }

    /// [`Self::push`] with partial aggregates from [`Self::prepare`] for this very batch, and
    /// the progress of the source's lanes with it ([`crate::stream::lanes`]).
    pub async fn push_prepared(
        &self,
        batch: RecordBatch,
        ahead: Vec<(QueryId, Prepared)>,
        lanes: Vec<LaneMark>,
    ) -> Result<(), CqError> {
        self.tx
            .send(Command::Batch(EventsInput { batch, ahead, lanes }))
            .await
            .map_err(|_| CqError::Stopped)
    }

    /// Registers a query; validation errors come back as [`CqError::Invalid`].
    pub async fn register(&self, name: String, sql: String, options: CqOptions) -> Result<CqStatus, CqError> {
        // The same statement-shape bounds as ad-hoc SQL, before anything parses the text.
        crate::query::complexity::check(&sql, &crate::query::complexity::ComplexityLimits::default())
            .map_err(|e| CqError::Invalid(e.to_string()))?;
        let def = CqDefinition {
            name,
            sql,
            options,
            paused: false,
            created_at_us: now_micros(),
        };
        self.call(|r| Command::Register(def, r)).await?
    }

    /// Deletes a query and its output table.
    pub async fn delete(&self, name: String) -> Result<(), CqError> {
        self.call(|r| Command::Delete(name, r)).await?
    }

    /// Pauses or resumes a query.
    pub async fn set_paused(&self, name: String, paused: bool) -> Result<CqStatus, CqError> {
        self.call(|r| Command::SetPaused(name, paused, r)).await?
    }

    /// Status of every query.
    pub async fn list(&self) -> Result<Vec<CqStatus>, CqError> {
        self.call(Command::List).await
    }
}

#[derive(Debug)]
struct Running {
    rt: CqRuntime,
    output: LocalStore,
    /// Session queries: where the replay after a restart starts (event time).
    session_replay_from: Option<i64>,
    /// Session queries: the checkpoint last written.
    checkpoint: Option<SessionCheckpoint>,
    /// While paused: when the pause began (wall clock, µs; events that arrived since are read
    /// back from the store on resume).
    paused_at: Option<i64>,
    /// While paused: input that arrived after the pause but was accepted before it (in-flight
    /// requests), and for queries reading another query, all input (upstream rows are few).
    paused_input: Vec<RecordBatch>,
    /// Output rows whose write failed (disk full, read-only, EIO), in emission order; written
    /// before any newer row once the store takes writes again.
    unwritten: Vec<RecordBatch>,
    /// With a state sink: emissions (states, output rows) the sink has not taken yet, in
    /// order; their rows reach the output store only once it has.
    unsunk: Vec<(Vec<RecordBatch>, Vec<RecordBatch>)>,
    /// In a cluster: `Ok` once the table holds every instance's rows, else why not.
    scope: Option<Result<(), String>>,
    /// Registered in this process (not reopened after a restart): its store is new.
    fresh: bool,
}

impl Running {
    fn status(&self) -> CqStatus {
        let mut status = self.rt.status();
        match &self.scope {
            Some(Ok(())) => status.scope = "cluster",
            Some(Err(why)) => status.scope_reason = Some(why.clone()),
            None => {}
        }
        status
    }

    fn dir(&self, root: &std::path::Path) -> PathBuf {
        root.join(&self.rt.def.name)
    }
}

/// The engine state, owned by its task.
#[derive(Debug)]
pub struct StreamEngine {
    deps: EngineDeps,
    queries: Vec<Running>,
    late: LocalStore,
    /// Late events whose write failed, written first once the store takes writes again.
    late_unwritten: Vec<RecordBatch>,
    /// Publishes the preparers of the queries over raw events to [`StreamHandle::prepare`].
    preparers: tokio::sync::watch::Sender<Arc<Vec<(QueryId, Preparer)>>>,
    /// Event-time progress of the input lanes (bounds the queries over raw events).
    lanes: Lanes,
    /// The lanes' version last saved, and when.
    lanes_saved: (u64, std::time::Instant),
}

/// Columns of an output store a live subscriber sees: all but the hidden key columns.
fn live_columns(schema: &SchemaRef) -> Vec<usize> {
    schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.name().starts_with(super::rewrite::HIDDEN_PREFIX))
        .map(|(i, _)| i)
        .collect()
}

/// Appends `pending` then `batches` to `store` in order, stopping at the first failure; what
/// was not written stays in `pending` (so a full disk delays rows, never drops or reorders them).
async fn append_in_order(
    store: &LocalStore,
    pending: &mut Vec<RecordBatch>,
    batches: &[RecordBatch],
) -> Result<(), crate::storage::StorageError> {
    pending.extend(batches.iter().cloned());
    while let Some(batch) = pending.first() {
        store.append(batch.clone()).await?;
        pending.remove(0);
    }
    Ok(())
}

impl StreamEngine {
    /// Loads saved queries, replays what they had not emitted before the last stop, registers
    /// the shipped queries that are missing, and starts the engine task.
    pub async fn start(
        deps: EngineDeps,
        shipped: &[(String, String)],
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(StreamHandle, tokio::task::JoinHandle<()>), CqError> {
        let late = late::open(&deps.dir, deps.storage.clone(), deps.storage_health.clone()).await?;
        deps.query_ctx
            .register_table(LATE_EVENTS_TABLE, late.table_provider())
            .map_err(CqError::internal)?;
        deps.versions.register(LATE_EVENTS_TABLE, Arc::new(late.clone()));
        let (preparers, preparers_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
        let mut engine = Self {
            deps,
            queries: Vec::new(),
            late,
            late_unwritten: Vec::new(),
            preparers,
            lanes: Lanes::default(),
            lanes_saved: (0, std::time::Instant::now()),
        };
        let saved = catalog::load(&engine.deps.dir)?;
        let mut snapshots = Vec::new();
        for def in saved {
            let name = def.name.clone();
            match engine.open_query(def, false).await {
                Ok(()) => {
                    let snapshot = engine.replay_input(engine.queries.len() - 1).await?;
                    snapshots.push(snapshot);
                }
                Err(e) => {
                    tracing::error!(query = %name, error = %e, "saved continuous query no longer plans; skipping it")
                }
            }
        }
        engine.replay(snapshots).await;
        // After the replay (which holds event time itself): the lanes of before the stop.
        engine.lanes = Lanes::restore(super::lanes::load(&engine.deps.dir), now_micros());
        for i in 0..engine.queries.len() {
            let q = &mut engine.queries[i];
            match output::open_rows(&q.rt, &q.output).await {
                Ok(rows) => q.rt.adopt_emitted(&rows),
                Err(e) => tracing::warn!(query = %q.rt.def.name, error = %e, "reading emitted rows failed"),
            }
            if q.rt.def.paused {
                q.paused_at = Some(now_micros());
            }
        }
        for (name, sql) in shipped {
            if engine.index(name).is_none() {
                let def = CqDefinition {
                    name: name.clone(),
                    sql: sql.clone(),
                    options: CqOptions::default(),
                    paused: false,
                    created_at_us: now_micros(),
                };
                if let Err(e) = engine.register(def).await {
                    tracing::error!(query = %name, error = %e, "shipped continuous query failed to register");
                }
            }
        }
        engine.publish();
        let (tx, mut rx) = mpsc::channel(QUEUE_DEPTH);
        // The engine merges and finalizes on a thread and runtime of its own: its plan runs are
        // CPU-bound polls, and on the service's two workers they held up the requests queued on
        // the same worker. The OS scheduler now shares the cores between the two.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CqError::internal)?;
        let task = tokio::task::spawn_blocking(move || {
            runtime.block_on(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            Some(Command::Batch(first)) => {
                                // Coalesce queued batches into one micro-batch: one plan execution
                                // per burst instead of one per ingest request.
                                let (batches, next) = drain_batches(first, &mut rx);
                                engine.on_events(batches).await;
                                if let Some(cmd) = next {
                                    engine.handle(cmd).await;
                                }
                            }
                            Some(cmd) => engine.handle(cmd).await,
                            None => break,
                        },
                        _ = tick.tick() => engine.tick().await,
                        _ = shutdown.changed() => break,
                    }
                    // What this step emitted goes to the state sink in one write.
                    engine.flush_state_sink().await;
                }
                engine.shutdown().await;
            })
        });
        Ok((
            StreamHandle {
                tx,
                preparers: preparers_rx,
            },
            task,
        ))
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.queries.iter().position(|q| q.rt.def.name == name)
    }

    fn source_schema(&self, source: &str) -> Result<SchemaRef, CqError> {
        if source == EVENTS_TABLE {
            return Ok(events_schema());
        }
        let i = self.index(source).ok_or_else(|| {
            CqError::Invalid(format!(
                "unknown source table `{source}`: read `events` or another continuous query"
            ))
        })?;
        if matches!(self.queries[i].rt.spec(), WindowSpec::Session { .. }) {
            return Err(CqError::Invalid(format!(
                "`{source}` is a session-window query and cannot be read by another continuous query: its rows arrive when sessions close, in no window_start order; read `events` instead"
            )));
        }
        Ok(self.queries[i].rt.output_schema())
    }

    /// Plans `def`, opens its output store and exposes it as a table.
    async fn open_query(&mut self, def: CqDefinition, fresh: bool) -> Result<(), CqError> {
        let source = source_of(&def.sql)?;
        let schema = self.source_schema(&source)?;
        let mut rt = CqRuntime::new(def, &schema).await?;
        let dir = self.deps.dir.join(&rt.def.name);
        let output = LocalStore::open_table(
            dir.clone(),
            rt.store_schema(),
            Some("window_start".into()),
            self.deps.storage.clone(),
            None,
            self.deps.storage_health.clone(),
        )?;
        let session_replay_from = output::resume(&mut rt, &output, &dir).await?;
        let table = output::user_table(&rt, &output).await?;
        self.deps
            .query_ctx
            .register_table(rt.def.name.as_str(), table)
            .map_err(CqError::internal)?;
        self.deps.versions.register(&rt.def.name, Arc::new(output.clone()));
        let live_columns = live_columns(&rt.store_schema());
        if let Ok(schema) = rt.store_schema().project(&live_columns) {
            self.deps
                .live
                .declare(&crate::live::query_topic(&rt.def.name), Arc::new(schema));
        }
        self.queries.push(Running {
            rt,
            output,
            session_replay_from,
            checkpoint: None,
            paused_at: None,
            paused_input: Vec::new(),
            unwritten: Vec::new(),
            unsunk: Vec::new(),
            scope: None,
            fresh,
        });
        self.share_outputs(self.queries.len() - 1).await;
        Ok(())
    }

    /// In a cluster: makes query `i`'s table, and its upstream's, cluster-wide when `i`'s
    /// SELECT merges them ([`super::merge`]); a table that cannot be keeps its reason.
    async fn share_outputs(&mut self, i: usize) {
        if self.deps.shared.is_none() {
            return;
        }
        let state = self.deps.query_ctx.state();
        let is_aggregate = |name: &str| state.aggregate_functions().contains_key(name);
        let q = &self.queries[i];
        let form = if q.rt.layout().updating() {
            Err("updating rows are merged only within one instance".to_string())
        } else {
            super::merge::merge_form(&q.rt.def.sql, &is_aggregate)
        };
        let form = match form {
            Ok(form) => form,
            Err(why) => {
                self.queries[i].scope = Some(Err(format!("its rows cannot be merged across instances: {why}")));
                return;
            }
        };
        let same_columns = |a: &datafusion::arrow::datatypes::SchemaRef,
                            b: &datafusion::arrow::datatypes::SchemaRef| {
            a.fields().len() == b.fields().len()
                && a.fields()
                    .iter()
                    .zip(b.fields())
                    .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
        };
        let up = self.index(&q.rt.source);
        let mut targets = Vec::new();
        // A level reading rows of its own columns merges itself with its own SELECT.
        if let Some(up) = up
            && same_columns(&self.queries[up].rt.output_schema(), &q.rt.output_schema())
        {
            targets.push(i);
            let upstream = &self.queries[up];
            if !matches!(upstream.scope, Some(Ok(())))
                && !upstream.rt.layout().updating()
                && !matches!(upstream.rt.spec(), WindowSpec::Session { .. })
            {
                targets.push(up);
            }
        } else {
            self.queries[i].scope = Some(Err(
                "no continuous query rolls it up (a query reading it with the same columns gives the merge)".into(),
            ));
        }
        for t in targets {
            let fits = form.fits(&self.queries[t].rt.def.sql);
            let result = match fits {
                Ok(()) => self.share_one(t, &form).await,
                Err(why) => Err(format!("`{}` does not merge it: {why}", self.queries[i].rt.def.name)),
            };
            if let Err(why) = &result {
                tracing::warn!(query = %self.queries[t].rt.def.name, reason = %why, "continuous query stays per instance");
            }
            self.queries[t].scope = Some(result);
        }
    }

    /// Shares query `t`'s store and registers its table as the merge of every instance's rows.
    async fn share_one(&mut self, t: usize, form: &super::merge::MergeForm) -> Result<(), String> {
        let Some(shared) = self.deps.shared.clone() else {
            return Err("not in a cluster".into());
        };
        let q = &self.queries[t];
        let name = q.rt.def.name.clone();
        // The catalog name changes with the definition: a query deleted and created again
        // with other SQL never merges the old rows. SHA-256, not the std hasher: every
        // instance, and every later version of the Hub, must name the table alike.
        let key = {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(q.rt.def.sql.trim().as_bytes());
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("cq.{name}.{hex}")
        };
        let store = shared.share(&name, &key, &q.output, q.fresh).await?;
        let view = async {
            let mut ctx = SessionContext::new();
            crate::query::register_functions(&mut ctx)?;
            ctx.register_table("cluster_rows", store.table_provider())?;
            let sql = form.sql("cluster_rows");
            let plan = ctx.sql(&sql).await?.into_unoptimized_plan();
            Ok::<_, datafusion::error::DataFusionError>(datafusion::catalog::view::ViewTable::new(plan, Some(sql)))
        }
        .await
        .map_err(|e| {
            shared.unshare(&name);
            format!("planning the merge failed: {}", e.strip_backtrace())
        })?;
        let ctx = &self.deps.query_ctx;
        ctx.deregister_table(name.as_str()).map_err(|e| e.strip_backtrace())?;
        ctx.register_table(name.as_str(), Arc::new(view))
            .map_err(|e| e.strip_backtrace())?;
        self.deps.versions.register(&name, store);
        Ok(())
    }

    /// Persisted input a restarted query has to see again: its source's rows since it was
    /// created (events by arrival order), minus windows it had already emitted.
    async fn replay_input(&self, i: usize) -> Result<Vec<RecordBatch>, CqError> {
        let q = &self.queries[i];
        let horizon_from = q.rt.emitted_through.map(|e| e - q.rt.replay_horizon_us());
        if q.rt.source == EVENTS_TABLE {
            let from = horizon_from.or(q.session_replay_from);
            return output::events_since(&self.deps.events, q.rt.def.created_at_us, from).await;
        }
        let up = self
            .index(&q.rt.source)
            .ok_or_else(|| CqError::bug("missing upstream"))?;
        output::final_rows(&self.queries[up].rt, &self.queries[up].output, horizon_from).await
    }

    /// Runs the replay snapshots through the queries in order; output produced on the way
    /// flows downstream like live output.
    async fn replay(&mut self, snapshots: Vec<Vec<RecordBatch>>) {
        let total: usize = snapshots.iter().flatten().map(RecordBatch::num_rows).sum();
        if total > 0 {
            tracing::info!(rows = total, "replaying continuous-query input after restart");
        }
        let mut pending: HashMap<String, Vec<RecordBatch>> = HashMap::new();
        for (i, snapshot) in snapshots.into_iter().enumerate() {
            let name = self.queries[i].rt.def.name.clone();
            let source = self.queries[i].rt.source.clone();
            let mut inputs = snapshot;
            if let Some(up) = pending.get(&source) {
                inputs.extend(up.iter().cloned());
            }
            let out = self.run_query(i, &inputs, true).await;
            pending.entry(name).or_default().extend(out);
        }
        self.flush_state_sink().await;
    }

    /// Feeds `inputs` to query `i`, persists its output and late events; returns the final rows
    /// for downstream queries.
    async fn run_query(&mut self, i: usize, inputs: &[RecordBatch], replay: bool) -> Vec<RecordBatch> {
        let now = now_micros();
        if replay {
            // The replayed events are in store order, not per partition: event time waits until
            // all of them are in (the next tick advances it), so none is dropped as late.
            self.queries[i].rt.set_input_bound(Some((i64::MIN, "replay".into())));
        } else {
            self.bound_by_lanes(i, now);
        }
        let mut results = Vec::with_capacity(inputs.len());
        for batch in inputs {
            results.push(self.queries[i].rt.on_batch(batch, now, replay).await);
        }
        if replay {
            self.queries[i].rt.set_input_bound(None);
        }
        self.absorb(i, results).await
    }

    /// [`Self::run_query`] for one live batch whose partial aggregate was computed ahead.
    async fn run_prepared(&mut self, i: usize, prepared: Prepared) -> Vec<RecordBatch> {
        let now = now_micros();
        self.bound_by_lanes(i, now);
        let result = self.queries[i].rt.on_prepared(prepared, now, false).await;
        self.absorb(i, vec![result]).await
    }

    /// Saves the input lanes if they moved since they were last saved.
    fn save_lanes(&mut self) {
        let version = self.lanes.version();
        if version == self.lanes_saved.0 {
            return;
        }
        match super::lanes::save(&self.deps.dir, &self.lanes) {
            Ok(()) => self.lanes_saved = (version, std::time::Instant::now()),
            Err(e) => tracing::warn!(error = %e, "saving the input lanes failed; retrying at the next tick"),
        }
    }

    /// Holds query `i`'s watermark back to its slowest active input lane when it reads raw
    /// events (queries over other queries follow their upstream's watermark instead).
    fn bound_by_lanes(&mut self, i: usize, now_us: i64) {
        let q = &mut self.queries[i].rt;
        if q.source == EVENTS_TABLE {
            let idle_us = (q.def.options.idle_timeout_ms as i64).saturating_mul(1000);
            q.set_input_bound(self.lanes.bound(now_us, idle_us));
        }
    }

    /// Persists what query `i` produced; returns its final rows for downstream queries.
    async fn absorb(&mut self, i: usize, results: Vec<Result<Processed, CqError>>) -> Vec<RecordBatch> {
        let mut emitted = Emitted::default();
        let mut late = Vec::new();
        for result in results {
            match result {
                Ok(p) => {
                    emitted.rows.extend(p.output);
                    emitted.closed.extend(p.closed);
                    emitted.states.extend(p.states);
                    late.extend(p.late);
                }
                Err(e) => {
                    tracing::error!(query = %self.queries[i].rt.def.name, error = %e, "continuous query failed on a batch");
                    self.queries[i].rt.last_error = Some(e.to_string());
                }
            }
        }
        self.persist(i, emitted.rows, emitted.states, &late).await;
        emitted.closed
    }

    /// The sink seam: every row a query emits goes through here. In final mode each row is a
    /// (window, key) emitted once; in updating mode rows are versions keyed by the layout's key
    /// columns (`__cq_k0` = window_start, `__cq_k1..` = group keys) with `_emitted_at`,
    /// `_final` and `_deleted`, so a sink can upsert (or delete) by key. The local store keeps
    /// every version and the query's table shows the latest.
    async fn persist(
        &mut self,
        i: usize,
        outputs: Vec<RecordBatch>,
        states: Vec<RecordBatch>,
        late: &[late::LateEvent],
    ) {
        if self.deps.state_sink.is_some() {
            // The rows wait for the sink to take their states ([`Self::flush_state_sink`], once
            // per engine step for every query).
            if !states.is_empty() || !outputs.is_empty() {
                self.queries[i].unsunk.push((states, outputs));
            }
        } else {
            self.store_rows(i, &outputs).await;
        }
        let q = &mut self.queries[i];
        let name = q.rt.def.name.clone();
        if let Some(w) = q.rt.watermark() {
            self.deps
                .metrics
                .cq_watermark_seconds
                .with_label_values(&[&name])
                .set(w as f64 / 1e6);
        }
        if !late.is_empty() {
            self.deps
                .metrics
                .late_events_total
                .with_label_values(&[&name])
                .inc_by(late.len() as u64);
            let watermark = q.rt.watermark().unwrap_or_default();
            match late::batch(&name, watermark, now_micros(), late, &q.rt.late_reason()) {
                Ok(batch) => {
                    let had_unwritten = !self.late_unwritten.is_empty();
                    if let Err(e) = append_in_order(&self.late, &mut self.late_unwritten, &[batch]).await
                        && !had_unwritten
                    {
                        tracing::error!(query = %name, error = %e, "writing late events failed; they are kept and written when storage recovers");
                    }
                }
                Err(e) => tracing::error!(error = %e, "building late-events batch failed"),
            }
        }
    }

    /// Query `i`'s emitted rows into its own table (and to live subscribers), after the state
    /// sink took their states when there is one.
    async fn store_rows(&mut self, i: usize, outputs: &[RecordBatch]) {
        let q = &mut self.queries[i];
        let name = q.rt.def.name.clone();
        for batch in outputs {
            self.deps
                .metrics
                .cq_rows_emitted_total
                .with_label_values(&[&name])
                .inc_by(batch.num_rows() as u64);
        }
        // Live subscribers see rows as they are emitted (before the store has them: a row held
        // back by a storage failure is still shown once; the table gets it when storage recovers).
        let topic = crate::live::query_topic(&name);
        for batch in outputs {
            match batch.project(&live_columns(&batch.schema())) {
                Ok(visible) => self.deps.live.publish(&topic, &visible),
                Err(e) => tracing::warn!(query = %name, error = %e, "emitted rows not published live"),
            }
        }
        let had_unwritten = !q.unwritten.is_empty();
        match append_in_order(&q.output, &mut q.unwritten, outputs).await {
            Ok(()) if had_unwritten => {
                tracing::info!(query = %name, "continuous-query output written again after a storage failure");
                q.rt.last_error = None;
            }
            Ok(()) => {}
            Err(e) => {
                if !had_unwritten {
                    tracing::error!(query = %name, error = %e, "writing continuous-query output failed; the rows are kept and written when storage recovers");
                }
                q.rt.last_error = Some(format!(
                    "output not yet written ({} batches held): {e}",
                    q.unwritten.len()
                ));
            }
        }
    }

    /// With a state sink: hands it the pending states of every query in one call (one
    /// PostgreSQL transaction per engine step: a burst closing the windows of 19 rollups was 19
    /// commits on the engine thread), then stores the rows it took. While it refuses, the rows
    /// wait, in order, and the next step or tick tries again.
    async fn flush_state_sink(&mut self) {
        let Some(sink) = self.deps.state_sink.clone() else {
            return;
        };
        let pending: Vec<usize> = (0..self.queries.len())
            .filter(|&i| !self.queries[i].unsunk.is_empty())
            .collect();
        if pending.is_empty() {
            return;
        }
        let emissions: Vec<(String, Vec<Vec<RecordBatch>>)> = pending
            .iter()
            .map(|&i| {
                let q = &self.queries[i];
                let states = q
                    .unsunk
                    .iter()
                    .filter(|(s, _)| !s.is_empty())
                    .map(|(s, _)| s.clone())
                    .collect();
                (q.rt.def.name.clone(), states)
            })
            .filter(|(_, states): &(String, Vec<Vec<RecordBatch>>)| !states.is_empty())
            .collect();
        if !emissions.is_empty() {
            let queries: Vec<QueryEmissions<'_>> = emissions
                .iter()
                .map(|(name, states)| QueryEmissions {
                    name,
                    emissions: states,
                })
                .collect();
            if let Err(e) = sink.write_states(&queries).await {
                for &i in &pending {
                    let waiting = self.queries[i].unsunk.len();
                    let q = &mut self.queries[i].rt;
                    if q.last_error.is_none() {
                        tracing::warn!(query = %q.def.name, error = %e, "the rollup sink did not take emitted windows; their rows wait and are retried");
                    }
                    q.last_error = Some(format!("{waiting} emissions wait for the rollup sink: {e}"));
                }
                return;
            }
        }
        for i in pending {
            let q = &mut self.queries[i];
            if q.rt
                .last_error
                .as_deref()
                .is_some_and(|m| m.contains("wait for the rollup sink"))
            {
                q.rt.last_error = None;
            }
            let rows: Vec<RecordBatch> = q.unsunk.drain(..).flat_map(|(_, rows)| rows).collect();
            self.store_rows(i, &rows).await;
        }
    }

    /// Runs input from `source` through every query, downstream queries included.
    async fn dispatch(&mut self, source: &str, batches: Vec<RecordBatch>) {
        self.run_downstream(HashMap::from([(source.to_string(), batches)]), Vec::new())
            .await;
    }

    /// Runs `pending` input (rows by source) through every query in dependency order; every
    /// query reading another one also advances with that query's watermark, so derived windows
    /// close when their upstream's do, whether or not rows arrived.
    /// `ahead` holds partial aggregates computed for the single raw-events batch in `pending`.
    async fn run_downstream(
        &mut self,
        mut pending: HashMap<String, Vec<RecordBatch>>,
        mut ahead: Vec<(QueryId, Prepared)>,
    ) {
        for i in 0..self.queries.len() {
            let inputs = pending.get(&self.queries[i].rt.source).cloned();
            if let Some(paused_at) = self.queries[i].paused_at {
                if let Some(inputs) = inputs {
                    self.queries[i].keep_while_paused(inputs, paused_at);
                }
                continue;
            }
            let def = &self.queries[i].rt.def;
            let prepared = ahead
                .iter()
                .position(|((name, created), _)| *name == def.name && *created == def.created_at_us)
                .map(|j| ahead.swap_remove(j).1);
            let mut out = match (inputs, prepared) {
                (Some(_), Some(prepared)) => self.run_prepared(i, prepared).await,
                (Some(inputs), None) => self.run_query(i, &inputs, false).await,
                (None, _) => Vec::new(),
            };
            out.extend(self.follow_upstream(i).await);
            if !out.is_empty() {
                pending
                    .entry(self.queries[i].rt.def.name.clone())
                    .or_default()
                    .extend(out);
            }
        }
    }

    /// Advances query `i` with its upstream query's output watermark (nothing for queries over
    /// raw events); persists what closes and returns the final rows for further downstream.
    async fn follow_upstream(&mut self, i: usize) -> Vec<RecordBatch> {
        let Some(up) = self.index(&self.queries[i].rt.source) else {
            return Vec::new();
        };
        let Some(watermark) = self.queries[up].rt.output_watermark() else {
            return Vec::new();
        };
        match self.queries[i].rt.on_input_watermark(watermark, now_micros()).await {
            Ok(out) => {
                if !out.rows.is_empty() || !out.states.is_empty() {
                    self.persist(i, out.rows, out.states, &[]).await;
                }
                out.closed
            }
            Err(e) => {
                tracing::error!(query = %self.queries[i].rt.def.name, error = %e, "continuous query failed advancing with its upstream");
                self.queries[i].rt.last_error = Some(e.to_string());
                Vec::new()
            }
        }
    }

    /// Runs accepted events through the queries in arrival order: consecutive batches without
    /// partial aggregates ahead are coalesced into one micro-batch; a batch with them is run
    /// on its own, merging the states its request computed.
    async fn on_events(&mut self, inputs: Vec<EventsInput>) {
        let mut plain = Vec::new();
        for input in inputs {
            if input.ahead.is_empty() {
                // Coalesced batches run as one: their lanes count before it, as they would
                // have after each batch.
                self.lanes.observe(&input.lanes, now_micros());
                plain.push(input.batch);
                continue;
            }
            self.on_plain_events(std::mem::take(&mut plain)).await;
            self.lanes.observe(&input.lanes, now_micros());
            let pending = HashMap::from([(EVENTS_TABLE.to_string(), vec![input.batch])]);
            self.run_downstream(pending, input.ahead).await;
        }
        self.on_plain_events(plain).await;
    }

    async fn on_plain_events(&mut self, batches: Vec<RecordBatch>) {
        if batches.is_empty() {
            return;
        }
        let batch = if batches.len() == 1 {
            batches.into_iter().next()
        } else {
            match datafusion::arrow::compute::concat_batches(&events_schema(), &batches) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::error!(error = %e, "coalescing input batches failed; processing them one by one");
                    for b in batches {
                        self.dispatch(EVENTS_TABLE, vec![b]).await;
                    }
                    None
                }
            }
        };
        if let Some(batch) = batch {
            self.dispatch(EVENTS_TABLE, vec![batch]).await;
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Batch(input) => self.on_events(vec![input]).await,
            Command::Register(def, reply) => {
                let _ = reply.send(self.register(def).await);
            }
            Command::Delete(name, reply) => {
                let _ = reply.send(self.delete(&name).await);
            }
            Command::SetPaused(name, paused, reply) => {
                let result = match self.index(&name) {
                    Some(i) => self.set_paused(i, paused).await,
                    None => Err(CqError::NotFound(name)),
                };
                let _ = reply.send(result);
            }
            Command::List(reply) => {
                let _ = reply.send(self.queries.iter().map(Running::status).collect());
            }
        }
    }

    async fn register(&mut self, def: CqDefinition) -> Result<CqStatus, CqError> {
        catalog::validate_name(&def.name).map_err(CqError::Invalid)?;
        let exists = self.index(&def.name).is_some()
            || self
                .deps
                .query_ctx
                .table_exist(def.name.as_str())
                .map_err(CqError::internal)?;
        if exists {
            return Err(CqError::Duplicate(def.name));
        }
        let dir = self.deps.dir.join(&def.name);
        if dir.exists() {
            // Leftover of a query deleted while the process died: start clean.
            std::fs::remove_dir_all(&dir).map_err(CqError::internal_in(format!("removing {}", dir.display())))?;
        }
        self.open_query(def, true).await?;
        self.save()?;
        let status = self
            .queries
            .last()
            .map(Running::status)
            .ok_or_else(|| CqError::bug("vanished"))?;
        tracing::info!(query = %status.name, window = %status.window, source = %status.source, "continuous query registered");
        Ok(status)
    }

    async fn delete(&mut self, name: &str) -> Result<(), CqError> {
        let i = self.index(name).ok_or_else(|| CqError::NotFound(name.to_string()))?;
        if let Some(d) = self.queries.iter().find(|q| q.rt.source == name) {
            return Err(CqError::Invalid(format!(
                "`{}` reads from `{name}`; delete it first",
                d.rt.def.name
            )));
        }
        let removed = self.queries.remove(i);
        self.save()?;
        self.deps.query_ctx.deregister_table(name).map_err(CqError::internal)?;
        self.deps.versions.remove(name);
        if let Some(shared) = &self.deps.shared {
            shared.unshare(name);
        }
        self.deps.live.remove(&crate::live::query_topic(name));
        drop(removed);
        let dir = self.deps.dir.join(name);
        std::fs::remove_dir_all(&dir).map_err(CqError::internal_in(format!("removing {}", dir.display())))?;
        tracing::info!(query = %name, "continuous query deleted");
        Ok(())
    }

    fn save(&self) -> Result<(), CqError> {
        let defs: Vec<CqDefinition> = self.queries.iter().map(|q| q.rt.def.clone()).collect();
        catalog::save(&self.deps.dir, &defs).map_err(CqError::from)?;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let defs: Vec<CqDefinition> = self.queries.iter().map(|q| q.rt.def.clone()).collect();
        self.deps.published.send_replace(defs);
        let preparers = self
            .queries
            .iter()
            .filter(|q| q.rt.source == EVENTS_TABLE)
            .map(|q| ((q.rt.def.name.clone(), q.rt.def.created_at_us), q.rt.preparer()))
            .collect();
        self.preparers.send_replace(Arc::new(preparers));
    }

    async fn tick(&mut self) {
        let now = now_micros();
        for i in 0..self.queries.len() {
            if self.queries[i].paused_at.is_none() {
                self.bound_by_lanes(i, now);
                match self.queries[i].rt.on_tick(now).await {
                    Ok(out) => {
                        if !out.rows.is_empty() || !out.states.is_empty() {
                            self.persist(i, out.rows, out.states, &[]).await;
                        }
                        if !out.closed.is_empty() {
                            let name = self.queries[i].rt.def.name.clone();
                            self.dispatch(&name, out.closed).await;
                        }
                    }
                    Err(e) => self.queries[i].rt.last_error = Some(e.to_string()),
                }
            }
            self.write_checkpoint(i);
            if let Err(e) = self.queries[i].output.maintain().await {
                tracing::warn!(error = %e, "continuous-query output maintenance failed");
            }
        }
        // Idle advance may have moved an upstream watermark without closing a window.
        self.run_downstream(HashMap::new(), Vec::new()).await;
        if self.lanes_saved.1.elapsed() >= Duration::from_secs(1) {
            self.save_lanes();
        }
        if let Err(e) = self.late.maintain().await {
            tracing::warn!(error = %e, "late-events maintenance failed");
        }
    }

    async fn shutdown(&mut self) {
        if self.deps.state_sink.is_some() {
            // The state sink gets each open window's state so far (and what waited for it): an
            // instance that stops for good (a scaled-down pod whose volume goes) leaves its share
            // of the windows it had not closed; one that restarts emits them in full later,
            // replacing that part.
            for i in 0..self.queries.len() {
                let open = self.queries[i].rt.open_states();
                if !open.is_empty() {
                    self.persist(i, Vec::new(), open, &[]).await;
                }
            }
            self.flush_state_sink().await;
        }
        for i in 0..self.queries.len() {
            self.write_checkpoint(i);
        }
        self.save_lanes();
        for q in &self.queries {
            if let Err(e) = q.output.flush().await {
                tracing::warn!(query = %q.rt.def.name, error = %e, "flushing output failed");
            }
        }
        if let Err(e) = self.late.flush().await {
            tracing::warn!(error = %e, "flushing late events failed");
        }
    }
}

/// Takes further queued input batches (up to [`COALESCE_ROWS`] rows) after `first`; stops at
/// the first command that is not a batch and returns it, so commands keep their order.
fn drain_batches(first: EventsInput, rx: &mut mpsc::Receiver<Command>) -> (Vec<EventsInput>, Option<Command>) {
    let mut rows = first.batch.num_rows();
    let mut batches = vec![first];
    while rows < COALESCE_ROWS {
        match rx.try_recv() {
            Ok(Command::Batch(b)) => {
                rows += b.batch.num_rows();
                batches.push(b);
            }
            Ok(other) => return (batches, Some(other)),
            Err(_) => break,
        }
    }
    (batches, None)
}
