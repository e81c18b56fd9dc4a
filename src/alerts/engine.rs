//! The alert engine: rules, their groups' states, evaluation when a source emits, the
//! transition log and the notification queue.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::datasource::MemTable;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc, watch};

use super::config::AlertsConfig;
use super::notify::Notifier;
use super::rule::{AlertRule, CheckedRule, Condition};
use super::state::{Breach, Change, Phase, RuleState};
use super::store::{AlertFiles, Delivery, Transition};
use super::{AlertsError, sql, table};
use crate::event::time::now_micros;
use crate::live::{ALERTS_TOPIC, LiveFeed, query_topic};
use crate::query::QueryEngine;

/// Windows one evaluation looks at, at most (the rest on the next).
const MAX_WINDOWS: usize = 1000;
/// Rows a rule's condition may return per evaluation.
const MAX_ROWS: usize = 100_000;
/// Every rule is also evaluated this often (sources that were replaced, missed wake-ups).
const TICK: Duration = Duration::from_secs(5);

/// What the engine needs.
#[derive(Debug, Clone)]
pub struct AlertsDeps {
    /// `<data_dir>/alerts`.
    pub dir: PathBuf,
    /// Runs the rules' SQL; `hub_alerts` is registered in its catalog.
    pub engine: QueryEngine,
    /// Sources' emissions wake rules; transitions are published on `alerts`.
    pub live: LiveFeed,
    /// Settings.
    pub config: AlertsConfig,
}

/// A rule with what it reads, resolved against the tables.
#[derive(Debug, Clone)]
struct Loaded {
    checked: CheckedRule,
    source: String,
    group_by: Vec<String>,
    has_final: bool,
    /// The source and columns were found (else it is resolved again on every tick).
    resolved: bool,
    last_error: Option<String>,
}

/// A rule as `GET /api/v1/alerts/rules` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RuleView {
    /// The rule as written (webhook header values shown as `***`: they often hold credentials).
    pub rule: AlertRule,
    /// The continuous query whose emissions evaluate it.
    pub source: String,
    /// The group columns in use.
    pub groups: Vec<String>,
    /// Start of the last window evaluated (RFC 3339).
    pub evaluated_through: Option<String>,
    /// The last evaluation error, if the last evaluation failed.
    pub last_error: Option<String>,
}

/// A group that is pending or firing (`GET /api/v1/alerts`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AlertView {
    /// The rule.
    pub rule: String,
    /// The rule's severity.
    pub severity: String,
    /// `pending` or `firing`.
    pub state: Phase,
    /// When the group started breaching (event time, RFC 3339).
    pub since: String,
    /// The group's columns and values.
    pub group: BTreeMap<String, String>,
    /// The last value measured.
    pub value: Option<f64>,
    /// What the condition found.
    pub detail: String,
}

struct Outgoing {
    transition: Transition,
    hooks: Vec<super::rule::Webhook>,
}

