//! JWT bearer tokens from an identity provider: HS256 with a shared secret, RS256/ES256 with
//! PEM public keys, a JWKS file or a JWKS URL (fetched at start, re-fetched every
//! `jwks_refresh_secs` and early when a token names an unknown `kid`, so a provider's key
//! rotation needs no restart); issuer and audience checked when configured, `exp` always
//! required; the role and tenant read from configurable claims. `alg: none` and every
//! algorithm without a configured key are refused.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

use super::keys::valid_tenant;
use super::{AuthError, Principal, Role};

/// The `[auth.jwt]` section (off unless a secret, a public key or a JWKS file is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 shared secret (env `AUTH_JWT_SECRET`; never printed).
    pub hs256_secret: Option<String>,
    /// PEM public keys (RSA → RS256, P-256 → ES256).
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS document (`{"keys": [...]}`) with the provider's public keys, matched by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// The provider's JWKS endpoint (e.g. `https://idp.example/.well-known/jwks.json`; env
    /// `AUTH_JWT_JWKS_URL`), fetched at start and every `jwks_refresh_secs`.
    pub jwks_url: Option<String>,
    /// Seconds between JWKS fetches (a token with an unknown `kid` fetches early, at most once
    /// per `jwks_min_refresh_secs`).
    pub jwks_refresh_secs: u64,
    /// Shortest time between two JWKS fetches, seconds.
    pub jwks_min_refresh_secs: u64,
    /// Required `iss` (env `AUTH_JWT_ISSUER`).
    pub issuer: Option<String>,
    /// Required `aud` (env `AUTH_JWT_AUDIENCE`).
    pub audience: Option<String>,
    /// Claim holding the role (`read`, `ingest`, `admin`).
    pub role_claim: String,
    /// Claim holding the tenant, if any.
    pub tenant_claim: String,
    /// Clock skew tolerated on `exp`/`nbf`, seconds.
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            issuer: None,
            audience: None,
            role_claim: "role".into(),
            tenant_claim: "tenant".into(),
            leeway_secs: 30,
        }
    }
}

