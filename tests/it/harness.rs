//! Starts the real `analytics-hub` binary on a free loopback port with its own data directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use llm_analytics_hub::generate::{Generator, GeneratorConfig};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_analytics-hub");

/// A loopback port nothing listens on now, for a server started next. Taken below the
/// kernel's ephemeral range (32768–60999 by default): a port the kernel handed out for `:0` was
/// free again by the time the Hub bound it, and another process's outgoing connection or `:0`
/// listener (a Hub's worker port) could take it in between ("Address already in use").
/// Ports here are handed out by this counter only, each once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Test processes running at once start at different places.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT)
}

/// A running Hub. Killed (SIGKILL) on drop.
pub struct Hub {
    child: Option<Child>,
    pub base: String,
    pub client: reqwest::Client,
    log: PathBuf,
}

/// Options for starting a Hub.
#[derive(Default, Clone)]
pub struct HubOptions {
    /// TOML config file contents, if any.
    pub config_toml: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra `serve` flags.
    pub args: Vec<String>,
    /// Another build of the binary (default: this workspace's `analytics-hub`).
    pub bin: Option<PathBuf>,
    /// The HTTP port (default: a free one), for a test that must know it before the start.
    pub port: Option<u16>,
}

impl Hub {
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, HubOptions::default()).await
    }

    pub async fn start_with(data_dir: &Path, opts: HubOptions) -> Self {
        let hub = Self::start_unready(data_dir, opts).await;
        hub.wait_ready().await;
        hub
    }

    /// Starts a Hub on `<dir>/data` with extra environment variables and waits until it is
    /// ready.
    pub async fn start_env(dir: &Path, env: Vec<(String, String)>) -> Self {
        Self::start_with(
            &dir.join("data"),
            HubOptions {
                env,
                ..HubOptions::default()
            },
        )
        .await
    }

    /// Starts a Hub and waits until it answers `/health` (it may not be ready).
    pub async fn start_unready(data_dir: &Path, opts: HubOptions) -> Self {
        let port = opts.port.unwrap_or_else(free_port);
        let log = data_dir.with_extension(format!("{port}.log"));
        let mut cmd = Command::new(opts.bin.as_deref().unwrap_or(Path::new(BIN)));
        if let Some(toml) = &opts.config_toml {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, toml).expect("write config");
            cmd.arg("--config").arg(path);
        }
        cmd.arg("serve")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(&opts.args)
            .env_remove("PORT")
            .env_remove("HOST")
            .env_remove("DATA_DIR")
            // The Postgres-wire endpoint only where a test asks for it (opts.env).
            .env("PGWIRE_ENABLED", "false")
            .env_remove("PGWIRE_USER")
            .env_remove("PGWIRE_PASSWORD")
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn analytics-hub");
        let hub = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            log,
        };
        hub.wait_health().await;
        hub
    }

    async fn wait_health(&self) {
        self.wait_success("/health", "answer /health").await;
    }

    async fn wait_ready(&self) {
        self.wait_success("/ready", "become ready").await;
    }

    /// Waits up to 60 s for `path` to answer 2xx.
    async fn wait_success(&self, path: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(format!("{}{path}", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("hub did not {what}; log:\n{}", self.log_text());
    }

    /// The process id of the running Hub.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "hub did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// POSTs `body` as `content_type` to `path`; returns (status, JSON body).
    pub async fn post_body(&self, path: &str, content_type: &str, body: String) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    pub async fn post_ndjson(&self, body: String) -> (u16, Value) {
        self.post_body("/api/v1/events/batch", "application/x-ndjson", body)
            .await
    }

    /// Posts NDJSON events that must be accepted (200); returns the response body.
    pub async fn post_ok(&self, body: String) -> Value {
        let (status, body) = self.post_ndjson(body).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn post_json(&self, path: &str, body: String) -> (u16, Value) {
        self.post_body(path, "application/json", body).await
    }

    /// Sends a bodiless `method` request to `path`.
    async fn send(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.client
            .request(method.clone(), self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// POSTs to `path` without a body; returns the JSON body.
    pub async fn post_empty(&self, path: &str) -> Value {
        let r = self.send(reqwest::Method::POST, path).await;
        r.json().await.unwrap_or_else(|e| panic!("POST {path}: JSON body: {e}"))
    }

    /// GETs `path` (the response is the caller's to check).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path).await
    }

    /// GETs `path`; returns the JSON body (whatever the status).
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        r.json().await.unwrap_or_else(|e| panic!("GET {path}: JSON body: {e}"))
    }

    /// DELETEs `path`; returns the status.
    pub async fn delete(&self, path: &str) -> u16 {
        self.send(reqwest::Method::DELETE, path).await.status().as_u16()
    }

    /// Runs SQL and returns (status, body).
    pub async fn sql(&self, sql: &str) -> (u16, Value) {
        self.post_json("/api/v1/sql", serde_json::json!({ "sql": sql }).to_string())
            .await
    }

    /// Runs SQL asking for the `accept` format; the response is the caller's to check.
    pub async fn sql_as(&self, accept: &str, sql: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/sql"))
            .header("accept", accept)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{sql} as {accept}: {e}"))
    }

    /// Runs SQL that must succeed; returns the rows.
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        let (status, body) = self.sql(sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
        body["rows"].as_array().expect("rows").clone()
    }

    /// Runs `sql` up to `tries` times, 100 ms apart, until `done(&rows)`; returns the last rows.
    pub async fn poll_rows(&self, sql: &str, tries: usize, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut rows = Vec::new();
        for _ in 0..tries {
            rows = self.rows(sql).await;
            if done(&rows) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rows
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.get("/metrics").await.text().await.expect("metrics text")
    }

    pub async fn count(&self, sql_where: &str) -> i64 {
        let rows = self
            .rows(&format!("SELECT count(*) AS n FROM events {sql_where}"))
            .await;
        rows[0]["n"].as_i64().expect("count")
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failing test unwinds through here: show what the Hub logged (its log file lives in
        // the test's temporary directory, which is deleted next).
        if std::thread::panicking() {
            let log = self.log_text();
            // The test's polling fills the log with access lines: show what the Hub did.
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !l.contains(": access: request") && !l.contains(": audit: sql"))
                .take(80)
                .collect();
            eprintln!(
                "--- last {} log lines (without access and audit lines) of the hub at {} ---",
                tail.len(),
                self.base
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// `n` generated events as NDJSON lines.
pub fn generated(seed: u64, n: usize, invalid_ratio: f64) -> Vec<String> {
    let mut g = Generator::new(GeneratorConfig {
        seed,
        invalid_ratio,
        disorder_ms: 3000,
        ..GeneratorConfig::default()
    });
    (0..n).map(|_| g.next_event(None)).collect()
}

/// Polls the yes/no `check` every 50 ms until it holds, or panics naming `what` after
/// `timeout` (the [`wait_for`] of conditions that yield nothing).
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    wait_for(what, timeout, async || check().await.then_some(())).await;
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