struct Core {
    deps: AlertsDeps,
    files: AlertFiles,
    rules: Vec<Loaded>,
    states: HashMap<String, RuleState>,
    cursors: BTreeMap<String, i64>,
    history: VecDeque<Transition>,
    outbox: mpsc::Sender<Outgoing>,
    wake: mpsc::Sender<String>,
    watchers: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// Cheap handle to the alert engine.
#[derive(Clone)]
pub struct Alerts {
    core: Arc<Mutex<Core>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

impl Alerts {
    /// Loads the rules and the transition log, re-queues notifications without an outcome and
    /// starts evaluating.
    pub async fn start(deps: AlertsDeps, shutdown: watch::Receiver<bool>) -> Result<Self, AlertsError> {
        let files = AlertFiles::open(deps.dir.clone())?;
        let secret = files.secret(&deps.config.webhook_secret)?;
        let notifier = Notifier::new(
            secret,
            deps.config.delivery_attempts,
            Duration::from_secs(deps.config.delivery_timeout_secs.max(1)),
        )
        .map_err(|e| AlertsError::Invalid(format!("webhook client: {e}")))?;
        let (outbox, outbox_rx) = mpsc::channel(1024);
        let (wake, wake_rx) = mpsc::channel(64);
        let mut core = Core {
            files: files.clone(),
            rules: Vec::new(),
            states: HashMap::new(),
            cursors: files.cursors()?,
            history: VecDeque::new(),
            outbox,
            wake,
            watchers: HashMap::new(),
            deps,
        };
        core.deps.live.declare(ALERTS_TOPIC, table::schema());
        for rule in files.rules()? {
            let name = rule.name.clone();
            match rule.check() {
                Ok(checked) => {
                    let loaded = core.resolve(checked).await.unwrap_or_else(|(checked, e)| {
                        tracing::warn!(rule = %name, error = %e, "alert rule does not resolve yet");
                        unresolved(checked, e)
                    });
                    core.rules.push(loaded);
                }
                Err(e) => tracing::error!(rule = %name, error = %e, "saved alert rule is invalid; skipped"),
            }
        }
        // Rebuild the groups that are firing, and the table.
        let transitions = files.transitions()?;
        for t in &transitions {
            let state = core.states.entry(t.rule.clone()).or_default();
            let breach = Breach {
                key: t.group_key.clone(),
                labels: t.labels.clone(),
                value: t.value,
                detail: t.detail.clone(),
            };
            if t.state == "firing" {
                state.restore_firing(t.since_us, breach);
            } else {
                state.forget(&t.group_key);
            }
        }
        let done: HashSet<(String, String)> = files.deliveries()?.into_iter().map(|d| (d.id, d.url)).collect();
        let mut resend = Vec::new();
        for t in &transitions {
            let Some(rule) = core.rules.iter().find(|r| r.checked.rule.name == t.rule) else {
                continue;
            };
            let hooks: Vec<_> = rule
                .checked
                .rule
                .notify
                .iter()
                .filter(|h| !done.contains(&(t.id.clone(), h.url.clone())))
                .cloned()
                .collect();
            if !hooks.is_empty() {
                resend.push(Outgoing {
                    transition: t.clone(),
                    hooks,
                });
            }
        }
        let keep = core.deps.config.history;
        core.history = transitions.into_iter().rev().take(keep).rev().collect();
        core.refresh_table();
        if !resend.is_empty() {
            tracing::info!(
                notifications = resend.len(),
                "re-sending alert notifications that had no outcome before the restart"
            );
        }
        tokio::spawn(deliver(notifier, files, outbox_rx, resend, shutdown.clone()));
        let alerts = Self {
            core: Arc::new(Mutex::new(core)),
        };
        tokio::spawn(alerts.clone().run(wake_rx, shutdown));
        Ok(alerts)
    }

