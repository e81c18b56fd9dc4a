//! Parquet snapshots against the real binary: to a local directory and to a real S3 API (moto's
//! server on a free port), read back with an independent reader (pyarrow) and checked against
//! the Hub's own SQL and the manifest's checksums.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Hub, free_port, wait_for};
use crate::pgwire::events_ndjson;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs a Python snippet, returns its stdout (panics with stderr on failure).
fn py(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `moto_server` (PyPI moto[server]) on a free loopback port.
pub(crate) struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    pub(crate) async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With `env` (e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`: every request's credentials checked).
    async fn start_with(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]')");
        let client = reqwest::Client::new();
        wait_for("moto_server to answer", Duration::from_secs(30), async || {
            client
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Self { child, port }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn create_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "hub-test"),
            ("AWS_SECRET_ACCESS_KEY", "hub-test-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("AWS_ENDPOINT_URL".to_string(), self.endpoint())])
        .collect()
    }
}

/// A tmpfs mounted for one test (root only: the suite runs as root in CI), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs at {} needs root", path.display());
        Self(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

impl S3Server {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn hub_with_events(dir: &Path, env: Vec<(String, String)>) -> Hub {
    std::fs::create_dir_all(dir).expect("data dir");
    let hub = Hub::start_env(dir, env).await;
    assert_eq!(hub.post_ndjson(events_ndjson()).await.0, 200);
    hub
}

/// Starts an export and waits for it to end; returns its final status.
async fn export(hub: &Hub, request: Value) -> Value {
    let (status, body) = hub.post_json("/api/v1/exports", request.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    wait_for("the export to end", Duration::from_secs(60), async || {
        let s = hub.get_json(&format!("/api/v1/exports/{id}")).await;
        (s["status"] != "running").then_some(s)
    })
    .await
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir` (relative paths), sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).expect("prefix").to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

const READ_LOCAL: &str = r#"
import sys, pyarrow.dataset as ds, pyarrow.compute as pc
t = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
print(t.num_rows, "%.3f" % pc.sum(t["latency_ms"]).as_py(), ",".join(sorted(set(str(m) for m in t["model"].to_pylist()))))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn file_snapshot_is_partitioned_checksummed_and_replaced_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub_with_events(dir.path(), Vec::new()).await;
    let out = dir.path().join("snapshots").join("events");
    let destination = format!("file://{}/", out.display());

    let done = export(
        &hub,
        json!({
            "table": "events", "start": "2026-11-20T00:00:00Z", "end": "2026-11-20T00:30:00Z",
            "destination": destination, "partition_by": ["date", "model"]
        }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let manifest = &done["manifest"];
    assert_eq!(manifest["total_rows"], 60, "{manifest}");
    let (_, expected) = hub
        .sql("SELECT count(*) AS n, sum(latency_ms) AS s FROM events WHERE timestamp >= '2026-11-20T00:00:00Z' AND timestamp < '2026-11-20T00:30:00Z'")
        .await;
    let (n, sum) = (&expected["rows"][0]["n"], &expected["rows"][0]["s"]);

    // The files: one per (date, model), checksums as listed, nothing temporary left.
    let mut listed: Vec<String> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let path = f["path"].as_str().expect("path").to_string();
            let bytes = std::fs::read(out.join(&path)).expect("file");
            assert_eq!(f["sha256"].as_str(), Some(sha256_hex(&bytes).as_str()), "{path}");
            assert_eq!(f["bytes"].as_u64(), Some(bytes.len() as u64));
            assert!(f["min_time_us"].as_i64() <= f["max_time_us"].as_i64());
            path
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            "date=2026-11-20/model=claude-3-5-sonnet/part-00000.parquet",
            "date=2026-11-20/model=gpt-4o/part-00000.parquet"
        ]
    );
    let mut on_disk = listed.clone();
    on_disk.push("_manifest.json".into());
    on_disk.sort();
    assert_eq!(files_under(&out), on_disk, "only the snapshot's files and its manifest");
    let manifest_file: Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest_file["files"], manifest["files"]);

    // An independent reader sees the Hub's rows.
    let read = py(READ_LOCAL, &[out.to_str().expect("utf8")]);
    assert_eq!(
        read,
        format!("{n} {:.3} claude-3-5-sonnet,gpt-4o", sum.as_f64().expect("sum"))
    );

    // The same destination again, a smaller range and no model partition: the old files go.
    let done = export(
        &hub,
        json!({
            "table": "events", "start": "2026-11-20T00:00:00Z", "end": "2026-11-20T00:10:00Z",
            "destination": destination, "partition_by": ["date"], "compression": "snappy"
        }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["manifest"]["total_rows"], 20);
    assert_eq!(
        files_under(&out),
        vec!["_manifest.json", "date=2026-11-20/part-00000.parquet"],
        "the previous snapshot's files are gone, never mixed with the new one"
    );
    let list = hub.get_json("/api/v1/exports").await;
    assert_eq!(list["exports"].as_array().map(Vec::len), Some(2));

    // The CLI: the same through the running Hub, to the end, with the outcome on stdout.
    let cli_out = dir.path().join("cli-snapshot");
    let run = |to: String| {
        let base = hub.base.clone();
        async move {
            tokio::process::Command::new(crate::harness::BIN)
                .args([
                    "export",
                    "--target",
                    &base,
                    "--table",
                    "events",
                    "--partition-by",
                    "date",
                    "--to",
                    &to,
                ])
                .output()
                .await
                .expect("analytics-hub export")
        }
    };
    let ok = run(format!("file://{}/", cli_out.display())).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout} {}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("succeeded: 120 rows in 1 files"), "{stdout}");
    assert_eq!(
        files_under(&cli_out),
        vec!["_manifest.json", "date=2026-11-20/part-00000.parquet"]
    );
    let refused = run("ftp://nowhere/".into()).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ftp://nowhere/"));
}

