//! Authentication and authorization of every request: the key from `Authorization: Bearer`
//! or `X-API-Key`, the access the route needs, 401/403 as JSON (never saying whether a key
//! exists), and the caller as a request extension for the handlers (tenant, cache scope).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Access, AuthError, Authenticator, Principal};

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match &e {
            AuthError::MissingCredentials | AuthError::InvalidCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            AuthError::Forbidden { .. } => Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            AuthError::InvalidRequest(_) => Self::bad_request("invalid_request", e.to_string()),
            #[cfg(feature = "postgres")]
            AuthError::KeyDatabase(_) => {
                tracing::error!(error = %e, "API key request failed");
                Self::unavailable("the key database (PostgreSQL) is unavailable; retry later", 5)
            }
            AuthError::KeyFile { .. } | AuthError::Random(_) | AuthError::Jwks { .. } => Self::internal(e),
        }
    }
}

/// What a route needs (`None`: public).
pub fn access_of(method: &Method, path: &str, metrics_public: bool) -> Option<Access> {
    match path {
        "/health" | "/ready" | "/openapi.json" => return None,
        "/metrics" => return (!metrics_public).then_some(Access::Read),
        _ => {}
    }
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if path == "/api/v1/events" || path == "/api/v1/events/batch" {
        return Some(if write { Access::Ingest } else { Access::Read });
    }
    if path.starts_with("/api/v1/exports") || path.starts_with("/api/v1/snapshots") || path.starts_with("/api/v1/keys")
    {
        return Some(Access::Admin);
    }
    if (path.starts_with("/api/v1/continuous-queries") || path.starts_with("/api/v1/alerts")) && write {
        return Some(Access::Admin);
    }
    // SQL (POST, read-only statements; CREATE CONTINUOUS QUERY is checked by its handler) and
    // every other read.
    Some(Access::Read)
}

/// The key a request presents.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(token) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(token.trim());
        }
        return Some(v);
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The middleware.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(access) = access_of(request.method(), request.uri().path(), state.auth.metrics_public()) else {
        return next.run(request).await;
    };
    let principal = match state.auth.authenticate(presented(request.headers())) {
        Ok(p) => p,
        Err(e) => {
            let mut response = ApiError::from(e).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    if let Err(e) = Authenticator::authorize(&principal, access) {
        tracing::info!(key = %principal.name, role = %principal.role, path = %request.uri().path(), "refused: role lacks the right");
        let mut response = ApiError::from(e).into_response();
        response.extensions_mut().insert(principal);
        return response;
    }
    // The budget is the key's; without authentication, the client address's.
    let caller = if state.auth.required() {
        format!("key:{}", principal.name)
    } else {
        request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(|| "ip:unknown".to_string(), |c| format!("ip:{}", c.0.ip()))
    };
    if let Err(wait) = state.limits.check(access, &caller) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("rate limit of `{caller}` reached; retry in {secs} s"),
        )
        .retry_after(secs.max(1))
        .into_response();
        response.extensions_mut().insert(principal);
        return response;
    }
    request.extensions_mut().insert(principal.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(principal);
    response
}

/// The caller [`guard`] found (anonymous admin for the public routes, where it sets none).
pub fn principal(found: Option<axum::Extension<Principal>>) -> Principal {
    found.map_or_else(Principal::anonymous, |axum::Extension(p)| p)
}

/// The result-cache scope of a caller: answers differ by tenant, not by role.
pub fn scope(principal: &Principal) -> crate::cache::Scope {
    crate::cache::Scope {
        role: None,
        tenant: principal.tenant.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_needs_the_right_access() {
        let cases = [
            (Method::GET, "/health", None),
            (Method::GET, "/ready", None),
            (Method::GET, "/metrics", None),
            (Method::POST, "/api/v1/events", Some(Access::Ingest)),
            (Method::POST, "/api/v1/events/batch", Some(Access::Ingest)),
            (Method::GET, "/api/v1/events", Some(Access::Read)),
            (Method::GET, "/api/v1/events/abc", Some(Access::Read)),
            (Method::POST, "/api/v1/sql", Some(Access::Read)),
            (Method::GET, "/api/v1/continuous-queries", Some(Access::Read)),
            (Method::POST, "/api/v1/continuous-queries", Some(Access::Admin)),
            (Method::DELETE, "/api/v1/continuous-queries/x", Some(Access::Admin)),
            (Method::POST, "/api/v1/continuous-queries/x/pause", Some(Access::Admin)),
            (Method::GET, "/api/v1/exports", Some(Access::Admin)),
            (Method::POST, "/api/v1/snapshots", Some(Access::Admin)),
            (Method::GET, "/api/v1/ingest/status", Some(Access::Read)),
            (Method::GET, "/api/v1/keys", Some(Access::Admin)),
            (Method::DELETE, "/api/v1/keys/x", Some(Access::Admin)),
            (Method::GET, "/api/v1/metrics", Some(Access::Read)),
            (Method::GET, "/api/v1/metrics/llm_provider_model", Some(Access::Read)),
            (
                Method::GET,
                "/api/v1/metrics/llm_provider_model/timeseries",
                Some(Access::Read),
            ),
            (Method::GET, "/api/v1/analytics/anomalies", Some(Access::Read)),
            (Method::GET, "/api/v1/analytics/correlations", Some(Access::Read)),
            (Method::GET, "/api/v1/analytics/traces/abc", Some(Access::Read)),
            (Method::GET, "/api/v1/analytics/predictions", Some(Access::Read)),
            (Method::POST, "/api/v1/analytics/predict", Some(Access::Read)),
        ];
        for (method, path, want) in cases {
            assert_eq!(access_of(&method, path, true), want, "{method} {path}");
        }
        assert_eq!(access_of(&Method::GET, "/metrics", false), Some(Access::Read));
    }
}
