//! API keys: created once by `analytics-hub keys create`, stored hashed in
//! `<data dir>/auth/keys.json`, re-read by the running service when the file changes.
//!
//! A key is `lah_` + 256 random bits (base64url). Only its SHA-256 is stored: with that much
//! entropy a slow hash (Argon2) adds nothing against guessing, and a lookup stays one hash
//! and one map probe per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuthError;
use super::principal::{Principal, Role};

/// Prefix of every key (lets secret scanners recognise a leaked one).
pub const PREFIX: &str = "lah_";

/// How often the running service looks at the file for changes.
const RECHECK: Duration = Duration::from_secs(1);

/// A stored key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Tenant it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// SHA-256 of the key, hex.
    pub sha256: String,
    /// Creation (µs since the epoch).
    pub created_us: i64,
    /// Expiry (µs since the epoch), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_us: Option<i64>,
    /// Revocation (µs since the epoch), if revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_us: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyRecord>,
}

fn hash_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A valid tenant name: 1–64 of letters, digits, `_`, `-`, `.`.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// What a new key is to be.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec<'a> {
    /// Unique name among active keys.
    pub name: &'a str,
    /// Role.
    pub role: Role,
    /// Tenant it is bound to.
    pub tenant: Option<&'a str>,
    /// Lifetime (none: no expiry).
    pub expires_in: Option<Duration>,
}

/// A new key for `spec` (checked: name, tenant, role) and its record; not yet stored.
pub fn new_key(spec: KeySpec<'_>, now_us: i64) -> Result<(String, KeyRecord), AuthError> {
    let KeySpec {
        name,
        role,
        tenant,
        expires_in,
    } = spec;
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(AuthError::InvalidRequest(format!(
            "key name `{name}`: use 1–64 letters, digits, `_`, `-` or `.`"
        )));
    }
    if role == Role::Admin && tenant.is_some() {
        return Err(AuthError::InvalidRequest(
            "admin keys act on every tenant (continuous queries, exports); bind `read` or `ingest` keys to a tenant"
                .into(),
        ));
    }
    if let Some(t) = tenant
        && !valid_tenant(t)
    {
        return Err(AuthError::InvalidRequest(format!(
            "tenant `{t}`: use 1–64 letters, digits, `_`, `-` or `.`"
        )));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| AuthError::Random(e.to_string()))?;
    let key = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let record = KeyRecord {
        name: name.to_string(),
        role,
        tenant: tenant.map(str::to_string),
        sha256: hash_hex(&key),
        created_us: now_us,
        expires_us: expires_in.map(|d| now_us.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))),
        revoked_us: None,
    };
    Ok((key, record))
}

/// Where keys are kept.
#[derive(Debug, Clone)]
pub enum KeyStore {
    /// `<data dir>/auth/keys.json` (standalone).
    File(KeyFileStore),
    /// The `hub_api_keys` table (shared by every instance).
    #[cfg(feature = "postgres")]
    Postgres(super::keys_pg::PgKeyStore),
}

impl KeyStore {
    /// Creates a key; returns it (shown once) and its record.
    pub async fn create(&self, spec: KeySpec<'_>, now_us: i64) -> Result<(String, KeyRecord), AuthError> {
        match self {
            Self::File(f) => f.create(spec, now_us),
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.create(spec, now_us).await,
        }
    }

    /// Every key record.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, AuthError> {
        match self {
            Self::File(f) => f.list(),
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.list().await,
        }
    }

    /// Revokes the active key named `name`.
    pub async fn revoke(&self, name: &str, now_us: i64) -> Result<KeyRecord, AuthError> {
        match self {
            Self::File(f) => f.revoke(name, now_us),
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.revoke(name, now_us).await,
        }
    }

    /// The key file, when keys are kept in one.
    pub fn file(&self) -> Option<&KeyFileStore> {
        match self {
            Self::File(f) => Some(f),
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => None,
        }
    }

    /// Where the keys are, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::File(f) => format!("the key file {}", f.path().display()),
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "PostgreSQL table hub_api_keys".to_string(),
        }
    }
}