impl JwtConfig {
    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        self.hs256_secret.is_some()
            || !self.public_key_files.is_empty()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens against the configured keys.
pub struct JwtVerifier {
    keys: Vec<Key>,
    /// The keys last fetched from `jwks_url`.
    fetched: RwLock<Arc<Vec<Key>>>,
    /// Set when a token named a `kid` no key has: the watcher fetches early.
    unknown_kid: tokio::sync::Notify,
    /// The client of `jwks_url` fetches (one connection pool for every refresh).
    http: reqwest::Client,
    config: JwtConfig,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn config_error(what: &str, detail: impl std::fmt::Display) -> AuthError {
    AuthError::InvalidRequest(format!("auth.jwt: {what}: {detail}"))
}

/// Largest JWKS document fetched.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The RS256/ES256 keys of a JWKS document (others skipped with a warning).
/// Why a JWKS (file or URL) gave no keys.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The request failed (connection, timeout, HTTP status).
    #[error("fetch failed: {0}")]
    Fetch(#[source] reqwest::Error),
    /// The document is larger than the Hub reads.
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    /// Not a JSON Web Key Set.
    #[error("not a JWKS document: {0}")]
    Document(#[source] serde_json::Error),
    /// A key of the set cannot be used.
    #[error("key {kid:?}: {source}")]
    Key {
        /// The key's id.
        kid: Option<String>,
        /// Cause.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

fn jwks_keys(text: &[u8]) -> Result<Vec<Key>, JwksError> {
    let set: JwkSet = serde_json::from_slice(text).map_err(JwksError::Document)?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let Some(alg) = jwk_algorithm(jwk.common.key_algorithm, &jwk.algorithm) else {
            tracing::warn!(kid = ?jwk.common.key_id, "JWKS key skipped: only RS256 and ES256 (P-256) are accepted");
            continue;
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|source| JwksError::Key {
            kid: jwk.common.key_id.clone(),
            source,
        })?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    Ok(keys)
}

fn jwk_algorithm(alg: Option<KeyAlgorithm>, params: &AlgorithmParameters) -> Option<Algorithm> {
    match (alg, params) {
        (Some(KeyAlgorithm::RS256), _) => Some(Algorithm::RS256),
        (Some(KeyAlgorithm::ES256), _) => Some(Algorithm::ES256),
        (None, AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
        (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
        _ => None,
    }
}

impl JwtVerifier {
    /// Loads the keys `config` names.
    pub fn new(config: &JwtConfig) -> Result<Self, AuthError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hs256_secret {
            if secret.len() < 32 {
                return Err(config_error("hs256_secret", "use at least 32 bytes"));
            }
            keys.push(Key {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        for path in &config.public_key_files {
            let pem = std::fs::read(path).map_err(|e| config_error(&path.display().to_string(), e))?;
            let (alg, key) = match DecodingKey::from_rsa_pem(&pem) {
                Ok(k) => (Algorithm::RS256, k),
                Err(_) => (
                    Algorithm::ES256,
                    DecodingKey::from_ec_pem(&pem).map_err(|e| {
                        config_error(&path.display().to_string(), format!("not an RSA or EC public key: {e}"))
                    })?,
                ),
            };
            keys.push(Key { kid: None, alg, key });
        }
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read(path).map_err(|e| config_error(&path.display().to_string(), e))?;
            keys.extend(jwks_keys(&text).map_err(|e| config_error(&path.display().to_string(), e))?);
        }
        if let Some(url) = &config.jwks_url {
            let parsed = reqwest::Url::parse(url).map_err(|e| config_error("jwks_url", e))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(config_error("jwks_url", "use an https:// URL"));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| config_error("jwks_url", e))?;
        Ok(Self {
            keys,
            fetched: RwLock::new(Arc::new(Vec::new())),
            unknown_kid: tokio::sync::Notify::new(),
            http,
            config: config.clone(),
        })
    }

    /// Fetches `jwks_url` now and replaces the fetched keys (none configured: nothing to do).
    /// Returns how many keys it holds.
    pub async fn fetch_jwks(&self) -> Result<usize, AuthError> {
        let Some(url) = &self.config.jwks_url else {
            return Ok(0);
        };
        let fail = |source: JwksError| AuthError::Jwks {
            url: url.clone(),
            source,
        };
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fail(JwksError::Fetch(e)))?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(JwksError::Fetch(e)))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(fail(JwksError::TooLarge(MAX_JWKS_BYTES)));
            }
        }
        let keys = jwks_keys(&body).map_err(fail)?;
        let n = keys.len();
        *self.fetched.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(n)
    }

    /// Re-fetches `jwks_url` every `jwks_refresh_secs` (every `jwks_min_refresh_secs` while
    /// fetches fail, and early after a token with an unknown `kid`) until `shutdown`.
    pub async fn watch(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.config.jwks_url.is_none() {
            return;
        }
        let min = Duration::from_secs(self.config.jwks_min_refresh_secs.max(1));
        let every = Duration::from_secs(self.config.jwks_refresh_secs.max(1)).max(min);
        let mut failing = self.fetched_len() == 0;
        loop {
            let wait = if failing { min } else { every };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.unknown_kid.notified() => {}
                _ = shutdown.changed() => return,
            }
            match self.fetch_jwks().await {
                Ok(n) => {
                    if failing {
                        tracing::info!(keys = n, "JWKS fetched");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "JWKS not re-fetched; the last keys fetched stay in force");
                    }
                    failing = true;
                }
            }
            // At most one fetch per `min`, however many unknown kids arrive.
            tokio::select! {
                _ = tokio::time::sleep(min) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn fetched_len(&self) -> usize {
        self.fetched
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The principal a valid token names.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::InvalidCredentials)?;
        let fetched = Arc::clone(&self.fetched.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let Some(key) = self
            .keys
            .iter()
            .chain(fetched.iter())
            .filter(|k| k.alg == header.alg)
            .find(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
        else {
            if header.kid.is_some() && self.config.jwks_url.is_some() {
                // Perhaps the provider rotated its keys: fetch early (rate-limited).
                self.unknown_kid.notify_one();
            }
            return Err(AuthError::InvalidCredentials);
        };
        let mut validation = Validation::new(key.alg);
        validation.leeway = self.config.leeway_secs;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &self.config.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        let claims = decode::<serde_json::Value>(token, &key.key, &validation)
            .map_err(|e| {
                tracing::debug!(error = %e, "JWT refused");
                AuthError::InvalidCredentials
            })?
            .claims;
        let role: Role = claims
            .get(&self.config.role_claim)
            .and_then(|v| v.as_str())
            .and_then(|r| r.parse().ok())
            .ok_or(AuthError::InvalidCredentials)?;
        let tenant = match claims.get(&self.config.tenant_claim) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) if valid_tenant(t) => Some(t.clone()),
            Some(_) => return Err(AuthError::InvalidCredentials),
        };
        if role == Role::Admin && tenant.is_some() {
            return Err(AuthError::InvalidCredentials);
        }
        let name = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .map_or_else(|| "jwt".to_string(), |s| format!("jwt:{s}"));
        Ok(Principal { name, role, tenant })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtConfig {
            hs256_secret: Some(SECRET.into()),
            issuer: Some("https://idp.example".into()),
            audience: Some("llm-analytics-hub".into()),
            ..JwtConfig::default()
        })
        .expect("verifier")
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    fn exp(offset: i64) -> i64 {
        chrono::Utc::now().timestamp() + offset
    }

    #[test]
    fn valid_tokens_map_claims_and_every_defect_is_refused() {
        let v = verifier();
        let good = serde_json::json!({"sub": "ana", "role": "read", "tenant": "acme", "iss": "https://idp.example", "aud": "llm-analytics-hub", "exp": exp(600)});
        let p = v.verify(&token(good.clone(), SECRET)).expect("valid");
        assert_eq!(
            (p.name.as_str(), p.role, p.tenant.as_deref()),
            ("jwt:ana", Role::Read, Some("acme"))
        );

        let mut cases = Vec::new();
        let mut expired = good.clone();
        expired["exp"] = serde_json::json!(exp(-3600));
        cases.push(("expired", token(expired, SECRET)));
        let mut issuer = good.clone();
        issuer["iss"] = serde_json::json!("https://evil.example");
        cases.push(("wrong issuer", token(issuer, SECRET)));
        let mut audience = good.clone();
        audience["aud"] = serde_json::json!("other");
        cases.push(("wrong audience", token(audience, SECRET)));
        let mut role = good.clone();
        role["role"] = serde_json::json!("root");
        cases.push(("unknown role", token(role, SECRET)));
        let mut admin = good.clone();
        admin["role"] = serde_json::json!("admin");
        cases.push(("tenant-bound admin", token(admin, SECRET)));
        cases.push((
            "other secret",
            token(good.clone(), "another-secret-of-at-least-32-bytes!!"),
        ));
        let mut tampered = token(good.clone(), SECRET);
        let last = tampered.pop().expect("char");
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        cases.push(("tampered signature", tampered));
        let b64 = |v: &serde_json::Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        cases.push((
            "alg none",
            format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
                b64(&good)
            ),
        ));
        let mut no_exp = good.clone();
        no_exp.as_object_mut().expect("object").remove("exp");
        cases.push(("no exp", token(no_exp, SECRET)));
        for (what, t) in cases {
            assert!(
                matches!(v.verify(&t), Err(AuthError::InvalidCredentials)),
                "{what} must be refused"
            );
        }
        assert!(
            JwtVerifier::new(&JwtConfig {
                hs256_secret: Some("short".into()),
                ..JwtConfig::default()
            })
            .is_err()
        );
    }
}
