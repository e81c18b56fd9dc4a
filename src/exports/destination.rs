//! Where an export's files go: a local directory or an S3-compatible bucket, both as an
//! `object_store` (multipart uploads on S3, temp file + rename on disk).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use super::ExportError;

/// An opened destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of every object of the export inside the store.
    pub prefix: Path,
}

impl Destination {
    /// `prefix/relative`.
    pub fn path(&self, relative: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }
}

/// Opens `url`: `file:///absolute/dir/` (created if missing) or `s3://bucket/prefix/`
/// (credentials, region and endpoint from the standard `AWS_*` environment; never logged).
pub fn open(url: &str) -> Result<Destination, ExportError> {
    if let Some(dir) = url.strip_prefix("file://") {
        if !dir.starts_with('/') {
            return Err(ExportError::Invalid(format!(
                "destination `{url}`: a file destination needs an absolute path (file:///dir/)"
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| ExportError::Destination(format!("creating {dir}: {e}")))?;
        // Empty directories left by removed temporary files are removed too.
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| ExportError::Destination(format!("opening {dir}: {e}")))?
            .with_automatic_cleanup(true);
        return Ok(Destination {
            store: Arc::new(store),
            prefix: Path::default(),
        });
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ExportError::Invalid(format!("destination `{url}` names no bucket")));
        }
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| ExportError::Destination(format!("S3 bucket `{bucket}`: {e}")))?;
        let mut path = Path::default();
        for part in prefix.split('/').filter(|s| !s.is_empty()) {
            path = path.join(part);
        }
        return Ok(Destination {
            store: Arc::new(store),
            prefix: path,
        });
    }
    Err(ExportError::Invalid(format!(
        "destination `{url}` must be file:///absolute/dir/ or s3://bucket/prefix/"
    )))
}
