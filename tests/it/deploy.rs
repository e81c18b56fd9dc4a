//! deploy/ checked offline (no container engine or cluster here): Kubernetes manifests against
//! the Kubernetes schemas and the seed's numbers, the compose file, the Dockerfile checklist, and
//! the binary's shared libraries against Debian slim's (scripts/check-deploy.py).

use crate::harness::BIN;

#[test]
fn manifests_compose_file_and_dockerfile_pass_the_offline_checks() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = std::process::Command::new(python);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-deploy.py"))
        .args(["--binary", BIN]);
    // scripts/test.sh installs docker-compose 1.29 and names it here; it is required in CI.
    match std::env::var("DOCKER_COMPOSE") {
        Ok(dc) => {
            cmd.args(["--docker-compose", &dc]);
        }
        Err(_) => assert!(
            std::env::var("CI").is_err(),
            "DOCKER_COMPOSE must be set in CI (scripts/test.sh installs it)"
        ),
    }
    let out = cmd.output().expect("run scripts/check-deploy.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("deploy checks passed"), "{text}");
}

/// The binary built with `--no-default-features` (scripts/test.sh builds it and names it in
/// `HUB_LEAN_BIN`; required in CI).
fn lean_binary() -> Option<std::path::PathBuf> {
    match std::env::var("HUB_LEAN_BIN") {
        Ok(path) => Some(path.into()),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "HUB_LEAN_BIN must be set in CI (scripts/test.sh builds it with --no-default-features)"
            );
            eprintln!("skipped: set HUB_LEAN_BIN to a `cargo build --no-default-features` binary");
            None
        }
    }
}

/// Runs the lean binary with `args` and `env` until it exits (at most 60 s); its status and
/// stderr.
fn run_to_exit(bin: &std::path::Path, dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args)
        .env("DATA_DIR", dir)
        .env("PORT", crate::harness::free_port().to_string())
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("PGWIRE_ENABLED")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the lean binary");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} with {env:?} did not exit within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    (status.success(), stderr)
}

#[tokio::test]
async fn a_build_without_optional_features_serves_http_and_refuses_what_it_lacks() {
    use crate::harness::{Hub, HubOptions};
    let Some(lean) = lean_binary() else { return };
    let version = |bin: &std::path::Path| {
        let out = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .expect("--version");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(version(&lean).contains("features: none;"), "{}", version(&lean));
    let full = version(std::path::Path::new(BIN));
    assert!(full.contains("features: kafka, postgres, pgwire;"), "{full}");

    // The left-out libraries are not in the binary at all (librdkafka's C symbols, the source
    // paths of sqlx-postgres and pgwire in panic locations), while the full build has them.
    let lean_bytes = std::fs::read(&lean).expect("read the lean binary");
    let full_bytes = std::fs::read(BIN).expect("read the full binary");
    for marker in ["rd_kafka_conf_new", "sqlx-postgres-0.", "pgwire-0."] {
        let has = |bytes: &[u8]| memchr::memmem::find(bytes, marker.as_bytes()).is_some();
        assert!(has(&full_bytes), "the full build has {marker}");
        assert!(!has(&lean_bytes), "the lean build has no {marker}");
    }
    assert!(lean_bytes.len() < full_bytes.len());

    // What it has works: HTTP ingest, SQL, continuous queries' tables.
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(
        &dir.path().join("data"),
        HubOptions {
            bin: Some(lean.clone()),
            ..HubOptions::default()
        },
    )
    .await;
    let events = crate::harness::generated(7, 25, 0.0);
    let (status, body) = hub.post_ndjson(events.join("\n")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hub.count("").await, 25);
    drop(hub);

    // What it lacks is refused at start, naming the setting and the feature.
    let refused = [
        (
            vec![("KAFKA_BROKERS", "127.0.0.1:9")],
            "kafka.brokers (KAFKA_BROKERS) is set, but this build has no kafka support",
        ),
        (
            vec![("DATABASE_URL", "postgres://127.0.0.1:9/x")],
            "built without the `postgres` cargo feature",
        ),
        (vec![("AUTH_KEY_STORE", "postgres")], "auth.key_store = \"postgres\""),
        (
            vec![("PGWIRE_ENABLED", "true")],
            "built without the `pgwire` cargo feature",
        ),
    ];
    for (env, message) in refused {
        let (ok, stderr) = run_to_exit(&lean, dir.path(), &["serve"], &env);
        assert!(!ok, "{env:?} must be refused; stderr: {stderr}");
        assert!(stderr.contains(message), "{env:?}: {stderr}");
    }
    let (ok, stderr) = run_to_exit(&lean, dir.path(), &["migrate"], &[]);
    assert!(
        !ok && stderr.contains("`migrate` needs the `postgres` cargo feature"),
        "{stderr}"
    );
    let (ok, stderr) = run_to_exit(&lean, dir.path(), &["bench", "kafka", "--brokers", "127.0.0.1:9"], &[]);
    assert!(
        !ok && stderr.contains("`bench kafka` needs the `kafka` cargo feature"),
        "{stderr}"
    );
}