/// The key file, read and written by the CLI.
#[derive(Debug, Clone)]
pub struct KeyFileStore {
    path: PathBuf,
}

impl KeyFileStore {
    /// The key file of `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("auth").join("keys.json"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<KeyFile, AuthError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AuthError::KeyFile {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(source) => Err(AuthError::KeyFile {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write(&self, file: &KeyFile) -> Result<(), AuthError> {
        crate::storage::json_file::write(&self.path, file, crate::storage::json_file::Access::OwnerOnly).map_err(
            |source| AuthError::KeyFile {
                path: self.path.clone(),
                source,
            },
        )
    }

    /// Creates a key; returns it (shown once) and its record.
    pub fn create(&self, spec: KeySpec<'_>, now_us: i64) -> Result<(String, KeyRecord), AuthError> {
        let (key, record) = new_key(spec, now_us)?;
        let name = spec.name;
        let mut file = self.read()?;
        if file.keys.iter().any(|k| k.name == name && k.revoked_us.is_none()) {
            return Err(AuthError::InvalidRequest(format!(
                "a key named `{name}` exists; revoke it first or pick another name"
            )));
        }
        file.keys.retain(|k| k.name != name);
        file.keys.push(record.clone());
        self.write(&file)?;
        Ok((key, record))
    }

    /// Every key record.
    pub fn list(&self) -> Result<Vec<KeyRecord>, AuthError> {
        Ok(self.read()?.keys)
    }

    /// Revokes the key named `name`.
    pub fn revoke(&self, name: &str, now_us: i64) -> Result<KeyRecord, AuthError> {
        let mut file = self.read()?;
        let record = file
            .keys
            .iter_mut()
            .find(|k| k.name == name && k.revoked_us.is_none())
            .ok_or_else(|| AuthError::InvalidRequest(format!("no active key named `{name}`")))?;
        record.revoked_us = Some(now_us);
        let out = record.clone();
        self.write(&file)?;
        Ok(out)
    }
}

#[derive(Debug, Default)]
struct Loaded {
    by_hash: HashMap<String, KeyRecord>,
    modified: Option<SystemTime>,
    len: u64,
}

/// The keys as the running service sees them. From a key file: re-read at most once a second
/// when the file changed (a key created or revoked by the CLI counts within about a second).
/// From PostgreSQL: re-read every second by [`KeyRing::watch`]; while the database is down the
/// last set read stays in force.
#[derive(Debug, Clone)]
pub struct KeyRing {
    store: KeyStore,
    loaded: Arc<RwLock<Arc<Loaded>>>,
    checked: Arc<Mutex<Option<Instant>>>,
}

impl KeyRing {
    /// A ring over `store`; a key file is read now, a database by [`KeyRing::reload_now`].
    pub fn open(store: KeyStore) -> Result<Self, AuthError> {
        let ring = Self {
            store,
            loaded: Arc::new(RwLock::new(Arc::new(Loaded::default()))),
            checked: Arc::new(Mutex::new(None)),
        };
        if let Some(file) = ring.store.file() {
            ring.reload_file(file)?;
        }
        Ok(ring)
    }

    /// Where the keys are kept.
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Re-reads the keys now (after a change made through this process).
    pub async fn reload_now(&self) -> Result<(), AuthError> {
        match &self.store {
            KeyStore::File(file) => self.reload_file(file),
            #[cfg(feature = "postgres")]
            KeyStore::Postgres(db) => {
                let records = db.list().await?;
                self.replace(records, None, 0);
                Ok(())
            }
        }
    }

