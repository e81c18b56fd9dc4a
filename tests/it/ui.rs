//! The live view (`/ui`) in a real browser: Debian's `chromium`, headless, driven over the W3C
//! WebDriver HTTP protocol through `chromedriver`. The page loads its own assets only, lists the
//! shipped continuous queries and the stored events, and events posted after it loaded arrive
//! over the live stream, are plotted, and keep arriving (without gaps or duplicates) after the
//! stream drops and resumes. With keys required, the page asks for one and keeps it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cq::event;
use crate::harness::{Hub, free_port, wait_for, wait_until};

// Generous: chromium and the Hub share two cores with the rest of the suite in CI.
const WAIT: Duration = Duration::from_secs(60);

/// A headless chromium session behind a chromedriver of its own. The session is deleted and
/// chromedriver killed on drop, also when the test fails.
struct Browser {
    driver: Child,
    base: String,
    port: u16,
    session: Option<String>,
    client: reqwest::Client,
}

/// Chromium or chromedriver is not installed: a failure in CI, a skip elsewhere.
fn unavailable(what: &str) -> Option<Browser> {
    assert!(
        std::env::var("CI").is_err(),
        "the browser test must run in CI: {what} (scripts/test.sh installs chromium and chromium-driver)"
    );
    eprintln!("skipped the browser test: {what} (apt-get install chromium chromium-driver)");
    None
}

