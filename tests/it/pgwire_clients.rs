//! Other real clients on the wire endpoint: psql (simple protocol, meta-commands, TLS),
//! Python psycopg 3, and the MD5 and cleartext methods.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tokio_postgres::NoTls;

use crate::harness::{BIN, Hub, HubOptions, free_port};
use crate::pgwire::{PASSWORD, USER, WireHub, connect_to, query_i64};

const COUNT: &str = "SELECT count(*) FROM events";

fn psql(port: u16, password: &str, sslmode: &str, args: &[&str]) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(format!(
            "host=127.0.0.1 port={port} user={USER} dbname=hub sslmode={sslmode}"
        ))
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql")
}

fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_queries_and_meta_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;
    let http = w
        .hub
        .rows("SELECT count(*) AS n, round(avg(latency_ms), 3) AS avg_ms FROM events")
        .await;
    let out = stdout(&psql(
        w.port,
        PASSWORD,
        "disable",
        &["-c", "SELECT count(*), round(avg(latency_ms), 3) FROM events"],
    ));
    assert_eq!(out, format!("{}|{}", http[0]["n"], http[0]["avg_ms"]));
    // several -c commands, a session statement and a timestamptz in Postgres text form
    let out = stdout(&psql(
        w.port,
        PASSWORD,
        "disable",
        &[
            "-c",
            "SET application_name = 'psql-test'",
            "-c",
            "SELECT min(timestamp) FROM events",
        ],
    ));
    assert_eq!(out.lines().last(), Some("2026-11-20 00:00:00+00"), "{out}");
    // \dt lists the Hub's tables; \d describes a table with Postgres type names
    let out = stdout(&psql(w.port, PASSWORD, "disable", &["-c", "\\dt"]));
    assert!(out.lines().any(|l| l.contains("|events|")), "{out}");
    let out = stdout(&psql(w.port, PASSWORD, "disable", &["-c", "\\d events"]));
    assert!(out.contains("timestamp|timestamp with time zone"), "{out}");
    // refusals keep the Postgres SQLSTATE
    let o = psql(
        w.port,
        PASSWORD,
        "disable",
        &["-v", "VERBOSITY=verbose", "-c", "DELETE FROM events"],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("42501"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // wrong password
    let o = psql(w.port, "nope", "disable", &["-c", "SELECT 1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("password authentication failed for user \"{USER}\"")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn psycopg3_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pgwire_psycopg.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let conninfo = format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname=hub sslmode=disable",
        w.port
    );
    let out = Command::new(&python)
        .arg(&script)
        .arg(&conninfo)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "psycopg script failed (install it with `pip install \"psycopg[binary]\"`, scripts/test.sh does): {stderr}"
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("json from the script");
    let http = w
        .hub
        .rows("SELECT count(*) AS n, sum(cost_usd) AS cost, min(timestamp) AS first FROM events WHERE model = 'gpt-4o'")
        .await;
    assert_eq!(got["server_version"], 160006);
    assert_eq!(got["model"], "gpt-4o");
    assert_eq!(got["n"], http[0]["n"]);
    assert!((got["cost"].as_f64().expect("cost") - http[0]["cost"].as_f64().expect("cost")).abs() < 1e-9);
    let first = chrono::DateTime::parse_from_rfc3339(got["first"].as_str().expect("first")).expect("iso");
    assert_eq!(
        first,
        chrono::DateTime::parse_from_rfc3339(http[0]["first"].as_str().expect("first")).expect("rfc3339")
    );
    assert_eq!(got["first_is_aware"], true);
    assert_eq!(got["types"], serde_json::json!(["str", "int", "float", "datetime"]));
    assert_eq!(got["since_count"], 60);
    assert_eq!(
        got["buckets"],
        serde_json::json!([["2026-11-20T00:00:00+00:00", 10], ["2026-11-20T00:05:00+00:00", 10]])
    );
    assert_eq!(got["client_side_count"], 60);
    assert_eq!(got["drop"], "42501");
    assert_eq!(got["after_refusal"], 1);
}

/// A self-signed certificate for 127.0.0.1, made with the openssl CLI.
fn self_signed(dir: &Path) -> (String, String) {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_md5_logins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let w = WireHub::start(
        dir.path(),
        &[
            ("PGWIRE_TLS_CERT", &cert),
            ("PGWIRE_TLS_KEY", &key),
            ("PGWIRE_AUTH", "md5"),
        ],
    )
    .await;
    // TLS: psql with sslmode=require negotiates it (\conninfo reports it), and queries work
    let out = stdout(&psql(
        w.port,
        PASSWORD,
        "require",
        &["-c", "\\conninfo", "-c", "SELECT count(*) FROM events"],
    ));
    assert!(out.contains("SSL connection"), "{out}");
    assert!(out.ends_with("120"), "{out}");
    // An API key as the password (user = the key's name), over TLS, with psql.
    let created = Command::new(BIN)
        .args(["keys", "create", "--name", "bi-tool", "--role", "read", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("keys create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let api_key = String::from_utf8_lossy(&created.stdout)
        .lines()
        .next()
        .expect("key")
        .trim()
        .to_string();
    let by_key = |sslmode: &str| {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!(
                "host=127.0.0.1 port={} user=bi-tool dbname=hub sslmode={sslmode}",
                w.port
            ))
            .args(["-c", "\\conninfo", "-c", "SELECT count(*) FROM events"])
            .env("PGPASSWORD", &api_key)
            .output()
            .expect("psql")
    };
    // (a key made by the CLI counts within a second)
    let out = crate::harness::wait_for("the API-key login", std::time::Duration::from_secs(10), async || {
        let o = by_key("require");
        o.status.success().then(|| stdout(&o))
    })
    .await;
    assert!(out.contains("SSL connection") && out.ends_with("120"), "{out}");
    // plain connections are still accepted, and MD5 with tokio-postgres works
    let out = stdout(&psql(w.port, PASSWORD, "disable", &["-c", "SELECT 1"]));
    assert_eq!(out, "1");
    let client = w.connect().await;
    assert_eq!(query_i64(&client, COUNT, &[]).await, 120, "md5 session");
    let Err(e) = w.try_connect("bad").await else {
        panic!("md5: wrong password accepted")
    };
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("28P01"));

    // cleartext method (`password`): the server asks for the password in clear
    let dir2 = tempfile::tempdir().expect("tempdir");
    let w2 = WireHub::start(dir2.path(), &[("PGWIRE_AUTH", "password")]).await;
    let client = w2.try_connect(PASSWORD).await.expect("cleartext login");
    assert_eq!(query_i64(&client, COUNT, &[]).await, 120);
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_needs_explicit_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "[pgwire]\nauth = \"trust\"\n").expect("config");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("config")
        .output()
        .expect("run analytics-hub config");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allow_trust"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let w = WireHub::start(dir.path(), &[("PGWIRE_AUTH", "trust"), ("PGWIRE_ALLOW_TRUST", "true")]).await;
    let conn = format!("host=127.0.0.1 port={} user=anyone dbname=hub sslmode=disable", w.port);
    let client = connect_to(&conn).await.expect("trust login");
    assert_eq!(query_i64(&client, COUNT, &[]).await, 120);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_get_53300() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let toml = format!(
        "[pgwire]\nport = {port}\nmax_connections = 1\n[[pgwire.users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n"
    );
    let hub = Hub::start_with(
        &dir.path().join("data"),
        HubOptions {
            config_toml: Some(toml),
            env: vec![("PGWIRE_ENABLED".into(), "true".into())],
            ..Default::default()
        },
    )
    .await;
    let conn = format!("host=127.0.0.1 port={port} user={USER} password={PASSWORD} sslmode=disable");
    let (first, c) = tokio_postgres::connect(&conn, NoTls).await.expect("first connection");
    let task = tokio::spawn(c);
    let Err(e) = tokio_postgres::connect(&conn, NoTls).await else {
        panic!("second connection accepted over max_connections = 1")
    };
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("53300"), "{e}");
    assert_eq!(query_i64(&first, "SELECT 1::bigint", &[]).await, 1, "first still works");
    drop(first);
    task.await.expect("join").expect("connection closed cleanly");
    // the slot is free again once the server has seen the first client go
    let again = crate::harness::wait_for(
        "the connection slot released",
        std::time::Duration::from_secs(10),
        || {
            let conn = conn.clone();
            async move { connect_to(&conn).await.ok() }
        },
    )
    .await;
    assert_eq!(query_i64(&again, "SELECT 2::bigint", &[]).await, 2);
    drop(hub);
}
