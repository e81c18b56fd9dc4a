//! Export records kept in the data directory (`<data dir>/exports/jobs/<id>.json`), so
//! `GET /api/v1/exports/{id}` answers after a restart, and an export the process died in is
//! reported `failed` (and its temporary files removed) instead of silently vanishing.

use std::path::PathBuf;

use super::ExportStatus;

/// Where the records go (`None`: kept in memory only).
#[derive(Debug, Clone, Default)]
pub struct Records {
    dir: Option<PathBuf>,
}

impl Records {
    /// Records under `dir`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        // Ids are UUIDs the Hub made; anything else is never a file name.
        let safe = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        self.dir.as_ref().filter(|_| safe).map(|d| d.join(format!("{id}.json")))
    }

    /// Writes `status` (temp file + rename; a failure is logged, the export goes on).
    pub fn save(&self, status: &ExportStatus) {
        let Some(path) = self.path(&status.id) else { return };
        if let Err(e) = crate::storage::json_file::write(&path, status, crate::storage::json_file::Access::Default) {
            tracing::warn!(export = %status.id, path = %path.display(), error = %e, "could not save the export's record");
        }
    }

    /// Drops the record of `id`.
    pub fn remove(&self, id: &str) {
        if let Some(path) = self.path(id)
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(export = id, error = %e, "could not remove the export's record");
        }
    }

    /// Every readable record, oldest first (unreadable ones are logged and skipped).
    pub fn load(&self) -> Vec<ExportStatus> {
        let Some(dir) = &self.dir else { return Vec::new() };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "export records unreadable");
                return Vec::new();
            }
        };
        let mut out: Vec<ExportStatus> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(
                |p| match std::fs::read(&p).map(|b| serde_json::from_slice::<ExportStatus>(&b)) {
                    Ok(Ok(s)) => Some(s),
                    Ok(Err(e)) => {
                        tracing::warn!(path = %p.display(), error = %e, "export record unreadable; skipped");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "export record unreadable; skipped");
                        None
                    }
                },
            )
            .collect();
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        out
    }
}
