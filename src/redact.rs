//! Secrets kept out of logs and printed configuration.

/// `scheme://user:secret@host` → `scheme://user:***@host` (anything else unchanged).
pub fn url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(super::url("redis://:s3cret@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(super::url("redis://hub:s3cret@cache"), "redis://hub:***@cache");
        assert_eq!(super::url("postgres://hub:pw@db/hub"), "postgres://hub:***@db/hub");
        assert_eq!(super::url("redis://cache:6379"), "redis://cache:6379");
    }
}
