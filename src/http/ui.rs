//! The live view at `/ui`: one static page (HTML, CSS and vanilla JavaScript embedded in the
//! binary, no CDN) showing recent events, the continuous queries with their status and a live
//! chart fed by `GET /api/v1/stream`. Public like `/documentation`: the page itself holds no
//! data; it calls the API from the browser with the key the user types in (if any).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Everything the page loads comes from this origin; no inline script or style, no frames, no
/// forms posting elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const FAVICON_SVG: &str = include_str!("ui/favicon.svg");

/// One embedded asset with its content type and the page's security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small and embedded: always revalidate, so a new binary's page is never mixed with an old
    // script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `/ui` and its assets, and `/` redirecting to it.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui") }))
        .route("/ui", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/ui/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
        // Pages without a <link rel="icon"> (Swagger UI) make browsers ask for /favicon.ico.
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_only_its_own_assets() {
        let html = super::INDEX_HTML;
        for asset in ["/ui/app.js", "/ui/app.css", "/ui/favicon.svg"] {
            assert!(html.contains(asset), "{asset} not linked");
        }
        // No inline script or style (the CSP forbids them) and nothing from elsewhere.
        assert!(!html.contains("<style"), "inline style");
        assert!(!html.contains(" style="), "inline style attribute");
        assert_eq!(html.matches("<script").count(), 1, "one external script");
        for text in [html, super::APP_JS, super::APP_CSS] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "external reference"
            );
            assert!(!text.contains("innerHTML"), "markup built from strings");
        }
    }
}