const READ_S3: &str = r#"
import sys, hashlib, json, pyarrow.fs as fs, pyarrow.dataset as ds
s3 = fs.S3FileSystem(endpoint_override=sys.argv[1], scheme="http", access_key="hub-test",
                     secret_key="hub-test-secret", region="us-east-1")
manifest = json.loads(s3.open_input_stream("snapshots/events/_manifest.json").read())
for f in manifest["files"]:
    data = s3.open_input_stream("snapshots/events/" + f["path"]).read()
    assert hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
t = ds.dataset("snapshots/events/", filesystem=s3, format="parquet", partitioning="hive",
               exclude_invalid_files=True).to_table()
print(t.num_rows, manifest["total_rows"], len(manifest["files"]))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn s3_snapshot_to_a_real_s3_api_and_failures_name_their_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = S3Server::start().await;
    s3.create_bucket("snapshots").await;
    let hub = hub_with_events(dir.path(), s3.env()).await;

    let done = export(
        &hub,
        json!({ "table": "events", "destination": "s3://snapshots/events/", "partition_by": ["date"] }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(py(READ_S3, &[&s3.endpoint()]), "120 120 1");
    // Read back from the bucket through SQL.
    let (status, info) = hub
        .post_json(
            "/api/v1/snapshots",
            json!({ "name": "events_s3", "location": "s3://snapshots/events/" }).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{info}");
    let rows = hub
        .rows("SELECT count(*) AS n, max(date) AS d FROM snapshots.events_s3")
        .await;
    assert_eq!(rows[0]["n"], 120, "{rows:?}");
    assert_eq!(rows[0]["d"], "2026-11-20", "{rows:?}");

    // A bucket that does not exist: failed, naming it; nothing written anywhere.
    let failed = export(
        &hub,
        json!({ "table": "events", "destination": "s3://no-such-bucket/x/" }),
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["error"].as_str().expect("error");
    assert!(
        reason.contains("no-such-bucket") || reason.contains("NoSuchBucket"),
        "{reason}"
    );

    // Requests that cannot work are refused up front, naming the problem.
    for (request, needle) in [
        (json!({"table": "nope", "destination": "file:///tmp/x/"}), "nope"),
        (
            json!({"table": "events", "start": "soon", "destination": "file:///tmp/x/"}),
            "start",
        ),
        (json!({"table": "events", "destination": "ftp://x/"}), "destination"),
        (
            json!({"sql": "DROP TABLE events", "destination": "file:///tmp/x/"}),
            "not allowed",
        ),
        (
            json!({"table": "events", "destination": "file:///proc/hub-export/"}),
            "/proc/hub-export",
        ),
    ] {
        let (status, body) = hub.post_json("/api/v1/exports", request.to_string()).await;
        assert_eq!(status, 400, "{request}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{request}: {message}");
    }
    let (status, _) = hub.post_json("/api/v1/exports", "{}".into()).await;
    assert_eq!(status, 422, "a body without a destination");
    assert_eq!(hub.get("/api/v1/exports/not-an-export").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_export_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub_with_events(dir.path(), Vec::new()).await;
    let out = dir.path().join("cancelled");
    // 120 events × 100M generated rows: runs until cancelled.
    let request = json!({
        "sql": "SELECT e.event_id, g.value FROM events e CROSS JOIN generate_series(1, 100000000) AS g",
        "destination": format!("file://{}/", out.display()),
    });
    let (status, body) = hub.post_json("/api/v1/exports", request.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    // Cancel once its temporary file is on disk.
    wait_for("the export's temporary file", Duration::from_secs(60), async || {
        let s = hub.get_json(&format!("/api/v1/exports/{id}")).await;
        assert_eq!(s["status"], "running", "{s}");
        (out.exists() && !files_under(&out).is_empty()).then_some(())
    })
    .await;
    let r = hub
        .client
        .delete(hub.url(&format!("/api/v1/exports/{id}")))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 200);
    let cancelled: Value = r.json().await.expect("json");
    assert_eq!(cancelled["status"], "cancelled");
    wait_for(
        "the temporary files to be removed",
        Duration::from_secs(30),
        async || (!out.exists() || files_under(&out).is_empty()).then_some(()),
    )
    .await;
    assert_eq!(
        hub.get_json(&format!("/api/v1/exports/{id}")).await["status"],
        "cancelled"
    );
}

/// `[[exports.schedules]]`: every closed day since `since` is exported to its own folder,
/// missed days caught up at start, progress kept in the data directory.
#[tokio::test(flavor = "multi_thread")]
async fn scheduled_daily_snapshots_catch_up_every_closed_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("daily");
    let toml = format!(
        "[exports]\nschedule_interval_secs = 1\n[[exports.schedules]]\nname = \"events_daily\"\ntable = \"events\"\nperiod = \"daily\"\ndestination = \"file://{}\"\nlag_secs = 0\nsince = \"2026-11-20T00:00:00Z\"\nmax_catch_up = 3\n",
        out.display()
    );
    // The events first (a Hub without the schedule), then the Hub with it: its first pass sees
    // every event of 2026-11-20.
    let mut loader = Hub::start(&dir.path().join("data")).await;
    assert_eq!(loader.post_ndjson(events_ndjson()).await.0, 200);
    assert!(loader.terminate().success());
    let hub = Hub::start_with(
        &dir.path().join("data"),
        crate::harness::HubOptions {
            config_toml: Some(toml),
            ..Default::default()
        },
    )
    .await;
    let first_day = out.join("2026-11-20").join("_manifest.json");
    let state = dir.path().join("data").join("exports").join("schedules.json");
    // Days after the first are caught up three per pass.
    let last_due = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let last_dir = out.join(last_due.format("%Y-%m-%d").to_string()).join("_manifest.json");
    let expected_until = (last_due + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_micros();
    wait_for(
        "every closed day to be exported",
        Duration::from_secs(120),
        async || {
            let progress: Value = serde_json::from_slice(&std::fs::read(&state).ok()?).ok()?;
            (progress["events_daily"].as_i64() == Some(expected_until)).then_some(())
        },
    )
    .await;
    assert!(last_dir.exists(), "the last closed day has its manifest");
    let day: Value = serde_json::from_slice(&std::fs::read(&first_day).expect("manifest")).expect("json");
    let second: Value =
        serde_json::from_slice(&std::fs::read(out.join("2026-11-21").join("_manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(second["total_rows"], 0, "a day without events has an empty manifest");
    assert_eq!(second["files"], json!([]));
    assert_eq!(
        day["total_rows"], 120,
        "every event of 2026-11-20 in its day's snapshot"
    );
    assert_eq!(day["request"]["start"], "2026-11-20T00:00:00Z");
    // The schedule's periods read back as one table under its name.
    let rows = hub
        .rows("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM snapshots.events_daily")
        .await;
    assert_eq!(rows[0]["n"], 120, "{rows:?}");
    assert_eq!(rows[0]["ids"], 120, "{rows:?}");
}

/// `snapshots.<name>`: a snapshot location read back through SQL — exactly the files its
/// manifest lists, partition values as columns — kept across a restart.
#[tokio::test(flavor = "multi_thread")]
async fn snapshots_read_back_as_tables_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hub = hub_with_events(dir.path(), Vec::new()).await;
    let out = dir.path().join("archive");
    let location = format!("file://{}/", out.display());
    let done = export(
        &hub,
        json!({ "table": "events", "destination": location, "partition_by": ["date", "model"] }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");

    let (status, info) = hub
        .post_json(
            "/api/v1/snapshots",
            json!({ "name": "archive", "location": location }).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["table"], "snapshots.archive");
    assert_eq!(info["rows"], 120);
    assert_eq!(info["files"], 2);
    assert_eq!(info["partition_by"], json!(["date", "model"]));

    let per_model = "SELECT model, count(*) AS n, sum(latency_ms) AS s, min(timestamp) AS first FROM {} GROUP BY model ORDER BY model";
    let live = hub.rows(&per_model.replace("{}", "events")).await;
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(hub.rows(&per_model.replace("{}", "snapshots.archive")).await, live);
    // Partition columns filter like any column.
    let gpt = hub
        .rows("SELECT count(*) AS n FROM snapshots.archive WHERE model = 'gpt-4o' AND date = '2026-11-20'")
        .await;
    assert_eq!(gpt[0]["n"], live[1]["n"], "{gpt:?} {live:?}");

    // A stray Parquet file in the location is not the snapshot: only listed files are read.
    let listed = out.join(done["manifest"]["files"][0]["path"].as_str().expect("path"));
    std::fs::copy(&listed, listed.with_file_name("stray.parquet")).expect("copy");
    let total = "SELECT count(*) AS n FROM snapshots.archive";
    assert_eq!(hub.rows(total).await[0]["n"], 120);

    // Refusals name the problem.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    for (body, status, needle) in [
        (json!({"name": "Bad-Name", "location": location}), 400, "Bad-Name"),
        (
            json!({"name": "nothing", "location": format!("file://{}/", empty.display())}),
            400,
            "_manifest.json",
        ),
        (json!({"name": "nowhere", "location": "ftp://x/"}), 400, "ftp://x/"),
    ] {
        let (got, answer) = hub.post_json("/api/v1/snapshots", body.to_string()).await;
        assert_eq!(got, status, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{body}: {message}");
    }

    // Registrations outlive the process.
    assert!(hub.terminate().success());
    let hub = Hub::start(&dir.path().join("data")).await;
    assert_eq!(hub.rows(total).await[0]["n"], 120);
    let list = hub.get_json("/api/v1/snapshots").await;
    assert_eq!(list["snapshots"][0]["name"], "archive", "{list}");
    assert_eq!(hub.delete("/api/v1/snapshots/archive").await, 204);
    assert_eq!(hub.delete("/api/v1/snapshots/archive").await, 404);
    let (status, answer) = hub.sql(total).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("snapshots.archive"), "{answer}");
    assert!(listed.exists(), "deregistering leaves the files");
}

/// Rows of random text (incompressible): ~3.7 MB of Parquet per 100,000 rows.
fn random_rows(n: u64) -> String {
    format!("SELECT uuid() AS u, g.value AS v FROM generate_series(1, {n}) AS g")
}

/// A full disk and a read-only directory end `failed` with the operating system's reason; the
/// previous snapshot stays whole and nothing temporary is left.
#[tokio::test(flavor = "multi_thread")]
async fn disk_full_and_read_only_destinations_fail_naming_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub_with_events(&dir.path().join("data"), Vec::new()).await;

    let full = dir.path().join("full");
    let _full = Tmpfs::mount(&full, "size=1m");
    let destination = format!("file://{}/", full.display());
    let first = export(&hub, json!({ "table": "events", "destination": destination })).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let before = files_under(&full);
    let manifest_before = std::fs::read(full.join("_manifest.json")).expect("manifest");

    let failed = export(&hub, json!({ "sql": random_rows(200_000), "destination": destination })).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["error"].as_str().expect("error");
    assert!(reason.contains("No space left on device"), "{reason}");
    assert_eq!(
        files_under(&full),
        before,
        "the previous snapshot, whole, and nothing else"
    );
    assert_eq!(
        std::fs::read(full.join("_manifest.json")).expect("manifest"),
        manifest_before
    );

    let read_only = dir.path().join("read-only");
    let _ro = Tmpfs::mount(&read_only, "ro,size=64k");
    let failed = export(
        &hub,
        json!({ "table": "events", "destination": format!("file://{}/", read_only.display()) }),
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["error"].as_str().expect("error");
    assert!(reason.contains("Read-only file system"), "{reason}");
    assert!(files_under(&read_only).is_empty());
}

/// Wrong credentials, and the S3 server stopped while an export uploads: `failed`, naming the
/// cause, within the configured retry budget.
#[tokio::test(flavor = "multi_thread")]
async fn s3_wrong_credentials_and_a_server_stopped_mid_upload_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let strict = S3Server::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await;
    let hub = hub_with_events(&dir.path().join("a"), strict.env()).await;
    let failed = export(&hub, json!({ "table": "events", "destination": "s3://snapshots/x/" })).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["error"].as_str().expect("error");
    assert!(reason.contains("InvalidAccessKeyId"), "{reason}");
    drop(hub);
    drop(strict);

    let mut s3 = S3Server::start().await;
    s3.create_bucket("snapshots").await;
    let mut env = s3.env();
    env.push(("OBJECT_STORE_RETRY_TIMEOUT_SECS".into(), "5".into()));
    let hub = hub_with_events(&dir.path().join("b"), env).await;
    let request = json!({ "sql": random_rows(20_000_000), "destination": "s3://snapshots/big/" });
    let (status, body) = hub.post_json("/api/v1/exports", request.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    wait_for("the export to upload", Duration::from_secs(60), async || {
        let s = hub.get_json(&format!("/api/v1/exports/{id}")).await;
        assert_eq!(s["status"], "running", "{s}");
        (s["bytes"].as_u64() > Some(0)).then_some(())
    })
    .await;
    s3.stop();
    let failed = wait_for("the export to fail", Duration::from_secs(90), async || {
        let s = hub.get_json(&format!("/api/v1/exports/{id}")).await;
        (s["status"] != "running").then_some(s)
    })
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["error"].as_str().expect("error");
    assert!(reason.starts_with("destination:"), "{reason}");
    assert!(reason.contains("127.0.0.1"), "names the endpoint: {reason}");
}

/// Export records outlive the process: a finished export is still listed after a restart, and
/// one the process was killed in is reported failed, its temporary files removed.
#[tokio::test(flavor = "multi_thread")]
async fn export_records_survive_a_restart_and_a_crash_mid_export_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hub = hub_with_events(dir.path(), Vec::new()).await;
    let done_dir = dir.path().join("done");
    let done = export(
        &hub,
        json!({ "table": "events", "destination": format!("file://{}/", done_dir.display()) }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let crashed_dir = dir.path().join("crashed");
    let request = json!({
        "sql": random_rows(100_000_000),
        "destination": format!("file://{}/", crashed_dir.display()),
    });
    let (status, body) = hub.post_json("/api/v1/exports", request.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    wait_for(
        "the export's first temporary file",
        Duration::from_secs(60),
        async || (crashed_dir.exists() && !files_under(&crashed_dir).is_empty()).then_some(()),
    )
    .await;
    hub.kill9();

    let hub = Hub::start(&dir.path().join("data")).await;
    let again = hub
        .get_json(&format!("/api/v1/exports/{}", done["id"].as_str().expect("id")))
        .await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["manifest"], done["manifest"]);
    let crashed = hub.get_json(&format!("/api/v1/exports/{id}")).await;
    assert_eq!(crashed["status"], "failed", "{crashed}");
    assert!(
        crashed["error"].as_str().is_some_and(|e| e.contains("interrupted")),
        "{crashed}"
    );
    assert!(files_under(&crashed_dir).is_empty(), "{:?}", files_under(&crashed_dir));
    let list = hub.get_json("/api/v1/exports").await;
    assert_eq!(list["exports"][0]["id"], id.as_str(), "newest first: {list}");
    assert_eq!(list["exports"].as_array().map(Vec::len), Some(2));
}
