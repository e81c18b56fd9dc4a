//! Where an export's files go: a local directory or an S3-compatible bucket, both as an
//! `object_store` (multipart uploads on S3, temp file + rename on disk).

use std::sync::Arc;

use object_store::ClientConfigKey;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use super::ExportError;

/// The `[object_store]` section: how hard S3 requests try before an export fails (credentials,
/// region and endpoint come from the standard `AWS_*` environment).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreConfig {
    /// Retries of a failed request (connection refused, 5xx); 4xx answers are not retried.
    pub max_retries: usize,
    /// Seconds after the first attempt of a request beyond which it is not retried.
    pub retry_timeout_secs: u64,
    /// Seconds to establish a connection.
    pub connect_timeout_secs: u64,
    /// Seconds for one request.
    pub request_timeout_secs: u64,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        // object_store's own defaults retry for 3 minutes: an export to a stopped server would
        // look hung; 3 retries within 30 s still ride out a restart or a throttling burst.
        Self {
            max_retries: 3,
            retry_timeout_secs: 30,
            connect_timeout_secs: 5,
            request_timeout_secs: 60,
        }
    }
}

/// An opened destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of every object of the export inside the store.
    pub prefix: Path,
    /// The directory, for a local destination.
    pub local_dir: Option<std::path::PathBuf>,
}

impl Destination {
    /// `prefix/relative`.
    pub fn path(&self, relative: &str) -> Path {
        join(&self.prefix, relative)
    }
}

/// `base` followed by the `/`-separated parts of `relative` (empty parts skipped).
pub fn join(base: &Path, relative: &str) -> Path {
    relative
        .split('/')
        .filter(|s| !s.is_empty())
        .fold(base.clone(), |p, part| p.join(part))
}

/// Opens `url`: `file:///absolute/dir/` (created if missing) or `s3://bucket/prefix/`
/// (credentials, region and endpoint from the standard `AWS_*` environment; never logged).
pub fn open(url: &str, config: &ObjectStoreConfig) -> Result<Destination, ExportError> {
    if let Some(dir) = url.strip_prefix("file://") {
        if !dir.starts_with('/') {
            return Err(ExportError::Invalid(format!(
                "destination `{url}`: a file destination needs an absolute path (file:///dir/)"
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| ExportError::destination(format!("creating {dir}"), e))?;
        // Empty directories left by removed temporary files are removed too.
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| ExportError::destination(format!("opening {dir}"), e))?
            .with_automatic_cleanup(true);
        return Ok(Destination {
            store: Arc::new(store),
            prefix: Path::default(),
            local_dir: Some(std::path::PathBuf::from(dir)),
        });
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ExportError::Invalid(format!("destination `{url}` names no bucket")));
        }
        let retry = object_store::RetryConfig {
            max_retries: config.max_retries,
            retry_timeout: std::time::Duration::from_secs(config.retry_timeout_secs.max(1)),
            ..Default::default()
        };
        // Set key by key: `with_client_options` would drop what `from_env` read (AWS_ALLOW_HTTP).
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                format!("{}s", config.connect_timeout_secs.max(1)),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}s", config.request_timeout_secs.max(1)),
            )
            .build()
            .map_err(|e| ExportError::destination(format!("S3 bucket `{bucket}`"), e))?;
        return Ok(Destination {
            store: Arc::new(store),
            prefix: join(&Path::default(), prefix),
            local_dir: None,
        });
    }
    Err(ExportError::Invalid(format!(
        "destination `{url}` must be file:///absolute/dir/ or s3://bucket/prefix/"
    )))
}

/// Opens `url` to read what is there: a local directory through the root file system (the
/// store DataFusion already knows as `file://`, so paths are absolute), a bucket as in [`open`].
pub fn open_existing(url: &str, config: &ObjectStoreConfig) -> Result<Destination, ExportError> {
    if let Some(dir) = url.strip_prefix("file://") {
        if !std::path::Path::new(dir).is_dir() {
            return Err(ExportError::Invalid(format!("`{url}` is not a directory")));
        }
        let prefix = Path::from_absolute_path(dir).map_err(|e| ExportError::Invalid(format!("`{url}`: {e}")))?;
        return Ok(Destination {
            store: Arc::new(LocalFileSystem::new()),
            prefix,
            local_dir: Some(std::path::PathBuf::from(dir)),
        });
    }
    open(url, config)
}

/// The object store URL DataFusion scans `url` through (`file://` or `s3://bucket`).
pub fn store_url(url: &str) -> Result<datafusion::execution::object_store::ObjectStoreUrl, ExportError> {
    let base = match url.strip_prefix("s3://") {
        Some(rest) => format!("s3://{}", rest.split_once('/').map_or(rest, |(bucket, _)| bucket)),
        None => "file://".to_string(),
    };
    datafusion::execution::object_store::ObjectStoreUrl::parse(&base)
        .map_err(|e| ExportError::Invalid(format!("`{url}`: {e}")))
}
