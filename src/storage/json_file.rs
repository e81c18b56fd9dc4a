//! Small JSON state files (registrations, progress, records, keys) written so a crash leaves
//! the old file or the new one, never a torn one: temp file, fsync, rename.

use std::io::Write;
use std::path::Path;

/// Who may read the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The process's default mode.
    Default,
    /// Owner only (`0600`): files holding secrets or their hashes.
    OwnerOnly,
}

/// Writes `value` as pretty JSON to `path` (parent directories created).
pub fn write(path: &Path, value: &impl serde::Serialize, access: Access) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let body = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if access == Access::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_keeps_secrets_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a").join("state.json");
        write(&path, &serde_json::json!({"n": 1}), Access::Default).expect("write");
        write(&path, &serde_json::json!({"n": 2}), Access::OwnerOnly).expect("write");
        let read: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(read["n"], 2);
        assert!(!path.with_extension("json.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
