//! Continuous-query definitions and their persistence (`<data_dir>/cq/definitions.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::StorageError;

/// When results of a window are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmitMode {
    /// Once, when the watermark passes the window end.
    #[default]
    Final,
    /// The current result of every open (window, key) that changed, every `emit_interval_ms`,
    /// plus the final result when the window closes. The output table keeps every version
    /// and shows the latest one per (window, key).
    Updating,
}

impl EmitMode {
    /// The mode's name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Final => "final",
            Self::Updating => "updating",
        }
    }
}

/// Default interval of updating emission.
pub const DEFAULT_EMIT_INTERVAL_MS: u64 = 5_000;
/// Shortest interval of updating emission.
pub const MIN_EMIT_INTERVAL_MS: u64 = 100;
/// Longest interval of updating emission (one day).
pub const MAX_EMIT_INTERVAL_MS: u64 = 86_400_000;

/// Per-query options.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CqOptions {
    /// Events up to this many ms behind the newest event time still count in their window.
    pub allowed_lateness_ms: u64,
    /// Event time may run at most this far ahead of the wall clock when advancing the
    /// watermark (events further ahead are kept, but cannot close windows).
    pub max_future_ms: u64,
    /// With no input for this long (wall time), event time is assumed to advance with the wall
    /// clock so the last windows close.
    pub idle_timeout_ms: u64,
    /// When results are emitted.
    pub emit: EmitMode,
    /// With `emit = updating`: how often changed windows are emitted (ms). Unset in final mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emit_interval_ms: Option<u64>,
}

impl Default for CqOptions {
    fn default() -> Self {
        Self {
            allowed_lateness_ms: 5_000,
            max_future_ms: 60_000,
            idle_timeout_ms: 10_000,
            emit: EmitMode::Final,
            emit_interval_ms: None,
        }
    }
}

/// Options as a client gives them (HTTP `options` object, SQL `WITH (...)`), before
/// validation: unset fields take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionsInput {
    /// See [`CqOptions::allowed_lateness_ms`].
    pub allowed_lateness_ms: Option<u64>,
    /// See [`CqOptions::max_future_ms`].
    pub max_future_ms: Option<u64>,
    /// See [`CqOptions::idle_timeout_ms`].
    pub idle_timeout_ms: Option<u64>,
    /// `final` (default) or `updating`.
    pub emit: Option<String>,
    /// See [`CqOptions::emit_interval_ms`].
    pub emit_interval_ms: Option<u64>,
}

impl OptionsInput {
    /// Validates the options and fills in defaults.
    pub fn validate(self) -> Result<CqOptions, String> {
        let defaults = CqOptions::default();
        let emit = match self.emit.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("final") => EmitMode::Final,
            Some("updating") => EmitMode::Updating,
            Some(_) => {
                return Err(format!(
                    "unknown emit mode {:?}: use \"final\" (one row per window and key when the window closes) or \"updating\" (changed rows every emit_interval_ms, then the final row)",
                    self.emit.unwrap_or_default()
                ));
            }
        };
        let emit_interval_ms = match (emit, self.emit_interval_ms) {
            (EmitMode::Final, Some(_)) => {
                return Err("emit_interval_ms only applies to emit = \"updating\"".into());
            }
            (EmitMode::Final, None) => None,
            (EmitMode::Updating, None) => Some(DEFAULT_EMIT_INTERVAL_MS),
            (EmitMode::Updating, Some(ms)) if (MIN_EMIT_INTERVAL_MS..=MAX_EMIT_INTERVAL_MS).contains(&ms) => Some(ms),
            (EmitMode::Updating, Some(ms)) => {
                return Err(format!(
                    "emit_interval_ms must be between {MIN_EMIT_INTERVAL_MS} and {MAX_EMIT_INTERVAL_MS}, got {ms}"
                ));
            }
        };
        Ok(CqOptions {
            allowed_lateness_ms: self.allowed_lateness_ms.unwrap_or(defaults.allowed_lateness_ms),
            max_future_ms: self.max_future_ms.unwrap_or(defaults.max_future_ms),
            idle_timeout_ms: self.idle_timeout_ms.unwrap_or(defaults.idle_timeout_ms),
            emit,
            emit_interval_ms,
        })
    }
}

/// A registered continuous query.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CqDefinition {
    /// Name; also the output table's name.
    pub name: String,
    /// The SELECT as the user wrote it.
    pub sql: String,
    /// Options.
    #[serde(default)]
    pub options: CqOptions,
    /// Whether it is paused.
    #[serde(default)]
    pub paused: bool,
    /// Registration time, µs since the epoch (bounds replay after a restart).
    pub created_at_us: i64,
}

/// Validates a query name: a lower-case SQL identifier.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(format!(
            "invalid name {name:?}: use 1-63 characters of a-z, 0-9 and _, starting with a letter"
        ));
    }
    if name.starts_with("__") || ["events", "late_events", "information_schema"].contains(&name) {
        return Err(format!("{name:?} is reserved"));
    }
    Ok(())
}

fn file(dir: &Path) -> PathBuf {
    dir.join("definitions.json")
}

/// Loads saved definitions (none if the file does not exist).
pub fn load(dir: &Path) -> Result<Vec<CqDefinition>, StorageError> {
    let path = file(dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(StorageError::format(format!("parsing {}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StorageError::Io {
            context: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

/// Saves definitions atomically (temp file, fsync, rename).
pub fn save(dir: &Path, defs: &[CqDefinition]) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(StorageError::io(format!("creating {}", dir.display())))?;
    let path = file(dir);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(defs).map_err(StorageError::format("encoding definitions"))?;
    std::fs::write(&tmp, bytes).map_err(StorageError::io(format!("writing {}", tmp.display())))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(StorageError::io("syncing definitions"))?;
    std::fs::rename(&tmp, &path).map_err(StorageError::io(format!("renaming {}", tmp.display())))?;
    Ok(())
}
