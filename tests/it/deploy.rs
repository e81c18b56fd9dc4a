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
