//! Build information for `analytics-hub --version`: the git commit the binary was built from
//! (`HUB_GIT_HASH` from the environment when there is no .git, as in a container build) and the
//! optional components compiled in (`HUB_FEATURES`, from cargo's `CARGO_FEATURE_*`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HUB_GIT_HASH");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    let hash = std::env::var("HUB_GIT_HASH")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HUB_GIT_HASH={hash}");
    let features: Vec<&str> = ["kafka", "postgres", "pgwire"]
        .into_iter()
        .filter(|f| std::env::var_os(format!("CARGO_FEATURE_{}", f.to_uppercase())).is_some())
        .collect();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(", ")
    };
    println!("cargo:rustc-env=HUB_FEATURES={features}");
}
