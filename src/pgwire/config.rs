//! The `[pgwire]` section: the PostgreSQL wire-protocol listener (psql, Grafana, BI tools).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Postgres-wire settings. The listener starts when `enabled` is set and at least one user is
/// configured (or `allow_trust` with `auth = "trust"`); it never uses port 5432 by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgwireConfig {
    /// Run the listener (env `PGWIRE_ENABLED`).
    pub enabled: bool,
    /// Address to bind (env `PGWIRE_HOST`); `0.0.0.0` for remote clients such as Grafana in
    /// a container.
    pub host: String,
    /// Port to bind (env `PGWIRE_PORT`); `0` picks a free port.
    pub port: u16,
    /// How clients prove who they are (env `PGWIRE_AUTH`): `scram-sha-256` (default), `md5`,
    /// `password` (cleartext; use only over TLS) or `trust` (no password; needs `allow_trust`).
    pub auth: PgwireAuth,
    /// Permit `auth = "trust"`: any user name is accepted without a password. For local
    /// development only (env `PGWIRE_ALLOW_TRUST`).
    pub allow_trust: bool,
    /// Accounts allowed to connect. `PGWIRE_USER` + `PGWIRE_PASSWORD` add (or replace) one.
    pub users: Vec<PgwireUser>,
    /// PEM certificate chain for TLS (env `PGWIRE_TLS_CERT`). With `tls_key` set, clients may
    /// upgrade with `sslmode=require`; plain connections are still accepted.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for TLS (env `PGWIRE_TLS_KEY`).
    pub tls_key: Option<PathBuf>,
    /// Most concurrent connections; more are refused (`0` = no limit).
    pub max_connections: usize,
    /// Let a user that is not in `users` log in with an API key as its password (user name =
    /// the key's name; role `read` or `admin`; a tenant-bound key sees its tenant's rows). The
    /// key is sent as a cleartext password, so only over TLS or from loopback (env
    /// `PGWIRE_API_KEYS`).
    pub api_keys: bool,
}

impl Default for PgwireConfig {
    fn default() -> Self {
        Self {
            // Off in builds without the endpoint (cargo feature `pgwire`).
            enabled: cfg!(feature = "pgwire"),
            host: "127.0.0.1".into(),
            port: 5433,
            auth: PgwireAuth::ScramSha256,
            allow_trust: false,
            users: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_connections: 256,
            api_keys: true,
        }
    }
}

/// One account of the wire endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgwireUser {
    /// User name (`user=` in the connection string).
    pub name: String,
    /// Password, in clear (hashed per connection for SCRAM/MD5; keep the file private).
    pub password: String,
    /// Tenant the login is bound to: it sees only that tenant's rows and the tables with a
    /// `tenant` column (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Role, as for API keys: `read` (default) or `admin` — alike on the wire, which is
    /// read-only for every login; `ingest` cannot run SQL and is refused.
    #[serde(default = "read_role")]
    pub role: crate::auth::Role,
}

fn read_role() -> crate::auth::Role {
    crate::auth::Role::Read
}

/// Authentication method of the wire endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgwireAuth {
    /// SCRAM-SHA-256 (what Postgres uses by default; supported by every current driver).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge-response (legacy drivers).
    #[serde(rename = "md5")]
    Md5,
    /// Cleartext password (only over TLS).
    #[serde(rename = "password")]
    Password,
    /// No authentication (needs `allow_trust = true`).
    #[serde(rename = "trust")]
    Trust,
}

impl std::str::FromStr for PgwireAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "scram-sha-256" | "scram" => Ok(Self::ScramSha256),
            "md5" => Ok(Self::Md5),
            "password" | "cleartext" => Ok(Self::Password),
            "trust" => Ok(Self::Trust),
            _ => Err("expected `scram-sha-256`, `md5`, `password` or `trust`".into()),
        }
    }
}

impl PgwireConfig {
    /// Whether the listener should run: enabled, and someone can log in (a configured user,
    /// anyone with `trust`, or API keys).
    pub fn active(&self) -> bool {
        self.enabled && (!self.users.is_empty() || self.auth == PgwireAuth::Trust || self.api_keys)
    }

    /// Adds `name` with `password`, replacing an account of the same name.
    pub fn set_user(&mut self, name: String, password: String) {
        self.users.retain(|u| u.name != name);
        self.users.push(PgwireUser {
            name,
            password,
            tenant: None,
            role: read_role(),
        });
    }

    /// Checks rules serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.auth == PgwireAuth::Trust && !self.allow_trust {
            return Err("pgwire.auth = \"trust\" needs pgwire.allow_trust = true (local development only)".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("pgwire.tls_cert and pgwire.tls_key must be set together".into());
        }
        if self.users.iter().any(|u| u.name.is_empty()) {
            return Err("pgwire.users: a user name is empty".into());
        }
        for u in &self.users {
            if u.role == crate::auth::Role::Ingest {
                return Err(format!(
                    "pgwire user `{}`: role `ingest` cannot run SQL; use `read` or `admin`",
                    u.name
                ));
            }
            if u.role == crate::auth::Role::Admin && u.tenant.is_some() {
                return Err(format!(
                    "pgwire user `{}`: an admin login acts on every tenant; bind `read` logins to a tenant",
                    u.name
                ));
            }
        }
        Ok(())
    }
}
