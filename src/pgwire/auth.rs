//! Who may connect: users and passwords from `[pgwire]`, checked with SCRAM-SHA-256, MD5 or a
//! cleartext password by pgwire's own startup handlers, or no check at all when `trust` is
//! explicitly allowed. A login whose user is not configured may present an API key as its
//! password (the user name is the key's name): only the key's SHA-256 is stored, so the key
//! travels as a cleartext password, accepted over TLS or from a loopback client only.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::md5pass::{Md5PasswordAuthStartupHandler, hash_md5_password};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, ScramAuth, gen_salted_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, ConnectionManager, METADATA_USER, PgWireConnectionState,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::config::{PgwireAuth, PgwireConfig};

/// Checks an API key presented as a password: the key's principal, or why not.
pub type KeyVerifier = Arc<dyn Fn(&str) -> Result<crate::auth::Principal, crate::auth::AuthError> + Send + Sync>;

/// Connection metadata naming the tenant of an API-key login (never taken from the client:
/// startup parameters of that name are removed).
pub const METADATA_KEY_TENANT: &str = "hub.api_key_tenant";

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

/// The configured method's handler of one connection. SCRAM keeps per-connection state, so
/// one is built for every connection.
enum Method {
    /// SCRAM-SHA-256.
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
    /// MD5 challenge-response.
    Md5(Box<Md5PasswordAuthStartupHandler<UserStore, DefaultServerParameterProvider>>),
    /// Cleartext password.
    Cleartext(Box<CleartextPasswordAuthStartupHandler<UserStore, DefaultServerParameterProvider>>),
    /// No authentication.
    Trust(TrustStartup),
}

/// The startup (authentication) handler of one connection: the configured method for
/// configured users, an API key as a cleartext password for the others (when keys are on).
pub struct Startup {
    method: Method,
    users: UserStore,
    keys: Option<KeyVerifier>,
    manager: Arc<ConnectionManager>,
    key_login: std::sync::atomic::AtomicBool,
}

/// An API key travels as a cleartext password: only over TLS or from the same machine.
fn key_login_allowed(secure: bool, peer: std::net::SocketAddr) -> bool {
    secure || peer.ip().is_loopback()
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message)))
}

impl Startup {
    /// The handler for one new connection; logins register with `manager` so cancel requests
    /// find their connection. `keys` lets users that are not configured log in with an API key.
    pub fn for_connection(users: &UserStore, manager: &Arc<ConnectionManager>, keys: Option<KeyVerifier>) -> Self {
        let params = Arc::new(server_parameters());
        let method = match users.method {
            PgwireAuth::ScramSha256 => {
                let mut scram = ScramAuth::new(Arc::new(users.clone()));
                scram.set_iterations(SCRAM_ITERATIONS);
                Method::Scram(Box::new(
                    SASLAuthStartupHandler::new(params)
                        .with_scram(scram)
                        .with_connection_manager(Arc::clone(manager)),
                ))
            }
            PgwireAuth::Md5 => Method::Md5(Box::new(
                Md5PasswordAuthStartupHandler::new(Arc::new(users.clone()), params)
                    .with_connection_manager(Arc::clone(manager)),
            )),
            PgwireAuth::Password => Method::Cleartext(Box::new(
                CleartextPasswordAuthStartupHandler::new(users.clone(), server_parameters())
                    .with_connection_manager(Arc::clone(manager)),
            )),
            PgwireAuth::Trust => Method::Trust(TrustStartup {
                manager: Arc::clone(manager),
            }),
        };
        Self {
            keys: keys.filter(|_| users.method != PgwireAuth::Trust),
            method,
            users: users.clone(),
            manager: Arc::clone(manager),
            key_login: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn configured<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &self.method {
            Method::Scram(h) => h.on_startup(client, message).await,
            Method::Md5(h) => h.on_startup(client, message).await,
            Method::Cleartext(h) => h.on_startup(client, message).await,
            Method::Trust(h) => h.on_startup(client, message).await,
        }
    }

    /// The password message of an API-key login.
    async fn key_password<C>(
        &self,
        client: &mut C,
        keys: &KeyVerifier,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::PasswordMessageFamily(pwd) = message else {
            return Ok(());
        };
        let password = pwd.into_password()?.password;
        let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
        if !key_login_allowed(client.is_secure(), client.socket_addr()) {
            return Err(fatal(
                "28000",
                "an API key is sent as a cleartext password: connect with TLS (sslmode=require)".into(),
            ));
        }
        let principal = match keys(&password) {
            Ok(p) if p.name == user => p,
            _ => return Err(PgWireError::InvalidPassword(user)),
        };
        if !principal.role.allows(crate::auth::Access::Read) {
            return Err(fatal(
                "28000",
                format!(
                    "the `{}` role may not run SQL; it needs `read` or `admin`",
                    principal.role
                ),
            ));
        }
        if let Some(t) = &principal.tenant {
            client.metadata_mut().insert(METADATA_KEY_TENANT.to_string(), t.clone());
        }
        let (pid, secret) = RandomPidSecretKeyGenerator::default().generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let (handle, guard) = self.manager.register(pid, secret);
        client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        tracing::info!(user, tenant = principal.tenant.as_deref(), client = %client.socket_addr(), "pgwire: API-key login");
        pgwire::api::auth::finish_authentication(client, &server_parameters()).await
    }

    async fn on_startup_inner<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use std::sync::atomic::Ordering;
        match (&self.keys, message) {
            (Some(keys), message) if self.key_login.load(Ordering::Acquire) => {
                self.key_password(client, keys, message).await
            }
            (Some(_), PgWireFrontendMessage::Startup(startup))
                if !startup
                    .parameters
                    .get(METADATA_USER)
                    .is_some_and(|u| self.users.knows(u)) =>
            {
                pgwire::api::auth::protocol_negotiation(client, &startup).await?;
                pgwire::api::auth::save_startup_parameters_to_metadata(client, &startup);
                client.metadata_mut().remove(METADATA_KEY_TENANT);
                self.key_login.store(true, Ordering::Release);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword))
                    .await?;
                Ok(())
            }
            (_, message) => {
                let startup = matches!(message, PgWireFrontendMessage::Startup(_));
                let result = self.configured(client, message).await;
                if startup {
                    // A client may not name its own tenant.
                    client.metadata_mut().remove(METADATA_KEY_TENANT);
                }
                result
            }
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
        self.on_startup_inner(client, message).await.map_err(|e| {
            let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
            tracing::info!(user, client = %client.socket_addr(), error = %e, "pgwire: login failed");
            match e {
                // Postgres' wording, with the user name (pgwire leaves it empty for SCRAM)
                PgWireError::InvalidPassword(_) => {
                    fatal("28P01", format!("password authentication failed for user \"{user}\""))
                }
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
                role: crate::auth::Role::Read,
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

    #[test]
    fn api_keys_travel_only_over_tls_or_loopback() {
        let addr = |a: &str| a.parse::<std::net::SocketAddr>().expect("addr");
        assert!(key_login_allowed(false, addr("127.0.0.1:5000")));
        assert!(key_login_allowed(false, addr("[::1]:5000")));
        assert!(!key_login_allowed(false, addr("10.0.0.7:5000")));
        assert!(key_login_allowed(true, addr("10.0.0.7:5000")));
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
