//! What the alert engine keeps on disk, under `<data_dir>/alerts/`: the rules
//! (`rules.json`), every transition (`transitions.jsonl`, appended and synced before anyone is
//! told), every delivery outcome (`deliveries.jsonl`) and how far each rule has evaluated
//! (`cursors.json`). A restart rebuilds the firing groups from the transitions and re-sends
//! the transitions with no delivery outcome.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::rule::AlertRule;
use crate::storage::StorageError;

/// One change of a group's state, as logged, tabled (`hub_alerts`) and posted.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Transition {
    /// Stable id (the same transition found again after a restart has the same id); sent as
    /// `X-Hub-Alert-Id` so receivers can drop a repeat.
    pub id: String,
    /// The rule.
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The rule's severity.
    pub severity: String,
    /// Event time of the window that caused it (its end), µs.
    pub at_us: i64,
    /// When the group started breaching, µs.
    pub since_us: i64,
    /// `col=value,...` of the group.
    pub group_key: String,
    /// The group's columns and values.
    pub labels: BTreeMap<String, String>,
    /// The measured value.
    pub value: Option<f64>,
    /// What the condition found.
    pub detail: String,
    /// Wall-clock time it was recorded, µs.
    pub recorded_at_us: i64,
}

/// The outcome of posting one transition to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Delivery {
    /// The transition.
    pub id: String,
    /// The webhook's URL.
    pub url: String,
    /// `delivered` or `failed`.
    pub result: String,
    /// Requests made.
    pub attempts: u32,
    /// When, µs.
    pub at_us: i64,
}

/// The files of `<data_dir>/alerts`.
#[derive(Debug, Clone)]
pub struct AlertFiles {
    dir: PathBuf,
}

impl AlertFiles {
    /// The files under `dir` (created when missing).
    pub fn open(dir: PathBuf) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&dir).map_err(StorageError::io(format!("creating {}", dir.display())))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The saved rules.
    pub fn rules(&self) -> Result<Vec<AlertRule>, StorageError> {
        Ok(read_json(&self.path("rules.json"))?.unwrap_or_default())
    }

    /// Replaces the saved rules.
    pub fn save_rules(&self, rules: &[AlertRule]) -> Result<(), StorageError> {
        write_json(&self.path("rules.json"), &rules)
    }

    /// How far each rule has evaluated (window start, µs).
    pub fn cursors(&self) -> Result<BTreeMap<String, i64>, StorageError> {
        Ok(read_json(&self.path("cursors.json"))?.unwrap_or_default())
    }

    /// Replaces the cursors.
    pub fn save_cursors(&self, cursors: &BTreeMap<String, i64>) -> Result<(), StorageError> {
        write_json(&self.path("cursors.json"), cursors)
    }

    /// Every logged transition, oldest first.
    pub fn transitions(&self) -> Result<Vec<Transition>, StorageError> {
        read_lines(&self.path("transitions.jsonl"))
    }

    /// Logs transitions durably.
    pub fn append_transitions(&self, items: &[Transition]) -> Result<(), StorageError> {
        append_lines(&self.path("transitions.jsonl"), items)
    }

    /// Every delivery outcome.
    pub fn deliveries(&self) -> Result<Vec<Delivery>, StorageError> {
        read_lines(&self.path("deliveries.jsonl"))
    }

    /// Logs a delivery outcome durably.
    pub fn append_delivery(&self, item: &Delivery) -> Result<(), StorageError> {
        append_lines(&self.path("deliveries.jsonl"), std::slice::from_ref(item))
    }

    /// The webhook signing key: `configured`, or one made once and kept in `webhook.secret`
    /// (mode 0600).
    pub fn secret(&self, configured: &str) -> Result<Vec<u8>, StorageError> {
        if !configured.is_empty() {
            return Ok(configured.as_bytes().to_vec());
        }
        let path = self.path("webhook.secret");
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().as_bytes().to_vec()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(format!("reading {}", path.display()))(e)),
        }
        let secret: String = {
            use rand::Rng;
            let bytes: [u8; 32] = rand::rng().random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&path)
            .map_err(StorageError::io(format!("creating {}", path.display())))?;
        f.write_all(secret.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(StorageError::io(format!("writing {}", path.display())))?;
        tracing::info!(path = %path.display(), "made a webhook signing key (set alerts.webhook_secret to choose one)");
        Ok(secret.into_bytes())
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StorageError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(StorageError::format(format!("reading {}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()))(e)),
    }
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), StorageError> {
    let tmp = path.with_extension("json.tmp");
    let bytes =
        serde_json::to_vec_pretty(value).map_err(StorageError::format(format!("encoding {}", path.display())))?;
    std::fs::write(&tmp, bytes).map_err(StorageError::io(format!("writing {}", tmp.display())))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(StorageError::io(format!("syncing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(StorageError::io(format!("renaming {}", tmp.display())))
}

/// Lines of JSON; a last line cut short by a crash is skipped (it was never acknowledged).
fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, StorageError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(format!("reading {}", path.display()))(e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                tracing::warn!(path = %path.display(), "skipped a torn last line");
            }
            Err(e) => return Err(StorageError::format(format!("{} line {}", path.display(), i + 1))(e)),
        }
    }
    Ok(out)
}

fn append_lines<T: Serialize>(path: &Path, items: &[T]) -> Result<(), StorageError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::new();
    for item in items {
        serde_json::to_writer(&mut buf, item).map_err(StorageError::format(format!("encoding {}", path.display())))?;
        buf.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(StorageError::io(format!("opening {}", path.display())))?;
    f.write_all(&buf)
        .and_then(|()| f.sync_data())
        .map_err(StorageError::io(format!("appending to {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_skipped_and_the_rest_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = AlertFiles::open(dir.path().to_path_buf()).expect("open");
        let d = Delivery {
            id: "x".into(),
            url: "http://h/".into(),
            result: "delivered".into(),
            attempts: 1,
            at_us: 5,
        };
        files.append_delivery(&d).expect("append");
        let path = dir.path().join("deliveries.jsonl");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"id\":\"y\",\"url").expect("torn write");
        assert_eq!(files.deliveries().expect("read"), vec![d]);
        let secret = files.secret("").expect("secret");
        assert_eq!(secret.len(), 64);
        assert_eq!(files.secret("").expect("again"), secret);
        assert_eq!(files.secret("mine").expect("configured"), b"mine".to_vec());
    }
}
