//! Every relative link in the README, BENCHMARKS.md and docs/ resolves: to an existing file, and
//! for `#anchors`, to a heading of that file (GitHub's slug rules).

use std::path::{Path, PathBuf};

fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// `(target, anchor)` of every `](...)` link that is not a URL.
fn links(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let link = &rest[..end];
        if !link.contains("://") && !link.starts_with("mailto:") {
            match link.split_once('#') {
                Some((file, anchor)) => out.push((file.to_string(), Some(anchor.to_string()))),
                None => out.push((link.to_string(), None)),
            }
        }
    }
    out
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for (target, anchor) in links(&text) {
            let target_path = if target.is_empty() {
                file.clone()
            } else {
                file.parent().expect("dir").join(&target)
            };
            assert!(target_path.exists(), "{}: link to missing {target}", file.display());
            if let Some(anchor) = anchor {
                let target_text = std::fs::read_to_string(&target_path).expect("read target");
                assert!(
                    anchors(&target_text).contains(&anchor),
                    "{}: no heading for #{anchor} in {}",
                    file.display(),
                    target_path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links found");
}