impl Browser {
    /// Starts chromedriver (`$CHROMEDRIVER`, default `chromedriver`) and a headless session of
    /// `$CHROMIUM` (default `/usr/bin/chromium`); `None` when they are missing outside CI.
    async fn start(dir: &Path) -> Option<Self> {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        if !Path::new(&chromium).exists() {
            return unavailable(&format!("{chromium} not found"));
        }
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("chromedriver log");
        let driver = match Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return unavailable(&format!("{chromedriver}: {e}")),
        };
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            port,
            session: None,
            client: reqwest::Client::new(),
        };
        wait_until("chromedriver to accept sessions", WAIT, async || {
            match browser.client.get(format!("{}/status", browser.base)).send().await {
                Ok(r) => r.json::<Value>().await.is_ok_and(|s| s["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        let profile = dir.join("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser
            .command(reqwest::Method::POST, "/session", Some(capabilities))
            .await;
        let session = created["sessionId"].as_str().expect("sessionId").to_string();
        browser.session = Some(session);
        Some(browser)
    }

    /// One WebDriver command; returns its `value`, panics on an error answer.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = match &self.session {
            Some(session) => format!("{}/session/{session}{path}", self.base),
            None => format!("{}{path}", self.base),
        };
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.expect("WebDriver answers JSON");
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {answer}");
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn title(&self) -> String {
        let title = self.command(reqwest::Method::GET, "/title", None).await;
        title.as_str().expect("title").to_string()
    }

    /// Runs `script` (a function body) in the page; returns what it returns.
    async fn script(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// The text of the element with this id.
    async fn text(&self, id: &str) -> String {
        let text = self
            .script(&format!("return document.getElementById('{id}').textContent"))
            .await;
        text.as_str().unwrap_or_else(|| panic!("#{id}: {text}")).to_string()
    }

    /// Types `text` into the element matching `css` (as a user would, key by key).
    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Clicks the element matching `css`.
    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The WebDriver reference of the element matching `css` (W3C: under a fixed key).
    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {found}"))
            .to_string()
    }

    /// `#live-count`: rows received over the stream.
    async fn live_count(&self) -> u64 {
        self.text("live-count").await.parse().expect("live-count is a number")
    }

    /// The `event_id` of every row of the events table, top to bottom.
    async fn event_ids(&self) -> Vec<String> {
        let ids = self
            .script("return Array.from(document.querySelectorAll('#events-body tr')).map(r => r.dataset.eventId)")
            .await;
        serde_json::from_value(ids).expect("event ids")
    }

    /// The `data-state` of the connection indicator.
    async fn stream_state(&self) -> String {
        let state = self
            .script("return document.getElementById('conn').dataset.state")
            .await;
        state.as_str().expect("data-state").to_string()
    }

    /// Waits until the connection indicator shows `state`; on timeout, panics with what the
    /// page showed (indicator, error banner, connection attempts, console errors) so a failure
    /// says why the stream did not get there.
    async fn wait_for_stream(&self, state: &str, what: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if self.stream_state().await == state {
                return;
            }
            if std::time::Instant::now() >= deadline {
                let page = self
                    .script(
                        "const c = document.getElementById('conn'); \
                         return {state: c.dataset.state, text: c.textContent, \
                                 connects: c.dataset.connects, \
                                 error: document.getElementById('error').textContent, \
                                 key_chars: document.getElementById('api-key').value.length};",
                    )
                    .await;
                let console = self.console_errors().await;
                panic!("timed out after {WAIT:?} waiting for {what}: page {page}, console errors {console:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Browser log entries of level SEVERE (console errors, failed loads, CSP violations)
    /// since the last call.
    async fn console_errors(&self) -> Vec<Value> {
        let log = self
            .command(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"})))
            .await;
        log.as_array()
            .expect("log entries")
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .cloned()
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Deleting the session makes chromedriver close chromium. Plain HTTP over a blocking
        // socket: drop cannot await.
        if let Some(session) = self.session.take()
            && let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            use std::io::{Read, Write};
            let _ = socket.set_read_timeout(Some(Duration::from_secs(20)));
            let request = format!(
                "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.port
            );
            if socket.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = socket.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn uuid(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

/// Events `ids` of model `model`, `secs_ago` seconds before now.
fn events(ids: std::ops::RangeInclusive<u128>, secs_ago: i64, model: &str) -> String {
    let ts =
        (chrono::Utc::now() - chrono::Duration::seconds(secs_ago)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    ids.map(|i| event(i, &ts, model)).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_lists_events_and_queries_and_charts_the_stream_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;

    // The page and its assets come from the binary, under a policy allowing only this origin.
    let page = hub.get("/ui").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("CSP")
        .to_string();
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    let html = page.text().await.expect("html");
    assert!(html.contains(r#"<script src="/ui/app.js""#), "{html}");
    for (asset, content_type) in [("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")] {
        let r = hub.get(asset).await;
        assert_eq!(r.status(), 200, "{asset}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with(content_type)
        );
    }
    assert_eq!(hub.get("/").await.url().path(), "/ui", "/ redirects to the live view");

    // Five events before the page loads (event 5 the newest).
    let before: Vec<String> = (1..=5).map(|i| events(i..=i, 60 - i as i64, "m-before")).collect();
    hub.post_ok(before.join("\n")).await;

    let Some(browser) = Browser::start(dir.path()).await else {
        return;
    };
    browser.goto(&hub.url("/ui")).await;
    assert_eq!(browser.title().await, "LLM Analytics Hub — live view");

    // Every registered continuous query (the shipped rollups) with its status.
    let api: Vec<String> = crate::cq::list(&hub)
        .await
        .iter()
        .map(|q| q["name"].as_str().expect("name").to_string())
        .collect();
    assert!(api.iter().any(|n| n == "llm_provider_model_1m"), "{api:?}");
    let listed: Vec<(String, String)> = wait_for("the continuous-query table", WAIT, async || {
        let rows = browser
            .script("return Array.from(document.querySelectorAll('#cq-body tr')).map(r => [r.dataset.name, r.cells[2].textContent])")
            .await;
        let rows: Vec<(String, String)> = serde_json::from_value(rows).expect("rows");
        (rows.len() == api.len()).then_some(rows)
    })
    .await;
    assert!(
        listed.iter().any(|(name, _)| name == "llm_provider_model_1m"),
        "{listed:?}"
    );
    assert!(listed.iter().all(|(_, status)| status == "running"), "{listed:?}");

    // The events stored before, newest first.
    let before: Vec<String> = (1..=5).rev().map(uuid).collect();
    wait_until("the events table to list the 5 events", WAIT, async || {
        browser.event_ids().await == before
    })
    .await;

    // The stream is open before anything is posted: from now on every stored event arrives.
    browser.wait_for_stream("live", "the stream to be live").await;
    assert_eq!(browser.live_count().await, 0);
    assert_eq!(browser.text("chart-points").await, "0");

    hub.post_ok(events(6..=12, 0, "m-live")).await;
    wait_until("7 rows over the stream", WAIT, async || browser.live_count().await == 7).await;
    wait_until("the chart to plot them", WAIT, async || {
        browser.text("chart-points").await.parse::<u32>().is_ok_and(|n| n >= 1)
    })
    .await;
    // The table follows the stream.
    wait_until("the events table to show the live events", WAIT, async || {
        let ids = browser.event_ids().await;
        ids.len() == 12 && (6..=12).all(|i| ids[..7].contains(&uuid(i)))
    })
    .await;

    // The stream drops (as on a network error): the page reconnects with the last row's token
    // as `after=` and gets every row stored meanwhile, once.
    browser.script("window.hubLiveView.dropStream(); return null").await;
    hub.post_ok(events(13..=17, 0, "m-live")).await;
    wait_until("the stream to resume", WAIT, async || {
        let conn = browser
            .script("const c = document.getElementById('conn'); return [c.dataset.state, c.dataset.connects]")
            .await;
        conn[0] == "live" && conn[1] == "2"
    })
    .await;
    let after = browser
        .script("return document.getElementById('conn').dataset.after")
        .await;
    assert!(after.as_str().is_some_and(|t| t.contains('-')), "resumed after {after}");
    wait_until("12 rows over the stream", WAIT, async || {
        browser.live_count().await >= 12
    })
    .await;
    hub.post_ok(events(18..=18, 0, "m-live")).await;
    wait_until("13 rows over the stream", WAIT, async || {
        browser.live_count().await >= 13
    })
    .await;
    assert_eq!(browser.live_count().await, 13, "no row twice");

    // `UI_SCREENSHOT=<file.png>` keeps a picture of the page for a human to look at.
    if let Ok(path) = std::env::var("UI_SCREENSHOT") {
        use base64::Engine;
        let png = browser.command(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("PNG");
        std::fs::write(&path, png).expect("write the screenshot");
    }

    // Nothing went wrong in the page: no error shown, no console error, no CSP violation.
    assert_eq!(
        browser.script("return document.getElementById('error').hidden").await,
        true
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    drop(browser);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_required_the_live_view_asks_for_one_and_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, data) = crate::auth::hub_requiring_keys(dir.path()).await;
    let reader = crate::auth::create_key(&data, "dashboard", "read", None);
    let ingester = crate::auth::create_key(&data, "collector", "ingest", None);

    let Some(browser) = Browser::start(dir.path()).await else {
        return;
    };
    // The page is public; the API is not.
    browser.goto(&hub.url("/ui")).await;
    browser
        .wait_for_stream("unauthorized", "the page to ask for a key")
        .await;
    assert_eq!(
        browser.script("return document.getElementById('error').hidden").await,
        false
    );
    assert!(browser.event_ids().await.is_empty());
    // The only errors are the refused calls.
    let errors = browser.console_errors().await;
    assert!(!errors.is_empty());
    assert!(
        errors
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| m.contains("401"))),
        "{errors:#?}"
    );

    // A key with the read role, typed in and saved: everything loads and the stream opens.
    browser.type_into("#api-key", &reader).await;
    browser.click("#key-form button").await;
    browser
        .wait_for_stream("live", "the stream to be live with the key")
        .await;
    wait_until("the continuous-query table", WAIT, async || {
        browser.text("cq-body").await.contains("llm_provider_model_1m")
    })
    .await;
    // A poll sent just before the key was saved may still have answered 401; from the first
    // data loaded with the key on, nothing may fail. (Reading the log empties it.)
    let before_key = browser.console_errors().await;
    assert!(
        before_key
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| m.contains("401"))),
        "{before_key:#?}"
    );
    let r = hub
        .client
        .post(hub.url("/api/v1/events/batch"))
        .bearer_auth(&ingester)
        .header("content-type", "application/x-ndjson")
        .body(events(1..=3, 0, "m-auth"))
        .send()
        .await
        .expect("POST events");
    assert_eq!(r.status(), 200);
    wait_until("3 rows over the stream", WAIT, async || browser.live_count().await == 3).await;
    wait_until("the events table", WAIT, async || browser.event_ids().await.len() == 3).await;

    // The key is kept: a reload opens the stream without asking again.
    browser.goto(&hub.url("/ui")).await;
    browser
        .wait_for_stream("live", "the stream to be live after a reload")
        .await;
    let kept = browser.script("return document.getElementById('api-key').value").await;
    assert_eq!(kept.as_str(), Some(reader.as_str()));
    wait_until("the events table after a reload", WAIT, async || {
        browser.event_ids().await.len() == 3
    })
    .await;
    assert_eq!(
        browser.script("return document.getElementById('error').hidden").await,
        true
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors after the key was saved: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_documentation_renders_every_operation_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    let doc = hub.get_json("/openapi.json").await;
    let operations: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().expect("path item").len())
        .sum();
    assert!(operations >= 39, "{operations}");
    let Some(browser) = Browser::start(dir.path()).await else {
        return;
    };
    browser.goto(&hub.url("/documentation")).await;
    // Swagger UI loads the document from this origin and draws one block per operation.
    let drawn = wait_for("Swagger UI to draw every operation", WAIT, async || {
        let n = browser
            .script("return document.querySelectorAll('.opblock').length")
            .await
            .as_u64()
            .unwrap_or(0) as usize;
        (n == operations).then_some(n)
    })
    .await;
    assert_eq!(drawn, operations);
    let title = browser
        .script("return document.querySelector('.info .title') && document.querySelector('.info .title').textContent")
        .await;
    assert!(
        title.as_str().is_some_and(|t| t.starts_with("LLM Analytics Hub")),
        "{title}"
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
