//! The `[auth]` section.

use serde::{Deserialize, Serialize};

/// When requests must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Required when the HTTP or wire endpoint binds a non-loopback address, off on loopback.
    #[default]
    Auto,
    /// Every `/api/*` request needs a key.
    Required,
    /// No authentication (every caller is admin over every tenant).
    Off,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "required" => Ok(Self::Required),
            "off" => Ok(Self::Off),
            other => Err(format!("auth mode `{other}`: expected auto, required or off")),
        }
    }
}

/// Where API keys are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyStoreKind {
    /// PostgreSQL when `[postgres] url` is set (every instance sees the same keys), else the
    /// data directory's key file.
    #[default]
    Auto,
    /// `<data dir>/auth/keys.json`.
    File,
    /// The `hub_api_keys` table (needs `[postgres] url`).
    Postgres,
}

impl std::str::FromStr for KeyStoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "file" => Ok(Self::File),
            "postgres" => Ok(Self::Postgres),
            other => Err(format!("key store `{other}`: expected auto, file or postgres")),
        }
    }
}

/// The `[auth]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `auto` (default), `required` or `off`.
    pub mode: AuthMode,
    /// Serve `/metrics` without credentials (for Prometheus scrapers on a private network).
    pub metrics_public: bool,
    /// Where API keys are kept: `auto` (default: PostgreSQL when configured, else the key
    /// file), `file` or `postgres`.
    pub key_store: KeyStoreKind,
    /// JWT bearer tokens (`[auth.jwt]`).
    pub jwt: super::jwt::JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Auto,
            metrics_public: true,
            key_store: KeyStoreKind::Auto,
            jwt: super::jwt::JwtConfig::default(),
        }
    }
}