    async fn run(self, mut wake: mpsc::Receiver<String>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                source = wake.recv() => {
                    let Some(source) = source else { break };
                    let mut sources = HashSet::from([source]);
                    while let Ok(s) = wake.try_recv() {
                        sources.insert(s);
                    }
                    let mut core = self.core.lock().await;
                    for s in sources {
                        core.evaluate_source(Some(&s)).await;
                    }
                }
                _ = tick.tick() => {
                    let mut core = self.core.lock().await;
                    core.retry_unresolved().await;
                    core.watch_sources();
                    core.evaluate_source(None).await;
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    /// Adds a rule; it evaluates the source's windows from the next one emitted.
    pub async fn create(&self, rule: AlertRule) -> Result<RuleView, AlertsError> {
        let checked = rule.check().map_err(AlertsError::Invalid)?;
        let mut core = self.core.lock().await;
        let name = checked.rule.name.clone();
        if core.rules.iter().any(|r| r.checked.rule.name == name) {
            return Err(AlertsError::Exists(name));
        }
        if core.rules.len() >= core.deps.config.max_rules {
            return Err(AlertsError::Invalid(format!(
                "{} alert rules exist, the most alerts.max_rules allows",
                core.rules.len()
            )));
        }
        let loaded = core.resolve(checked).await.map_err(|(_, e)| AlertsError::Invalid(e))?;
        // Start after what the source holds now: a new rule does not alert on history.
        let latest = core.latest_window(&loaded.source).await?;
        if let Some(w) = latest {
            core.cursors.insert(name.clone(), w);
        }
        core.rules.push(loaded);
        core.save()?;
        core.watch_sources();
        let view = core.view(core.rules.len() - 1);
        tracing::info!(rule = %name, source = %view.source, "alert rule created");
        Ok(view)
    }

    /// Removes a rule and its groups' states (nothing is sent for them).
    pub async fn delete(&self, name: &str) -> Result<(), AlertsError> {
        let mut core = self.core.lock().await;
        let i = core
            .rules
            .iter()
            .position(|r| r.checked.rule.name == name)
            .ok_or_else(|| AlertsError::NotFound(name.to_string()))?;
        core.rules.remove(i);
        core.states.remove(name);
        core.cursors.remove(name);
        core.save()?;
        Ok(())
    }

    /// Every rule.
    pub async fn rules(&self) -> Vec<RuleView> {
        let core = self.core.lock().await;
        (0..core.rules.len()).map(|i| core.view(i)).collect()
    }

    /// Every group that is pending or firing.
    pub async fn current(&self) -> Vec<AlertView> {
        let core = self.core.lock().await;
        let mut out = Vec::new();
        for rule in &core.rules {
            let Some(state) = core.states.get(&rule.checked.rule.name) else {
                continue;
            };
            for g in state.groups() {
                out.push(AlertView {
                    rule: rule.checked.rule.name.clone(),
                    severity: rule.checked.rule.severity.clone(),
                    state: g.phase,
                    since: crate::event::time::rfc3339(g.since_us),
                    group: g.last.labels.clone(),
                    value: g.last.value,
                    detail: g.last.detail.clone(),
                });
            }
        }
        out.sort_by(|a, b| (&a.rule, &a.group).cmp(&(&b.rule, &b.group)));
        out
    }
}

fn unresolved(checked: CheckedRule, error: String) -> Loaded {
    Loaded {
        source: source_hint(&checked.condition),
        group_by: checked.rule.group_by.clone(),
        checked,
        has_final: false,
        resolved: false,
        last_error: Some(error),
    }
}

fn source_hint(condition: &Condition) -> String {
    match condition {
        Condition::Anomaly { table, .. } | Condition::Budget { table, .. } => table.clone(),
        Condition::Query(_) => String::new(),
    }
}

/// A column of timestamps as µs.
fn micros(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, AlertsError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| AlertsError::Invalid(format!("no `{name}` column")))?;
    let as_us = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))
        .and_then(|c| cast(&c, &DataType::Int64))
        .map_err(|e| AlertsError::Invalid(format!("`{name}`: {e}")))?;
    let ints = as_us.as_primitive::<Int64Type>();
    Ok((0..ints.len())
        .map(|i| ints.is_valid(i).then(|| ints.value(i)))
        .collect())
}

fn transition_id(rule: &str, change: &Change) -> String {
    let mut h = Sha256::new();
    for part in [
        rule,
        &change.breach.key,
        change.state,
        &change.at_us.to_string(),
        &change.since_us.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl Core {
    /// Finds the rule's source table and checks its columns; on failure returns the rule and
    /// the reason.
    async fn resolve(&self, checked: CheckedRule) -> Result<Loaded, (CheckedRule, String)> {
        let ctx = self.deps.engine.context().clone();
        let is_query = |t: &str| self.deps.live.topic(&query_topic(t)).is_some();
        let (source, schema) = match &checked.condition {
            Condition::Anomaly { table, column, .. } | Condition::Budget { table, column, .. } => {
                if !is_query(table) {
                    return Err((checked.clone(), format!("`{table}` is not a continuous query")));
                }
                let provider = match ctx.table_provider(table.as_str()).await {
                    Ok(p) => p,
                    Err(e) => return Err((checked.clone(), format!("`{table}`: {e}"))),
                };
                let schema = provider.schema();
                match schema.field_with_name(column) {
                    Ok(f) if f.data_type().is_numeric() => {}
                    Ok(f) => {
                        return Err((
                            checked.clone(),
                            format!("`{table}.{column}` is {}, not a number", f.data_type()),
                        ));
                    }
                    Err(_) => return Err((checked.clone(), format!("`{table}` has no column `{column}`"))),
                }
                (table.clone(), schema)
            }
            Condition::Query(q) => {
                let plan = match ctx.state().create_logical_plan(q).await {
                    Ok(p) => p,
                    Err(e) => return Err((checked.clone(), format!("query: {e}"))),
                };
                let mut tables = Vec::new();
                let _ = datafusion::common::tree_node::TreeNode::apply(&plan, |node| {
                    if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
                        tables.push(scan.table_name.table().to_string());
                    }
                    Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                });
                let Some(source) = tables.iter().find(|t| is_query(t)).cloned() else {
                    return Err((
                        checked.clone(),
                        "query: must read a continuous query's table (its emissions evaluate the rule)".into(),
                    ));
                };
                let schema = plan.schema().inner().clone();
                if schema.field_with_name("window_start").is_err() {
                    return Err((
                        checked.clone(),
                        "query: must return `window_start` (the window each breaching row is about)".into(),
                    ));
                }
                match schema.field_with_name("value") {
                    Ok(f) if f.data_type().is_numeric() => {}
                    _ => return Err((checked.clone(), "query: must return a numeric `value` column".into())),
                }
                (source, schema)
            }
        };
        let text_columns = |s: &datafusion::arrow::datatypes::Schema| -> Vec<String> {
            s.fields()
                .iter()
                .filter(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
                .map(|f| f.name().clone())
                .collect()
        };
        let group_by = if checked.rule.group_by.is_empty() && matches!(checked.condition, Condition::Anomaly { .. }) {
            text_columns(&schema)
        } else {
            checked.rule.group_by.clone()
        };
        for g in &group_by {
            if schema.field_with_name(g).is_err() {
                return Err((
                    checked.clone(),
                    format!("group_by: `{g}` is not a column of `{source}`'s rows"),
                ));
            }
        }
        if let Condition::Anomaly { table, .. } = &checked.condition {
            let mut all = text_columns(&schema);
            let mut given = group_by.clone();
            all.sort();
            given.sort();
            if given != all {
                return Err((
                    checked.clone(),
                    format!(
                        "group_by: an anomaly rule follows each series of `{table}`, which are told apart by all of {}",
                        all.join(", ")
                    ),
                ));
            }
        }
        let source_schema = match ctx.table_provider(source.as_str()).await {
            Ok(p) => p.schema(),
            Err(e) => return Err((checked.clone(), format!("`{source}`: {e}"))),
        };
        Ok(Loaded {
            has_final: source_schema.field_with_name("_final").is_ok(),
            source,
            group_by,
            checked,
            resolved: true,
            last_error: None,
        })
    }

    async fn retry_unresolved(&mut self) {
        for i in 0..self.rules.len() {
            // The source was missing at start (a continuous query registered later).
            if !self.rules[i].resolved {
                let checked = self.rules[i].checked.clone();
                match self.resolve(checked).await {
                    Ok(loaded) => self.rules[i] = loaded,
                    Err((_, e)) => self.rules[i].last_error = Some(e),
                }
            }
        }
    }

    /// Subscribes to every rule source's emissions (once per source).
    fn watch_sources(&mut self) {
        let sources: HashSet<String> = self
            .rules
            .iter()
            .filter(|r| r.resolved)
            .map(|r| r.source.clone())
            .collect();
        self.watchers
            .retain(|s, task| sources.contains(s) && !task.is_finished());
        for source in sources {
            if self.watchers.contains_key(&source) {
                continue;
            }
            let Some(topic) = self.deps.live.topic(&query_topic(&source)) else {
                continue;
            };
            let wake = self.wake.clone();
            let name = source.clone();
            let task = tokio::spawn(async move {
                let mut sub = topic.subscribe(None);
                // A lagging watcher loses nothing (the evaluation reads the table); a closed
                // topic ends it.
                while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) = sub.live.recv().await {
                    let _ = wake.try_send(name.clone());
                }
            });
            self.watchers.insert(source, task);
        }
    }

    async fn run_sql(&self, sql: &str) -> Result<Vec<RecordBatch>, AlertsError> {
        Ok(self.deps.engine.run(sql, Some(MAX_ROWS), None).await?.batches)
    }

    async fn latest_window(&self, source: &str) -> Result<Option<i64>, AlertsError> {
        let batches = self
            .run_sql(&format!("SELECT max(window_start) AS w FROM {}", sql::quote(source)))
            .await?;
        Ok(batches
            .first()
            .map(|b| micros(b, "w"))
            .transpose()?
            .and_then(|v| v.into_iter().flatten().next()))
    }

    /// Evaluates the rules reading `source` (all rules: `None`).
    async fn evaluate_source(&mut self, source: Option<&str>) {
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if !rule.resolved || source.is_some_and(|s| s != rule.source) {
                continue;
            }
            let name = rule.checked.rule.name.clone();
            match self.evaluate(i).await {
                Ok(()) => self.rules[i].last_error = None,
                Err(e) => {
                    if self.rules[i].last_error.is_none() {
                        tracing::warn!(rule = %name, error = %e, "alert rule evaluation failed");
                    }
                    self.rules[i].last_error = Some(e.to_string());
                }
            }
        }
    }

    /// Evaluates rule `i` on the windows its source emitted since its cursor.
    async fn evaluate(&mut self, i: usize) -> Result<(), AlertsError> {
        let rule = self.rules[i].clone();
        let name = rule.checked.rule.name.clone();
        let cursor = self.cursors.get(&name).copied();
        let batches = self
            .run_sql(&sql::windows_sql(&rule.source, rule.has_final, cursor, MAX_WINDOWS))
            .await?;
        let mut windows = Vec::new();
        for b in &batches {
            for (s, e) in micros(b, "window_start")?.into_iter().zip(micros(b, "window_end")?) {
                if let (Some(s), Some(e)) = (s, e) {
                    windows.push((s, e));
                }
            }
        }
        let (Some(first), Some(last)) = (windows.first().copied(), windows.last().copied()) else {
            return Ok(());
        };
        let condition = &rule.checked.condition;
        let mut breaches: BTreeMap<i64, Vec<Breach>> = BTreeMap::new();
        if let Condition::Budget { period, .. } = condition {
            // Sums only grow within a period: its last window decides.
            let mut last_of_period: BTreeMap<i64, i64> = BTreeMap::new();
            for (s, _) in &windows {
                last_of_period.insert(period.of(*s).0, *s);
            }
            windows.retain(|(s, _)| last_of_period.values().any(|l| l == s));
            for (s, _) in &windows {
                let sql = sql::breaches_sql(condition, &rule.group_by, *s, *s, 0);
                let rows = self.run_sql(&sql).await?;
                let found =
                    sql::read_breaches(condition, &rule.group_by, &rows, Some(*s)).map_err(AlertsError::Invalid)?;
                breaches.extend(found);
            }
        } else {
            let sql = sql::breaches_sql(condition, &rule.group_by, first.0, last.0, first.1 - first.0);
            let rows = self.run_sql(&sql).await?;
            breaches = sql::read_breaches(condition, &rule.group_by, &rows, None).map_err(AlertsError::Invalid)?;
        }
        let state = self.states.entry(name.clone()).or_default();
        let mut changes = Vec::new();
        for (start, end) in &windows {
            changes.extend(state.observe(*end, rule.checked.for_us, breaches.remove(start).unwrap_or_default()));
        }
        let now = now_micros();
        let transitions: Vec<Transition> = changes
            .iter()
            .map(|c| Transition {
                id: transition_id(&name, c),
                rule: name.clone(),
                state: c.state.to_string(),
                severity: rule.checked.rule.severity.clone(),
                at_us: c.at_us,
                since_us: c.since_us,
                group_key: c.breach.key.clone(),
                labels: c.breach.labels.clone(),
                value: c.breach.value,
                detail: c.breach.detail.clone(),
                recorded_at_us: now,
            })
            .collect();
        // Logged (synced) before anyone hears of them; the cursor after, so a crash in between
        // evaluates the windows again and finds the same transitions already in the states.
        self.files.append_transitions(&transitions)?;
        self.cursors.insert(name.clone(), last.0);
        self.files.save_cursors(&self.cursors)?;
        if transitions.is_empty() {
            return Ok(());
        }
        for t in &transitions {
            tracing::info!(rule = %name, state = %t.state, group = %t.group_key, detail = %t.detail, "alert");
            self.history.push_back(t.clone());
        }
        while self.history.len() > self.deps.config.history {
            self.history.pop_front();
        }
        self.refresh_table();
        match table::batch(transitions.iter()) {
            Ok(b) => self.deps.live.publish(ALERTS_TOPIC, &b),
            Err(e) => tracing::warn!(error = %e, "alert transitions not published live"),
        }
        // A budget's groups resolve when a new period starts: logged, not posted (each
        // threshold fires once per period, which is what its receivers want to hear).
        let budget = matches!(rule.checked.condition, Condition::Budget { .. });
        if !rule.checked.rule.notify.is_empty() {
            for t in transitions.into_iter().filter(|t| !(budget && t.state == "resolved")) {
                let out = Outgoing {
                    transition: t,
                    hooks: rule.checked.rule.notify.clone(),
                };
                // Waits when 1,024 notifications are queued; the log keeps them meanwhile.
                if self.outbox.send(out).await.is_err() {
                    tracing::warn!("the notification queue is closed; notifications are sent after the restart");
                }
            }
        }
        Ok(())
    }

    /// Replaces `hub_alerts` with the transitions held.
    fn refresh_table(&self) {
        let ctx = self.deps.engine.context();
        let table = table::batch(self.history.iter()).and_then(|b| {
            MemTable::try_new(table::schema(), vec![vec![b]])
                .map_err(|e| datafusion::arrow::error::ArrowError::ExternalError(Box::new(e)))
        });
        match table {
            Ok(t) => {
                let _ = ctx.deregister_table(table::HUB_ALERTS);
                if let Err(e) = ctx.register_table(table::HUB_ALERTS, Arc::new(t)) {
                    tracing::warn!(error = %e, "hub_alerts not registered");
                }
            }
            Err(e) => tracing::warn!(error = %e, "hub_alerts not rebuilt"),
        }
    }

    fn save(&self) -> Result<(), AlertsError> {
        let rules: Vec<AlertRule> = self.rules.iter().map(|r| r.checked.rule.clone()).collect();
        self.files.save_rules(&rules)?;
        self.files.save_cursors(&self.cursors)?;
        Ok(())
    }

    fn view(&self, i: usize) -> RuleView {
        let r = &self.rules[i];
        let mut rule = r.checked.rule.clone();
        for hook in &mut rule.notify {
            for value in hook.headers.values_mut() {
                *value = "***".into();
            }
        }
        RuleView {
            rule,
            source: r.source.clone(),
            groups: r.group_by.clone(),
            evaluated_through: self
                .cursors
                .get(&r.checked.rule.name)
                .map(|c| crate::event::time::rfc3339(*c)),
            last_error: r.last_error.clone(),
        }
    }
}

/// Posts queued transitions, one at a time, recording each outcome.
async fn deliver(
    notifier: Notifier,
    files: AlertFiles,
    mut queue: mpsc::Receiver<Outgoing>,
    resend: Vec<Outgoing>,
    shutdown: watch::Receiver<bool>,
) {
    let mut pending: VecDeque<Outgoing> = resend.into();
    loop {
        let out = match pending.pop_front() {
            Some(o) => o,
            None => match queue.recv().await {
                Some(o) => o,
                None => return,
            },
        };
        for hook in &out.hooks {
            let (result, attempts) = notifier.deliver(&out.transition, hook, &shutdown).await;
            if *shutdown.borrow() && result.is_err() {
                // Stopping: no outcome is recorded, so the next start sends it.
                return;
            }
            let outcome = match &result {
                Ok(()) => "delivered",
                Err(e) => {
                    tracing::error!(rule = %out.transition.rule, id = %out.transition.id, error = %crate::error::chain(e), attempts, "alert notification not delivered");
                    "failed"
                }
            };
            let record = Delivery {
                id: out.transition.id.clone(),
                url: hook.url.clone(),
                result: outcome.to_string(),
                attempts,
                at_us: now_micros(),
            };
            if let Err(e) = files.append_delivery(&record) {
                tracing::error!(error = %e, "delivery outcome not recorded; the notification may be sent again after a restart");
            }
        }
    }
}
