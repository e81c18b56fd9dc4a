//! `analytics-hub keys create|list|revoke`: API keys in the data directory's key file, or in
//! PostgreSQL when configured. The running services pick changes up within a second.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::keys::KeyStore;
use super::{AuthError, Role};

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create(CreateArgs),
    /// List the keys (names, roles, tenants, expiry; never the keys).
    List(DirArgs),
    /// Revoke a key by name.
    Revoke {
        /// The key's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        dir: DirArgs,
    },
}

impl KeysCommand {
    /// The `--data-dir` given, if any.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        match self {
            Self::Create(a) => a.dir.data_dir.as_deref(),
            Self::List(d) | Self::Revoke { dir: d, .. } => d.data_dir.as_deref(),
        }
    }
}

/// Where the key file is.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// Data directory of the Hub (default: `storage.data_dir` of the configuration); not used
    /// when keys are kept in PostgreSQL.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `keys create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique name (shown in logs and the audit trail).
    #[arg(long)]
    pub name: String,
    /// `read` (SQL, GET routes), `ingest` (POST events) or `admin` (everything).
    #[arg(long)]
    pub role: Role,
    /// Bind the key to a tenant: it reads and writes that tenant's rows only.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Lifetime, e.g. `90d`, `12h`, `30m` (default: no expiry).
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<Duration>,
    #[command(flatten)]
    pub dir: DirArgs,
}

pub use crate::config::duration::parse_duration;

fn rfc3339(us: i64) -> String {
    crate::event::time::rfc3339(us)
}

/// Runs a `keys` subcommand against `store`.
pub async fn run(command: KeysCommand, store: &KeyStore) -> Result<String, AuthError> {
    let now = crate::event::time::now_micros();
    match command {
        KeysCommand::Create(args) => {
            let spec = super::keys::KeySpec {
                name: &args.name,
                role: args.role,
                tenant: args.tenant.as_deref(),
                expires_in: args.expires,
            };
            let (key, record) = store.create(spec, now).await?;
            let mut out = format!("{key}\n");
            out.push_str(&format!(
                "# key `{}` (role {}{}{}) in {} — shown once; send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`\n",
                record.name,
                record.role,
                record.tenant.as_deref().map(|t| format!(", tenant {t}")).unwrap_or_default(),
                record.expires_us.map(|e| format!(", expires {}", rfc3339(e))).unwrap_or_default(),
                store.describe(),
            ));
            Ok(out)
        }
        KeysCommand::List(_) => {
            let mut out = String::from("name\trole\ttenant\tcreated\texpires\tstate\n");
            for k in store.list().await? {
                let state = match (k.revoked_us, k.expires_us) {
                    (Some(_), _) => "revoked",
                    (None, Some(e)) if e <= now => "expired",
                    _ => "active",
                };
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{state}\n",
                    k.name,
                    k.role,
                    k.tenant.as_deref().unwrap_or("-"),
                    rfc3339(k.created_us),
                    k.expires_us.map_or_else(|| "never".to_string(), rfc3339),
                ));
            }
            Ok(out)
        }
        KeysCommand::Revoke { name, .. } => {
            let record = store.revoke(&name, now).await?;
            Ok(format!(
                "revoked `{}`; running services refuse it within a second\n",
                record.name
            ))
        }
    }
}
