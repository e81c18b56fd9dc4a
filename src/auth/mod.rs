//! Authentication and authorization: API keys (and, on the wire, users) mapped to a role and
//! optionally a tenant. The HTTP middleware (`http/auth.rs`) asks [`Authenticator`] who a
//! request is; the query layer (`query/tenant.rs`) confines a tenant's SQL to its rows.

pub mod cli;
pub mod config;
pub mod jwt;
pub mod keys;
#[cfg(feature = "postgres")]
pub mod keys_pg;
pub mod principal;

use std::path::PathBuf;
use std::sync::Arc;

pub use config::{AuthConfig, AuthMode, KeyStoreKind};
pub use principal::{Access, Principal, Role};

use crate::error::{Classify, ErrorClass};

/// Why a request was not let through, or a key not managed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials on a request that needs them.
    #[error("authentication required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")]
    MissingCredentials,
    /// Unknown, expired or revoked credentials (never says which).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Valid credentials without the right.
    #[error("the `{role}` role may not do this; it needs `{needs}`")]
    Forbidden {
        /// The caller's role.
        role: Role,
        /// What the request needs.
        needs: &'static str,
    },
    /// A key request that cannot be done (duplicate name, bad tenant).
    #[error("{0}")]
    InvalidRequest(String),
    /// The key file cannot be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key table in PostgreSQL cannot be read or written.
    #[cfg(feature = "postgres")]
    #[error("API keys in PostgreSQL: {0}")]
    KeyDatabase(#[source] sqlx::Error),
    /// The JWKS URL could not be fetched or read.
    #[error("JWKS {url}: {source}")]
    Jwks {
        /// The configured `auth.jwt.jwks_url`.
        url: String,
        /// Cause.
        #[source]
        source: jwt::JwksError,
    },
    /// The system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

impl Classify for AuthError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::MissingCredentials | Self::InvalidCredentials | Self::Forbidden { .. } | Self::InvalidRequest(_) => {
                ErrorClass::User
            }
            #[cfg(feature = "postgres")]
            Self::KeyDatabase(_) => ErrorClass::External,
            Self::Jwks { .. } => ErrorClass::External,
            Self::KeyFile { .. } | Self::Random(_) => ErrorClass::Internal,
        }
    }
}

/// Whether `host` is a loopback address or name.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Wall-clock microseconds (injected in tests).
pub type WallClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Decides who a request is.
#[derive(Clone)]
pub struct Authenticator {
    required: bool,
    metrics_public: bool,
    keys: keys::KeyRing,
    jwt: Option<Arc<jwt::JwtVerifier>>,
    clock: Arc<dyn crate::clock::Clock>,
    wall: WallClock,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds it from `config`; `public_listeners` names the listeners bound to a non-loopback
    /// address (with `mode = auto` they make authentication required).
    pub fn new(
        config: &AuthConfig,
        key_store: keys::KeyStore,
        public_listeners: &[String],
        clock: Arc<dyn crate::clock::Clock>,
        wall: WallClock,
    ) -> Result<Self, AuthError> {
        let required = match config.mode {
            AuthMode::Required => true,
            AuthMode::Off => false,
            AuthMode::Auto => !public_listeners.is_empty(),
        };
        let keys = keys::KeyRing::open(key_store)?;
        let jwt = if config.jwt.enabled() {
            Some(Arc::new(jwt::JwtVerifier::new(&config.jwt)?))
        } else {
            None
        };
        if required && keys.is_empty() && jwt.is_none() {
            tracing::warn!(
                "authentication is required and no API key exists yet: create one with `analytics-hub keys create --name admin --role admin`"
            );
        }
        if !required && let Some(first) = public_listeners.first() {
            tracing::warn!(listener = %first, "authentication is off on a non-loopback address (auth.mode = \"off\")");
        }
        Ok(Self {
            required,
            metrics_public: config.metrics_public,
            keys,
            jwt,
            clock,
            wall,
        })
    }

    /// Whether requests must authenticate.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Whether `/metrics` is served without credentials.
    pub fn metrics_public(&self) -> bool {
        self.metrics_public
    }

    /// The principal of a presented key (`None`: none presented).
    pub fn authenticate(&self, key: Option<&str>) -> Result<Principal, AuthError> {
        match key {
            Some(k) if k.starts_with(keys::PREFIX) => self.keys.verify(k, self.clock.now(), (self.wall)()),
            Some(token) => match &self.jwt {
                Some(jwt) => jwt.verify(token),
                None => Err(AuthError::InvalidCredentials),
            },
            None if self.required => Err(AuthError::MissingCredentials),
            None => Ok(Principal::anonymous()),
        }
    }

    /// The JWT verifier, if JWTs are configured (the service runs its JWKS watcher).
    pub fn jwt(&self) -> Option<&Arc<jwt::JwtVerifier>> {
        self.jwt.as_ref()
    }

    /// The keys (the service runs [`keys::KeyRing::watch`] on them).
    pub fn keys(&self) -> &keys::KeyRing {
        &self.keys
    }

    /// Creates a key (through the API); it works at once on this instance, within a second on
    /// the others.
    pub async fn create_key(
        &self,
        name: &str,
        role: Role,
        tenant: Option<&str>,
        expires_in: std::time::Duration,
    ) -> Result<(String, keys::KeyRecord), AuthError> {
        let expires_in = (!expires_in.is_zero()).then_some(expires_in);
        let spec = keys::KeySpec {
            name,
            role,
            tenant,
            expires_in,
        };
        let created = self.keys.store().create(spec, (self.wall)()).await?;
        self.keys.reload_now().await?;
        Ok(created)
    }

    /// Every key record (never the keys).
    pub async fn list_keys(&self) -> Result<Vec<keys::KeyRecord>, AuthError> {
        self.keys.store().list().await
    }

    /// Revokes a key (through the API); it is refused at once on this instance, within a
    /// second on the others.
    pub async fn revoke_key(&self, name: &str) -> Result<keys::KeyRecord, AuthError> {
        let revoked = self.keys.store().revoke(name, (self.wall)()).await?;
        self.keys.reload_now().await?;
        Ok(revoked)
    }

    /// Checks that `principal` may do `access`.
    pub fn authorize(principal: &Principal, access: Access) -> Result<(), AuthError> {
        if principal.role.allows(access) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                role: principal.role,
                needs: access.needs(),
            })
        }
    }
}
