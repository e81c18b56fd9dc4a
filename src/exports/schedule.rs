//! Scheduled snapshots: `[[exports.schedules]]` export each closed hour or day of a table to
//! `<destination>/<period>/`, idempotent per period (a re-run replaces that period's files) and
//! catching up the periods missed while the Hub was down. What is done is kept in
//! `<data_dir>/exports/schedules.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ExportRequest, ExportState, Exports};

/// Length of a scheduled period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// One hour.
    Hourly,
    /// One UTC day.
    Daily,
}

impl Period {
    fn micros(self) -> i64 {
        match self {
            Self::Hourly => 3_600_000_000,
            Self::Daily => 86_400_000_000,
        }
    }

    fn label(self, start_us: i64) -> String {
        let t = chrono::DateTime::from_timestamp_micros(start_us).unwrap_or_default();
        match self {
            Self::Hourly => t.format("%Y-%m-%dT%H").to_string(),
            Self::Daily => t.format("%Y-%m-%d").to_string(),
        }
    }
}

/// One `[[exports.schedules]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Name (key of its progress).
    pub name: String,
    /// Table to export.
    pub table: String,
    /// `hourly` or `daily`.
    pub period: Period,
    /// Destination; each period goes to `<destination>/<period>/`.
    pub destination: String,
    /// Hive partition columns inside a period.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Seconds after a period ends before it is exported (for a rollup: after its window
    /// closed, i.e. at least the allowed lateness).
    #[serde(default = "default_lag")]
    pub lag_secs: u64,
    /// First period to export (RFC 3339); default: the period in progress at first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Most periods exported per pass (the rest follow on the next passes).
    #[serde(default = "default_catch_up")]
    pub max_catch_up: usize,
}

fn default_lag() -> u64 {
    300
}

fn default_catch_up() -> usize {
    48
}

/// The `[exports]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportsConfig {
    /// Exports running at once (API and schedules).
    pub max_running: usize,
    /// Seconds between passes over the schedules.
    pub schedule_interval_secs: u64,
    /// Scheduled snapshots.
    pub schedules: Vec<ScheduleConfig>,
}

impl Default for ExportsConfig {
    fn default() -> Self {
        Self {
            max_running: 2,
            schedule_interval_secs: 30,
            schedules: Vec::new(),
        }
    }
}

/// Periods `[start, end)` of `schedule` due at `now_us`, after `done_until_us`.
pub fn due(schedule: &ScheduleConfig, done_until_us: i64, now_us: i64) -> Vec<(i64, i64)> {
    let len = schedule.period.micros();
    let lag = i64::try_from(schedule.lag_secs)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1_000_000);
    let mut start = done_until_us.div_euclid(len) * len;
    let mut out = Vec::new();
    while start + len + lag <= now_us && out.len() < schedule.max_catch_up.max(1) {
        out.push((start, start + len));
        start += len;
    }
    out
}

fn load(path: &PathBuf) -> BTreeMap<String, i64> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(path: &std::path::Path, state: &BTreeMap<String, i64>) -> std::io::Result<()> {
    crate::storage::json_file::write(path, state, crate::storage::json_file::Access::Default)
}

/// Runs the schedules until `shutdown`; `now_us` is the wall clock (injected for tests).
pub async fn run(
    exports: Exports,
    snapshots: super::snapshots::Snapshots,
    config: ExportsConfig,
    state_path: PathBuf,
    now_us: impl Fn() -> i64 + Send + 'static,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if config.schedules.is_empty() {
        return;
    }
    let mut state = load(&state_path);
    loop {
        for schedule in &config.schedules {
            let now = now_us();
            let done = match state.get(&schedule.name) {
                Some(d) => *d,
                None => match schedule.since.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
                    Some(Ok(t)) => t.timestamp_micros(),
                    Some(Err(e)) => {
                        tracing::error!(schedule = %schedule.name, error = %e, "`since` is not RFC 3339; schedule skipped");
                        continue;
                    }
                    None => now,
                },
            };
            for (start, end) in due(schedule, done, now) {
                let label = schedule.period.label(start);
                let request = ExportRequest {
                    table: Some(schedule.table.clone()),
                    start: Some(crate::event::time::rfc3339(start)),
                    end: Some(crate::event::time::rfc3339(end)),
                    sql: None,
                    destination: format!("{}/{label}/", schedule.destination.trim_end_matches('/')),
                    partition_by: schedule.partition_by.clone(),
                    compression: None,
                    row_group_rows: None,
                };
                match exports.run_to_end(request).await {
                    Ok(()) => {
                        state.insert(schedule.name.clone(), end);
                        if let Err(e) = save(&state_path, &state) {
                            tracing::warn!(error = %e, "could not save the schedules' progress");
                        }
                        tracing::info!(schedule = %schedule.name, period = %label, "scheduled snapshot written");
                        if super::snapshots::valid_name(&schedule.name)
                            && let Err(e) = snapshots.ensure(&schedule.name, &schedule.destination).await
                        {
                            tracing::warn!(schedule = %schedule.name, error = %e, "could not register the schedule's snapshot table");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(schedule = %schedule.name, period = %label, error = %e, "scheduled snapshot failed; retried on the next pass");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(config.schedule_interval_secs.max(1))) => {}
            _ = shutdown.changed() => return,
        }
    }
}

impl Exports {
    /// Starts `request` and waits for it to end.
    pub async fn run_to_end(&self, request: ExportRequest) -> Result<(), super::ExportError> {
        let (started, task) = self.launch(request)?;
        // Err only when cancelled: the status says so.
        let _ = task.await;
        let status = self.get(&started.id)?;
        match status.status {
            ExportState::Succeeded => Ok(()),
            _ => Err(super::ExportError::Destination(
                status.error.unwrap_or_else(|| "cancelled".into()).into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_periods_wait_for_the_lag_and_are_bounded() {
        let s = ScheduleConfig {
            name: "h".into(),
            table: "events".into(),
            period: Period::Hourly,
            destination: "file:///x".into(),
            partition_by: vec![],
            lag_secs: 300,
            since: None,
            max_catch_up: 3,
        };
        let hour = 3_600_000_000;
        // 10:04 with everything done until 09:00: 09:00–10:00 is not due until 10:05.
        assert_eq!(due(&s, 9 * hour, 10 * hour + 4 * 60_000_000), vec![]);
        assert_eq!(
            due(&s, 9 * hour, 10 * hour + 5 * 60_000_000),
            vec![(9 * hour, 10 * hour)]
        );
        // Down for a day: three periods per pass.
        assert_eq!(due(&s, 0, 30 * hour).len(), 3);
        assert_eq!(Period::Daily.label(0), "1970-01-01");
        assert_eq!(Period::Hourly.label(hour), "1970-01-01T01");
    }
}
