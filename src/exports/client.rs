//! `analytics-hub export`: starts an export on a running Hub and follows it to the end, with a
//! progress spinner on a terminal (plain lines otherwise).

use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::ExportRequest;

/// Arguments of `analytics-hub export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Base URL of the running Hub.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub target: String,
    /// Table to export (`events`, `late_events` or a continuous query).
    #[arg(long, conflicts_with = "sql")]
    pub table: Option<String>,
    /// Inclusive start of the time range (RFC 3339).
    #[arg(long, requires = "table")]
    pub start: Option<String>,
    /// Exclusive end of the time range (RFC 3339).
    #[arg(long, requires = "table")]
    pub end: Option<String>,
    /// A read-only query instead of `--table`.
    #[arg(long)]
    pub sql: Option<String>,
    /// Destination: `file:///absolute/dir/` or `s3://bucket/prefix/`.
    #[arg(long = "to")]
    pub destination: String,
    /// Hive partition columns, comma separated (`date` = day of the time column).
    #[arg(long, value_delimiter = ',')]
    pub partition_by: Vec<String>,
    /// `zstd` (default), `snappy` or `none`.
    #[arg(long)]
    pub compression: Option<String>,
    /// Rows per row group.
    #[arg(long)]
    pub row_group_rows: Option<usize>,
    /// Print the export's id and return without waiting.
    #[arg(long)]
    pub no_wait: bool,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The Hub could not be reached.
    #[error("{url}: {source}")]
    Http {
        /// Where.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The Hub refused the request or the export failed.
    #[error("{0}")]
    Refused(String),
}

fn http(url: &str) -> impl FnOnce(reqwest::Error) -> ClientError + '_ {
    move |source| ClientError::Http {
        url: url.to_string(),
        source,
    }
}

/// Runs the command.
pub async fn run(args: ExportArgs) -> Result<(), ClientError> {
    let request = ExportRequest {
        table: args.table,
        start: args.start,
        end: args.end,
        sql: args.sql,
        destination: args.destination,
        partition_by: args.partition_by,
        compression: args.compression,
        row_group_rows: args.row_group_rows,
    };
    let base = args.target.trim_end_matches('/');
    let url = format!("{base}/api/v1/exports");
    let client = reqwest::Client::new();
    let response = client.post(&url).json(&request).send().await.map_err(http(&url))?;
    let ok = response.status().is_success();
    let body: Value = response.json().await.map_err(http(&url))?;
    if !ok {
        return Err(ClientError::Refused(
            body["error"]["message"].as_str().unwrap_or("refused").to_string(),
        ));
    }
    let id = body["id"].as_str().unwrap_or_default().to_string();
    if args.no_wait {
        println!("{id}");
        return Ok(());
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let status_url = format!("{url}/{id}");
    let status = loop {
        let status: Value = client
            .get(&status_url)
            .send()
            .await
            .map_err(http(&status_url))?
            .json()
            .await
            .map_err(http(&status_url))?;
        bar.set_message(format!(
            "export {id}: {} rows, {} bytes, {} files",
            status["rows"], status["bytes"], status["files"]
        ));
        bar.tick();
        if status["status"] != "running" {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    match status["status"].as_str() {
        Some("succeeded") => {
            let m = &status["manifest"];
            println!(
                "export {id} succeeded: {} rows in {} files ({} bytes) at {}",
                m["total_rows"],
                m["files"].as_array().map_or(0, Vec::len),
                m["total_bytes"],
                status["destination"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        other => Err(ClientError::Refused(format!(
            "export {id} {}: {}",
            other.unwrap_or("ended"),
            status["error"].as_str().unwrap_or("no reason given")
        ))),
    }
}
