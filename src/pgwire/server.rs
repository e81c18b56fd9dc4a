//! The listener: accepts TCP connections, negotiates TLS when configured, and hands each one
//! to pgwire with datafusion-postgres' session service (simple and extended protocol,
//! pg_catalog, type encoding) behind our authentication and read-only hook.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::{DfSessionService, QueryHook};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use pgwire::error::PgWireError;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::process_socket;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::PgwireError;
use super::auth::{Startup, UserStore};
use super::catalog::wire_context;
use super::config::PgwireConfig;
use super::hooks::ReadOnlyHook;
use super::service::{HubService, STATEMENT_TIMEOUT_KEY};

/// What every connection shares.
struct Shared {
    service: Arc<HubService>,
    users: UserStore,
    keys: Option<super::auth::KeyVerifier>,
    manager: Arc<ConnectionManager>,
    cancel: Arc<DefaultCancelHandler>,
    statement_timeout: Duration,
}

/// The handlers of one connection (its own authentication state, shared everything else).
struct ConnectionHandlers {
    shared: Arc<Shared>,
    startup: Arc<TimeoutStartup>,
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.shared.service)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.shared.service)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.shared.cancel)
    }
}

/// Authentication, then the Hub's query timeout as the connection's default
/// `statement_timeout` (a client may change it with `SET statement_timeout`).
struct TimeoutStartup {
    inner: Startup,
    timeout_ms: String,
}

#[async_trait::async_trait]
impl pgwire::api::auth::StartupHandler for TimeoutStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::PgWireFrontendMessage,
    ) -> pgwire::error::PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<pgwire::messages::PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<pgwire::messages::PgWireBackendMessage>>::Error>,
    {
        if matches!(message, pgwire::messages::PgWireFrontendMessage::Startup(_)) {
            client
                .metadata_mut()
                .insert(STATEMENT_TIMEOUT_KEY.to_string(), self.timeout_ms.clone());
        }
        self.inner.on_startup(client, message).await
    }
}

/// Gives DataFusion's errors Postgres SQLSTATEs instead of `XX000` for everything.
struct SqlStateErrors;

/// The SQLSTATE of a DataFusion error message.
pub fn sqlstate_of(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("parsererror") || m.contains("sql error") || m.contains("sql parser error") {
        "42601"
    } else if m.contains("table") && m.contains("not found") {
        "42P01"
    } else if m.contains("no field named") || m.contains("column") && m.contains("not found") {
        "42703"
    } else if m.contains("invalid function") || m.contains("function") && m.contains("not found") {
        "42883"
    } else if m.contains("resources exhausted") {
        "53200"
    } else if m.contains("internal error") || m.contains("io error") {
        "XX000"
    } else {
        "42000"
    }
}

impl ErrorHandler for SqlStateErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        if let PgWireError::ApiError(e) = error {
            let message = e.to_string();
            let code = sqlstate_of(&message);
            tracing::debug!(client = %client.socket_addr(), code, %message, "pgwire: query failed");
            *error = super::hooks::sql_error(code, message);
        }
    }
}

/// An `ErrorResponse` message: severity FATAL, SQLSTATE `code`, `message`.
fn fatal_error_message(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', message)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap_or(i32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Tells a client over `max_connections` why it is turned away (53300, like Postgres).
async fn refuse_connection(mut socket: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let message = fatal_error_message("53300", "sorry, too many clients already");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = socket.write_all(&message).await;
        let _ = socket.shutdown().await;
    })
    .await;
}

/// A bound, not yet serving, wire listener.
pub struct WireServer {
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    limiter: Option<Arc<Semaphore>>,
}

/// Loads the PEM certificate chain and key into a TLS acceptor.
fn tls_acceptor(config: &PgwireConfig) -> Result<Option<TlsAcceptor>, PgwireError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let server = crate::tls::server_config(cert, key, &[]).map_err(|e| PgwireError::Tls(e.to_string()))?;
    Ok(Some(TlsAcceptor::from(server)))
}