    /// Re-reads the table every second until `shutdown` (a key file needs no watcher).
    pub async fn watch(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if matches!(self.store, KeyStore::File(_)) {
            return;
        }
        let mut failing = false;
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match self.reload_now().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("API keys read from PostgreSQL again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(error = %e, "API keys not re-read from PostgreSQL; the last set read stays in force");
                }
                Err(_) => {}
            }
        }
    }

    fn replace(&self, records: Vec<KeyRecord>, modified: Option<SystemTime>, len: u64) {
        let by_hash = records.into_iter().map(|k| (k.sha256.clone(), k)).collect();
        *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(Loaded { by_hash, modified, len });
    }

    fn reload_file(&self, file: &KeyFileStore) -> Result<(), AuthError> {
        let meta = std::fs::metadata(file.path()).ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok());
        let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
        let current = self.snapshot();
        if current.modified == modified && current.len == len && modified.is_some() {
            return Ok(());
        }
        self.replace(file.list()?, modified, len);
        Ok(())
    }

    fn snapshot(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Re-reads the key file if a second has passed since the last look.
    fn refresh(&self, now: Instant) {
        let Some(file) = self.store.file() else {
            return;
        };
        {
            let mut checked = self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if checked.is_some_and(|t| now.saturating_duration_since(t) < RECHECK) {
                return;
            }
            *checked = Some(now);
        }
        if let Err(e) = self.reload_file(file) {
            tracing::error!(error = %e, "API keys not re-read; the previous set stays in force");
        }
    }

    /// Any keys at all (the service warns when authentication is required and there are none).
    pub fn is_empty(&self) -> bool {
        self.snapshot().by_hash.is_empty()
    }

    /// The principal of `key`, if it is a known, unexpired, unrevoked key.
    pub fn verify(&self, key: &str, now: Instant, now_us: i64) -> Result<Principal, AuthError> {
        if !key.starts_with(PREFIX) {
            return Err(AuthError::InvalidCredentials);
        }
        self.refresh(now);
        let loaded = self.snapshot();
        let record = loaded
            .by_hash
            .get(&hash_hex(key))
            .ok_or(AuthError::InvalidCredentials)?;
        if record.revoked_us.is_some() || record.expires_us.is_some_and(|e| e <= now_us) {
            return Err(AuthError::InvalidCredentials);
        }
        Ok(Principal {
            name: record.name.clone(),
            role: record.role,
            tenant: record.tenant.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_verify_until_revoked_or_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = KeyFileStore::in_data_dir(dir.path());
        let spec = |role| KeySpec {
            name: "dash",
            role,
            tenant: Some("acme"),
            expires_in: Some(Duration::from_secs(60)),
        };
        let (key, record) = store.create(spec(Role::Read), 1_000_000).expect("create");
        assert!(key.starts_with(PREFIX) && key.len() == PREFIX.len() + 43, "{key}");
        assert!(
            !std::fs::read_to_string(store.path()).expect("file").contains(&key),
            "only the hash is stored"
        );
        assert_eq!(record.expires_us, Some(61_000_000));
        let ring = KeyRing::open(KeyStore::File(store.clone())).expect("ring");
        let t0 = Instant::now();
        let p = ring.verify(&key, t0, 2_000_000).expect("valid");
        assert_eq!((p.role, p.tenant.as_deref()), (Role::Read, Some("acme")));
        assert!(
            matches!(ring.verify(&key, t0, 61_000_000), Err(AuthError::InvalidCredentials)),
            "expired"
        );
        assert!(matches!(
            ring.verify("lah_nope", t0, 2_000_000),
            Err(AuthError::InvalidCredentials)
        ));
        assert!(store.create(spec(Role::Read), 3).is_err(), "names are unique");
        store.revoke("dash", 5).expect("revoke");
        // Seen after the recheck interval, not before.
        assert!(ring.verify(&key, t0 + Duration::from_millis(10), 6).is_ok());
        assert!(matches!(
            ring.verify(&key, t0 + RECHECK + Duration::from_millis(10), 6),
            Err(AuthError::InvalidCredentials)
        ));
    }
}
