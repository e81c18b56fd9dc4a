//! Who may connect: users and passwords from `[pgwire]`, checked with SCRAM-SHA-256, MD5 or a
//! cleartext password by pgwire's own startup handlers, or no check at all when `trust` is
//! explicitly allowed.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::md5pass::{Md5PasswordAuthStartupHandler, hash_md5_password};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, ScramAuth, gen_salted_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::config::{PgwireAuth, PgwireConfig};

/// The server version clients see (`server_version`); Grafana and drivers read it.
pub const SERVER_VERSION: &str = "16.6";

/// Passwords of the configured users, hashed the way the configured method needs.
#[derive(Debug, Clone)]
pub struct UserStore {
    method: PgwireAuth,
    passwords: Arc<HashMap<String, String>>,
}

impl UserStore {
    /// The users of `config`.
    pub fn new(config: &PgwireConfig) -> Self {
        Self {
            method: config.auth,
            passwords: Arc::new(
                config
                    .users
                    .iter()
                    .map(|u| (u.name.clone(), u.password.clone()))
                    .collect(),
            ),
        }
    }

    /// Whether `user` is configured (only used for logging).
    pub fn knows(&self, user: &str) -> bool {
        self.passwords.contains_key(user)
    }
}

/// Fresh random bytes for salts (UUID v4 comes from the OS random source).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let id = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&id.as_bytes()[..chunk.len()]);
    }
    out
}

#[async_trait]
impl AuthSource for UserStore {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        // An unknown user gets a random password: the exchange then fails exactly like a wrong
        // password (28P01), so user names cannot be probed.
        let password = match self.passwords.get(user) {
            Some(p) => p.clone(),
            None => {
                tracing::info!(user, client = login.host(), "pgwire: login for an unknown user");
                uuid::Uuid::new_v4().to_string()
            }
        };
        Ok(match self.method {
            PgwireAuth::ScramSha256 => {
                let salt = random_bytes::<16>().to_vec();
                let salted = gen_salted_password(&password, &salt, SCRAM_ITERATIONS);
                Password::new(Some(salt), salted)
            }
            PgwireAuth::Md5 => {
                let salt = random_bytes::<4>().to_vec();
                let hashed = hash_md5_password(user, &password, &salt);
                Password::new(Some(salt), hashed.into_bytes())
            }
            PgwireAuth::Password | PgwireAuth::Trust => Password::new(None, password.into_bytes()),
        })
    }
}

/// Server parameters sent after login (`server_version` as a plain Postgres version).
pub fn server_parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = SERVER_VERSION.to_string();
    p.is_superuser = false;
    p.default_transaction_read_only = true;
    p
}

/// No password: for `auth = "trust"` with `allow_trust = true` only.
pub struct TrustStartup {
    manager: Arc<ConnectionManager>,
}

impl NoopStartupHandler for TrustStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.manager))
    }
}

/// The startup (authentication) handler of one connection. SCRAM keeps per-connection state,
/// so one is built for every connection.
pub enum Startup {
    /// SCRAM-SHA-256.
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
    /// MD5 challenge-response.
    Md5(Box<Md5PasswordAuthStartupHandler<UserStore, DefaultServerParameterProvider>>),
    /// Cleartext password.
    Cleartext(Box<CleartextPasswordAuthStartupHandler<UserStore, DefaultServerParameterProvider>>),
    /// No authentication.
    Trust(TrustStartup),
}

impl Startup {
    /// The handler for one new connection; logins register with `manager` so cancel requests
    /// find their connection.
    pub fn for_connection(users: &UserStore, manager: &Arc<ConnectionManager>) -> Self {
        let params = Arc::new(server_parameters());
        match users.method {
            PgwireAuth::ScramSha256 => {
                let mut scram = ScramAuth::new(Arc::new(users.clone()));
                scram.set_iterations(SCRAM_ITERATIONS);
                Self::Scram(Box::new(
                    SASLAuthStartupHandler::new(params)
                        .with_scram(scram)
                        .with_connection_manager(Arc::clone(manager)),
                ))
            }
            PgwireAuth::Md5 => Self::Md5(Box::new(
                Md5PasswordAuthStartupHandler::new(Arc::new(users.clone()), params)
                    .with_connection_manager(Arc::clone(manager)),
            )),
            PgwireAuth::Password => Self::Cleartext(Box::new(
                CleartextPasswordAuthStartupHandler::new(users.clone(), server_parameters())
                    .with_connection_manager(Arc::clone(manager)),
            )),
            PgwireAuth::Trust => Self::Trust(TrustStartup {
                manager: Arc::clone(manager),
            }),
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = match self {
            Self::Scram(h) => h.on_startup(client, message).await,
            Self::Md5(h) => h.on_startup(client, message).await,
            Self::Cleartext(h) => h.on_startup(client, message).await,
            Self::Trust(h) => h.on_startup(client, message).await,
        };
        result.map_err(|e| {
            let user = client
                .metadata()
                .get(pgwire::api::METADATA_USER)
                .cloned()
                .unwrap_or_default();
            tracing::info!(user, client = %client.socket_addr(), error = %e, "pgwire: login failed");
            match e {
                // Postgres' wording, with the user name (pgwire leaves it empty for SCRAM)
                PgWireError::InvalidPassword(_) => PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".into(),
                    "28P01".into(),
                    format!("password authentication failed for user \"{user}\""),
                ))),
                other => other,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgwire::config::PgwireUser;

    fn store(method: PgwireAuth) -> UserStore {
        UserStore::new(&PgwireConfig {
            auth: method,
            users: vec![PgwireUser {
                name: "hub".into(),
                password: "secret".into(),
                tenant: None,
            }],
            ..PgwireConfig::default()
        })
    }

    #[tokio::test]
    async fn passwords_are_hashed_per_method() {
        let login = LoginInfo::new(Some("hub"), None, "127.0.0.1".into());
        let p = store(PgwireAuth::Password)
            .get_password(&login)
            .await
            .expect("password");
        assert_eq!(p.password(), b"secret");
        let p = store(PgwireAuth::Md5).get_password(&login).await.expect("md5");
        let salt = p.salt().expect("salt").to_vec();
        assert_eq!(p.password(), hash_md5_password("hub", "secret", &salt).as_bytes());
        let p = store(PgwireAuth::ScramSha256)
            .get_password(&login)
            .await
            .expect("scram");
        let salt = p.salt().expect("salt").to_vec();
        assert_eq!(salt.len(), 16);
        assert_eq!(
            p.password(),
            gen_salted_password("secret", &salt, SCRAM_ITERATIONS).as_slice()
        );
    }

    #[tokio::test]
    async fn unknown_users_get_an_unguessable_password() {
        let s = store(PgwireAuth::Password);
        assert!(s.knows("hub") && !s.knows("root"));
        let login = LoginInfo::new(Some("root"), None, "127.0.0.1".into());
        let a = s.get_password(&login).await.expect("a");
        let b = s.get_password(&login).await.expect("b");
        assert_ne!(a.password(), b.password());
        assert_ne!(a.password(), b"");
    }
}