impl WireServer {
    /// Builds the wire session from the HTTP session `http` and binds the configured address.
    pub async fn bind(
        config: &PgwireConfig,
        http: &SessionContext,
        statement_timeout: Duration,
        complexity: crate::query::complexity::ComplexityLimits,
        max_result_bytes: usize,
        cache: Option<Arc<crate::cache::QueryCache>>,
        keys: Option<super::auth::KeyVerifier>,
    ) -> Result<Self, PgwireError> {
        let tls = tls_acceptor(config)?;
        let ctx = Arc::new(wire_context(http).map_err(PgwireError::Session)?);
        // Last: only plain queries that passed the read-only gate reach the cache.
        let wire_cache = cache.map(|c| Arc::new(super::cache::WireCache::new(c, max_result_bytes)));
        let hooks = {
            let wire_cache = wire_cache.clone();
            move || {
                let mut hooks: Vec<Arc<dyn QueryHook>> = vec![
                    Arc::new(ReadOnlyHook),
                    Arc::new(CursorStatementHook),
                    Arc::new(SetShowHook),
                    Arc::new(TransactionStatementHook),
                ];
                if let Some(c) = &wire_cache {
                    hooks.push(Arc::clone(c) as Arc<dyn QueryHook>);
                }
                hooks
            }
        };
        let mut tenant_of_user = std::collections::HashMap::new();
        for user in &config.users {
            if let Some(t) = &user.tenant {
                if !crate::auth::keys::valid_tenant(t) {
                    return Err(PgwireError::Config(format!(
                        "pgwire user `{}`: tenant `{t}`: use 1–64 letters, digits, `_`, `-` or `.`",
                        user.name
                    )));
                }
                tenant_of_user.insert(user.name.clone(), t.clone());
            }
        }
        let http_ctx = http.clone();
        let tenant_hooks = hooks.clone();
        let make: super::service::TenantSessionFactory = Box::new(move |tenant: &str| {
            let ctx = Arc::new(super::catalog::wire_context_for(&http_ctx, Some(tenant))?);
            Ok(Arc::new(DfSessionService::new_with_hooks(ctx, tenant_hooks())))
        });
        let sessions = Arc::new(super::service::Sessions::new(
            Arc::new(DfSessionService::new_with_hooks(Arc::clone(&ctx), hooks())),
            tenant_of_user,
            make,
        ));
        let service = Arc::new(HubService::new(
            sessions,
            complexity,
            max_result_bytes,
            wire_cache.map(|c| (c, Arc::clone(&ctx))),
        ));
        let manager = Arc::new(ConnectionManager::new());
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| PgwireError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            service,
            users: UserStore::new(config),
            keys: keys.filter(|_| config.api_keys),
            cancel: Arc::new(DefaultCancelHandler::new(Arc::clone(&manager))),
            manager,
            statement_timeout,
        });
        let limiter = (config.max_connections > 0).then(|| Arc::new(Semaphore::new(config.max_connections)));
        Ok(Self {
            listener,
            shared,
            tls,
            limiter,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, std::io::Error> {
        self.listener.local_addr()
    }

    /// Whether TLS is offered.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` turns true; a failing connection never stops the listener.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.changed() => break,
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "pgwire: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = match &self.limiter {
                Some(l) => match Arc::clone(l).try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        tracing::warn!(%peer, "pgwire: connection refused, max_connections reached");
                        tokio::spawn(refuse_connection(socket));
                        continue;
                    }
                },
                None => None,
            };
            let handlers = ConnectionHandlers {
                startup: Arc::new(TimeoutStartup {
                    inner: Startup::for_connection(&self.shared.users, &self.shared.manager, self.shared.keys.clone()),
                    timeout_ms: self.shared.statement_timeout.as_millis().to_string(),
                }),
                shared: Arc::clone(&self.shared),
            };
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = process_socket(socket, tls, handlers).await {
                    tracing::debug!(%peer, error = %e, "pgwire: connection ended with an error");
                }
            });
        }
        tracing::info!("pgwire: listener stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_message_is_a_postgres_error_response() {
        let m = fatal_error_message("53300", "x");
        assert_eq!(m[0], b'E');
        assert_eq!(i32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize, m.len() - 1);
        assert!(m.ends_with(b"Mx\0\0"));
    }

    #[test]
    fn datafusion_errors_get_sqlstates() {
        assert_eq!(
            sqlstate_of("SQL error: ParserError(\"Expected: an SQL statement\")"),
            "42601"
        );
        assert_eq!(
            sqlstate_of("Error during planning: table 'datafusion.public.nope' not found"),
            "42P01"
        );
        assert_eq!(sqlstate_of("Schema error: No field named nope."), "42703");
        assert_eq!(sqlstate_of("Error during planning: Invalid function 'nope'."), "42883");
        assert_eq!(sqlstate_of("Execution error: division by zero"), "42000");
    }
}
