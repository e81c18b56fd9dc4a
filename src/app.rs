//! Wiring: builds the components from the configuration and runs the service until a signal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::QueryCache;
use crate::config::Config;
use crate::generate::{Generator, GeneratorConfig};
use crate::http::{AppState, AppStateInner, router};
use crate::ingest::{BodyShape, Ingest, Pipeline, StoreIngest};
use crate::metrics::Metrics;
use crate::query::QueryEngine;
use crate::storage::EventStore;
use crate::storage::local::LocalStore;
use crate::storage::versions::TableVersions;
use crate::stream::StreamEngine;
use crate::stream::engine::EngineDeps;
use crate::stream::shipped::shipped_queries;

/// Errors that stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Metrics registry setup failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The store could not be opened or flushed.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The SQL session could not be built.
    #[error("query engine: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// Continuous queries could not be started.
    #[error("continuous queries: {0}")]
    Stream(#[from] crate::stream::CqError),
    /// The alert engine could not start (unreadable rules or transition log).
    #[error("alerts: {0}")]
    Alerts(#[from] crate::alerts::AlertsError),
    /// Shared history could not start (catalog, object store).
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The result cache's configuration is unusable (e.g. a malformed Redis URL).
    #[error("cache: {0}")]
    Cache(#[from] crate::cache::CacheError),
    /// The rollup sink (PostgreSQL) could not be set up.
    #[error("sink: {0}")]
    Sink(#[from] crate::sinks::SinkError),
    /// A source (Kafka) could not be set up.
    #[error("source: {0}")]
    Source(#[from] crate::sources::SourceError),
    /// The Postgres-wire endpoint could not start.
    #[cfg(feature = "pgwire")]
    #[error(transparent)]
    Pgwire(#[from] crate::pgwire::PgwireError),
    /// The snapshot tables could not be set up.
    #[error("snapshots: {0}")]
    Snapshots(#[from] crate::exports::ExportError),
    /// Authentication could not be set up (unreadable key file).
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The HTTPS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Binding or serving HTTP failed.
    #[error("http server on {addr}: {source}")]
    Http {
        /// Listen address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Where API keys live: PostgreSQL (`hub_api_keys`) when configured (`auth.key_store = auto`
/// with `postgres.url`, or `postgres`), else the key file of `data_dir`. With PostgreSQL the
/// table is created by the migrations (applied here when `migrate_on_start`) and the keys of an
/// existing key file are copied in once, so an upgrade keeps working keys.
pub async fn key_store(
    config: &Config,
    data_dir: &std::path::Path,
) -> Result<crate::auth::keys::KeyStore, crate::auth::AuthError> {
    use crate::auth::keys::{KeyFileStore, KeyStore};
    use crate::auth::{AuthError, KeyStoreKind};
    let file = KeyFileStore::in_data_dir(data_dir);
    let url = match (config.auth.key_store, config.postgres.url.as_deref()) {
        (KeyStoreKind::File, _) | (KeyStoreKind::Auto, None) => return Ok(KeyStore::File(file)),
        (KeyStoreKind::Postgres, None) => {
            return Err(AuthError::InvalidRequest(
                "auth.key_store = \"postgres\" needs postgres.url (or DATABASE_URL)".into(),
            ));
        }
        (_, Some(url)) => url,
    };
    postgres_key_store(url, &config.postgres, file).await
}

/// The `hub_api_keys` table, migrated when `migrate_on_start`, with the key file's keys copied in.
#[cfg(feature = "postgres")]
async fn postgres_key_store(
    url: &str,
    postgres: &crate::sinks::postgres::PostgresConfig,
    file: crate::auth::keys::KeyFileStore,
) -> Result<crate::auth::keys::KeyStore, crate::auth::AuthError> {
    let db = crate::auth::keys_pg::PgKeyStore::connect_lazy(url)?;
    if postgres.migrate_on_start {
        let migrated = async {
            if postgres.create_database {
                crate::sinks::postgres::migrate::create_database(url).await?;
            }
            crate::sinks::postgres::migrate::run(db.pool()).await
        };
        if let Err(e) = migrated.await {
            tracing::warn!(error = %e, "API keys: migrations not applied yet (PostgreSQL unreachable?); keys are read once it is");
        }
    }
    let local = file.list()?;
    if !local.is_empty() {
        match db.import(&local).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(keys = n, from = %file.path().display(), "API keys copied from the key file into PostgreSQL")
            }
            Err(e) => tracing::warn!(error = %e, "API keys of the key file not copied into PostgreSQL yet"),
        }
    }
    Ok(crate::auth::keys::KeyStore::Postgres(db))
}

/// Refused earlier by the configuration check (`auth.key_store = "postgres"` or `postgres.url`
/// in a build without the `postgres` feature).
#[cfg(not(feature = "postgres"))]
async fn postgres_key_store(
    _url: &str,
    _postgres: &crate::sinks::postgres::PostgresConfig,
    _file: crate::auth::keys::KeyFileStore,
) -> Result<crate::auth::keys::KeyStore, crate::auth::AuthError> {
    Err(crate::auth::AuthError::InvalidRequest(
        "API keys in PostgreSQL need the `postgres` cargo feature".into(),
    ))
}

/// The Postgres wire endpoint, when configured (`[pgwire]`).
#[cfg(feature = "pgwire")]
async fn start_wire(
    config: &Config,
    state: &AppState,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, AppError> {
    if !config.pgwire.active() {
        if config.pgwire.enabled {
            tracing::info!(
                "Postgres wire endpoint off: no [pgwire] users configured (set PGWIRE_USER and PGWIRE_PASSWORD)"
            );
        }
        return Ok(None);
    }
    let server = crate::pgwire::WireServer::bind(
        &config.pgwire,
        state.engine.context(),
        Duration::from_secs(config.query.timeout_secs.max(1)),
        state.engine.complexity(),
        state.engine.max_result_bytes(),
        state.cache.clone(),
        Some(wire_key_verifier(state.auth.clone())),
    )
    .await?;
    let bound = server.local_addr().map_err(|source| crate::pgwire::PgwireError::Bind {
        addr: format!("{}:{}", config.pgwire.host, config.pgwire.port),
        source,
    })?;
    tracing::info!(%bound, auth = ?config.pgwire.auth, tls = server.tls(), users = config.pgwire.users.len(), "Postgres wire endpoint listening");
    Ok(Some(tokio::spawn(server.run(shutdown))))
}

/// This build has no wire endpoint (`pgwire.enabled` is refused by the configuration check).
#[cfg(not(feature = "pgwire"))]
async fn start_wire(
    _config: &Config,
    _state: &AppState,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, AppError> {
    Ok(None)
}

/// API keys (not JWTs) as wire passwords.
#[cfg(feature = "pgwire")]
fn wire_key_verifier(auth: crate::auth::Authenticator) -> crate::pgwire::auth::KeyVerifier {
    Arc::new(move |key: &str| {
        if key.starts_with(crate::auth::keys::PREFIX) {
            auth.authenticate(Some(key))
        } else {
            Err(crate::auth::AuthError::InvalidCredentials)
        }
    })
}

/// HTTP events produced to Kafka (`kafka.produce_http`) instead of stored here.
#[cfg(feature = "kafka")]
fn kafka_ingest(config: &crate::sources::kafka::KafkaConfig) -> Result<Arc<dyn Ingest>, AppError> {
    let ingest = crate::sources::kafka::producer::KafkaIngest::from_config(config)
        .map_err(crate::sources::SourceError::Config)?;
    Ok(Arc::new(ingest))
}

/// Refused by the configuration check (brokers set in a build without the `kafka` feature).
#[cfg(not(feature = "kafka"))]
fn kafka_ingest(_config: &crate::sources::kafka::KafkaConfig) -> Result<Arc<dyn Ingest>, AppError> {
    Err(crate::sources::SourceError::Config("this build has no Kafka support (cargo feature `kafka`)".into()).into())
}

/// The authenticator: required when a listener binds a non-loopback address (`auth.mode = auto`).
fn build_auth(
    config: &Config,
    key_store: crate::auth::keys::KeyStore,
) -> Result<crate::auth::Authenticator, crate::auth::AuthError> {
    let mut public = Vec::new();
    if !crate::auth::is_loopback(&config.http.host) {
        public.push(format!("http {}:{}", config.http.host, config.http.port));
    }
    if config.pgwire.active() && !crate::auth::is_loopback(&config.pgwire.host) {
        public.push(format!("pgwire {}:{}", config.pgwire.host, config.pgwire.port));
    }
    crate::auth::Authenticator::new(
        &config.auth,
        key_store,
        &public,
        crate::clock::system(),
        Arc::new(crate::event::time::now_micros),
    )
}

/// The replay filter of an events store whose Kafka batches are claimed in `sink`: a held
/// batch counts only if its claim was committed. Waits for the database (the store cannot tell
/// which of its batches count without it); gives up only on shutdown.
async fn claimed_filter(
    sink: &dyn crate::sinks::RollupSink,
    store_id: &str,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<crate::storage::ReplayFilter, AppError> {
    let claimed = crate::resilience::retry(
        "reading the events store's claims",
        crate::resilience::RetryPolicy::UNTIL_SUCCESS,
        shutdown,
        || sink.claims(store_id),
    )
    .await?;
    tracing::info!(
        claims = claimed.len(),
        "events store replays only the Kafka batches the sink claimed"
    );
    Ok(Arc::new(move |_seq, tag| claimed.contains(&tag)))
}

/// Runs the standalone service until SIGINT/SIGTERM, then drains requests and flushes storage.
pub async fn serve(config: Config) -> Result<(), AppError> {
    let unsupported = Config::unsupported_env(|n| std::env::var(n).ok());
    if !unsupported.is_empty() {
        tracing::warn!(variables = ?unsupported, "cluster-mode settings are not supported by this build yet; running standalone");
    }
    let metrics = Metrics::new()?;
    let auth = build_auth(&config, key_store(&config, &config.storage.data_dir).await?)?;
    if let Err(e) = auth.keys().reload_now().await {
        tracing::warn!(error = %e, "API keys not read yet; retrying every second");
    }
    if let Some(jwt) = auth.jwt()
        && let Err(e) = jwt.fetch_jwks().await
    {
        tracing::warn!(error = %e, "JWKS not fetched yet; tokens signed by the provider are refused until it is");
    }
    let storage_health = crate::storage::health::StorageHealth::new(Some(metrics.clone()));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (published_tx, published_rx) = tokio::sync::watch::channel(Vec::new());
    let store_id = if config.postgres.enabled() {
        crate::cluster::store_id(&config.storage.data_dir)?
    } else {
        String::new()
    };
    let sink = crate::sinks::build(
        &config.postgres,
        &config.kafka.group_id,
        &store_id,
        published_rx,
        &metrics,
    )
    .await?;
    // Kafka with the sink: the events table is exactly-once (batches held until claimed).
    let claims_store = match (&sink, config.kafka.enabled()) {
        (Some(_), true) => Some(store_id.clone()),
        _ => None,
    };
    let replay_filter = match (&sink, &claims_store) {
        (Some(sink), Some(store_id)) => Some(claimed_filter(sink.as_ref(), store_id, &shutdown_rx).await?),
        _ => None,
    };
    let local = LocalStore::open_filtered(
        config.storage.clone(),
        metrics.clone(),
        storage_health.clone(),
        replay_filter,
    )?;
    let local_store: Arc<dyn EventStore> = Arc::new(local.clone());
    // Every read path goes through `store`: in cluster mode the local store plus shared history.
    let (store, cluster_tail, distributed, shared_outputs) =
        events_store(&config, &local, &metrics, shutdown_rx.clone()).await?;
    let engine = QueryEngine::new(
        &store,
        &config.query,
        config.storage.data_dir.join("tmp").join("spill"),
        |builder| distributed.plan(builder),
    )?;
    distributed.ready(&engine);
    let versions = TableVersions::new();
    versions.register(crate::event::EVENTS_TABLE, Arc::clone(&store));
    let live = crate::live::LiveFeed::with_metrics(config.live.clone(), metrics.registry())?;
    live.declare(crate::live::EVENTS_TOPIC, crate::event::events_schema());
    let (stream, stream_task) = if config.stream.enabled {
        let deps = EngineDeps {
            dir: config.storage.data_dir.join("cq"),
            // Continuous queries run over this instance's events (the Postgres sink merges
            // every instance's emitted windows).
            events: Arc::clone(&local_store),
            query_ctx: engine.context().clone(),
            storage: config.storage.clone(),
            storage_health: storage_health.clone(),
            metrics: metrics.clone(),
            published: published_tx,
            versions: versions.clone(),
            live: live.clone(),
            shared: shared_outputs.clone(),
            state_sink: sink.clone().map(|s| s as Arc<dyn crate::stream::state_sink::StateSink>),
        };
        let shipped = if config.stream.shipped_queries {
            shipped_queries()?
        } else {
            Vec::new()
        };
        let (handle, task) = StreamEngine::start(deps, &shipped, shutdown_rx.clone()).await?;
        (Some(handle), Some(task))
    } else {
        (None, None)
    };
    let alerts = if stream.is_some() && config.alerts.enabled {
        let deps = crate::alerts::AlertsDeps {
            dir: config.storage.data_dir.join("alerts"),
            engine: engine.clone(),
            live: live.clone(),
            config: config.alerts.clone(),
        };
        Some(crate::alerts::Alerts::start(deps, shutdown_rx.clone()).await?)
    } else {
        None
    };
    // Rollup tables merge every instance's run of a query: run the queries other instances
    // registered, before the sources consume anything, and follow the registry after.
    let registry_task = match (&sink, &stream) {
        (Some(sink), Some(stream)) => {
            if let Err(e) = crate::sinks::registry::adopt(sink.as_ref(), stream, &Default::default()).await {
                tracing::warn!(error = %e, "shared query registry not read at startup; retried every 10 s");
            }
            Some(crate::sinks::registry::follow(
                Arc::clone(sink),
                stream.clone(),
                shutdown_rx.clone(),
            ))
        }
        _ => None,
    };
    let local_ingest =
        StoreIngest::new(Arc::clone(&local_store), metrics.clone(), stream.clone()).with_live(live.clone());
    let source_ingest: Arc<dyn Ingest> = Arc::new(local_ingest.clone().with_claims(claims_store));
    let sources = crate::sources::build(&config.kafka, source_ingest, sink.clone(), &metrics).await?;
    let ingest: Arc<dyn Ingest> = if config.kafka.enabled() && config.kafka.produce_http {
        kafka_ingest(&config.kafka)?
    } else {
        Arc::new(local_ingest)
    };
    let source_status: Vec<_> = sources.iter().map(|s| s.status()).collect();
    let source_tasks: Vec<_> = sources
        .into_iter()
        .map(|s| {
            let shutdown = shutdown_rx.clone();
            tokio::spawn(async move {
                let name = s.name();
                if let Err(e) = s.run(shutdown).await {
                    tracing::error!(source = name, error = %e, "source stopped with an error");
                }
            })
        })
        .collect();
    let exports = crate::exports::Exports::new(
        engine.clone(),
        versions.clone(),
        config.exports.max_running,
        config.object_store.clone(),
        crate::exports::records::Records::new(Some(config.storage.data_dir.join("exports").join("jobs"))),
    );
    exports.restore().await;
    let snapshots = crate::exports::snapshots::Snapshots::new(
        engine.context(),
        Some(config.storage.data_dir.join("exports").join("snapshots.json")),
        config.object_store.clone(),
    )?;
    snapshots.restore().await;
    let cache = QueryCache::build(&config.cache, versions, metrics.registry())?;
    // HTTP and the demo traffic share one pipeline (the Kafka source runs its own steps 2–3).
    let pipeline = Pipeline::new(Arc::clone(&ingest), metrics.clone());
    let state = AppState::new(AppStateInner {
        pipeline: pipeline.clone(),
        store: Arc::clone(&store),
        engine,
        cache: cache.clone(),
        exports,
        snapshots,
        auth,
        limits: Arc::new(crate::http::limits::RateLimits::new(&config.http.rate_limit)),
        access_log: config.http.access_log,
        cors_allowed_origins: config.http.cors_allowed_origins.clone(),
        max_json_rows: config.query.max_json_rows,
        max_body_bytes: config.http.max_body_bytes,
        metrics: metrics.clone(),
        started: Instant::now(),
        stream,
        sources: source_status,
        sink,
        ingest_mode: if config.kafka.enabled() { "kafka" } else { "standalone" },
        storage_health,
        live,
        alerts,
        cluster_tail: cluster_tail.clone(),
    });

    let maintenance = tokio::spawn(local.clone().run_maintenance(shutdown_rx.clone()));
    tokio::spawn(
        local
            .clone()
            .run_retention(Arc::new(crate::event::time::now_micros), shutdown_rx.clone()),
    );
    tokio::spawn(state.auth.keys().clone().watch(shutdown_rx.clone()));
    if let Some(jwt) = state.auth.jwt() {
        tokio::spawn(Arc::clone(jwt).watch(shutdown_rx.clone()));
    }
    let schedules = tokio::spawn(crate::exports::schedule::run(
        state.exports.clone(),
        state.snapshots.clone(),
        config.exports.clone(),
        config.storage.data_dir.join("exports").join("schedules.json"),
        crate::event::time::now_micros,
        shutdown_rx.clone(),
    ));
    let demo = config
        .demo
        .enabled
        .then(|| tokio::spawn(run_demo(pipeline.clone(), config.demo.clone(), shutdown_rx.clone())));

    let pgwire = start_wire(&config, &state, shutdown_rx.clone()).await?;

    let addr = format!("{}:{}", config.http.host, config.http.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| AppError::Http {
            addr: addr.clone(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| AppError::Http {
        addr: addr.clone(),
        source,
    })?;
    tracing::info!(%bound, data_dir = %config.storage.data_dir.display(), demo = config.demo.enabled, kafka = config.kafka.enabled(), "LLM Analytics Hub listening");
    if let Some(tail) = &cluster_tail {
        tail.advertise(advertise_url(&config, bound));
    }

    let limits = Arc::clone(&state.limits);
    let purge = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            limits.purge();
        }
    });
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = crate::tls::server_config(cert, key, &[b"http/1.1"])?;
            let listener = listener.into_std().map_err(|source| AppError::Http {
                addr: addr.clone(),
                source,
            })?;
            let handle = axum_server::Handle::new();
            let stopping = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                stopping.graceful_shutdown(Some(Duration::from_secs(30)));
            });
            tracing::info!(%bound, "HTTPS on the HTTP port");
            axum_server::tls_rustls::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))
                .handle(handle)
                .serve(app)
                .await
                .map_err(|source| AppError::Http { addr, source })?;
        }
        (None, None) => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|source| AppError::Http { addr, source })?,
        _ => {
            return Err(AppError::Tls(crate::tls::TlsError {
                what: "http".into(),
                message: "set both http.tls_cert and http.tls_key (HTTP_TLS_CERT, HTTP_TLS_KEY)".into(),
            }));
        }
    }

    tracing::info!("shutting down: stopping background tasks and flushing storage");
    let _ = shutdown_tx.send(true);
    if let Some(pgwire) = pgwire {
        let _ = pgwire.await;
    }
    if let Some(demo) = demo {
        let _ = demo.await;
    }
    for task in source_tasks {
        let _ = task.await;
    }
    if let Some(task) = registry_task {
        let _ = task.await;
    }
    let _ = maintenance.await;
    purge.abort();
    // A scheduled snapshot in progress is abandoned (its temporary files are never visible;
    // the period is exported again after the restart).
    schedules.abort();
    let _ = schedules.await;
    if let Some(task) = stream_task {
        let _ = task.await;
    }
    store.flush().await?;
    tracing::info!("shutdown complete");
    Ok(())
}

type ClusterTail = Option<crate::cluster::tail::TailServer>;
/// In a cluster: where continuous queries share their rows.
type SharedOutputs = Option<Arc<dyn crate::stream::shared::SharedOutputs>>;

/// Distributed execution, when this build and configuration have it.
#[derive(Debug, Default)]
struct DistributedPart(#[cfg(feature = "postgres")] Option<crate::cluster::distributed::Distributed>);

impl DistributedPart {
    fn plan(
        &self,
        builder: datafusion::execution::SessionStateBuilder,
    ) -> Result<datafusion::execution::SessionStateBuilder, datafusion::error::DataFusionError> {
        #[cfg(feature = "postgres")]
        if let Some(d) = &self.0 {
            return d.plan(builder);
        }
        Ok(builder)
    }

    fn ready(&self, _engine: &QueryEngine) {
        #[cfg(feature = "postgres")]
        if let Some(d) = &self.0 {
            d.ready(_engine.context().state());
        }
    }
}

/// The `events` store the read paths use: the local one, or with `cluster.remote` the local one
/// plus shared history and the other members' recent events (and what this instance serves of
/// its own to them).
#[cfg(feature = "postgres")]
async fn events_store(
    config: &Config,
    local: &LocalStore,
    metrics: &Metrics,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(Arc<dyn EventStore>, ClusterTail, DistributedPart, SharedOutputs), AppError> {
    if !config.cluster.enabled() {
        return Ok((Arc::new(local.clone()), None, DistributedPart::default(), None));
    }
    let deps = crate::cluster::ClusterDeps {
        config: &config.cluster,
        postgres: &config.postgres,
        object_store: &config.object_store,
        local: local.clone(),
        data_dir: &config.storage.data_dir,
        instance_id: config.postgres.instance(),
        metrics: metrics.clone(),
    };
    let cluster = crate::cluster::ClusterStore::open(deps, shutdown.clone()).await?;
    let tail = cluster.tail_server(config.cluster.max_tail_bytes);
    let mut distributed = DistributedPart::default();
    if config.cluster.distributed {
        let c = &config.cluster;
        let host = advertised_host(config);
        let listen = c
            .worker_listen
            .clone()
            .unwrap_or_else(|| format!("{}:0", config.http.host));
        let deps = crate::cluster::distributed::DistributedDeps {
            listen: &listen,
            advertise_url: c.worker_advertise_url.as_deref(),
            host: &host,
            secret: c.secret.as_deref().unwrap_or_default(),
            bytes_per_partition: c.distributed_bytes_per_partition,
            tails: cluster.tail_context(),
            history: cluster.history(),
            workers: cluster.workers(),
            metrics: metrics.clone(),
        };
        let d = crate::cluster::distributed::Distributed::start(deps, shutdown).await?;
        cluster.set_worker_url(d.url().clone(), d.key().to_string());
        distributed = DistributedPart(Some(d));
    }
    let shared: Arc<dyn crate::stream::shared::SharedOutputs> = Arc::new(cluster.clone());
    Ok((Arc::new(cluster), Some(tail), distributed, Some(shared)))
}

/// Without the `postgres` feature there is no catalog: `cluster.remote` is refused earlier.
#[cfg(not(feature = "postgres"))]
async fn events_store(
    _config: &Config,
    local: &LocalStore,
    _metrics: &Metrics,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(Arc<dyn EventStore>, ClusterTail, DistributedPart, SharedOutputs), AppError> {
    Ok((Arc::new(local.clone()), None, DistributedPart::default(), None))
}

/// The host the others reach this instance by: `cluster.advertise_url`'s, else `http.host`,
/// else (a wildcard bind) the host name.
#[cfg(feature = "postgres")]
fn advertised_host(config: &Config) -> String {
    if let Some(host) = config
        .cluster
        .advertise_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
    {
        return host;
    }
    match config.http.host.parse::<std::net::IpAddr>() {
        Ok(ip) => reachable_host(ip),
        Err(_) => config.http.host.clone(),
    }
}

/// How the other members reach this instance: `cluster.advertise_url`, else the bound address
/// (the host name for a wildcard bind).
fn advertise_url(config: &Config, bound: std::net::SocketAddr) -> String {
    if let Some(url) = &config.cluster.advertise_url {
        return url.clone();
    }
    let scheme = if config.http.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}:{}", reachable_host(bound.ip()), bound.port())
}

/// `ip` as the others reach it in a URL: the host name for a wildcard bind, IPv6 bracketed.
fn reachable_host(ip: std::net::IpAddr) -> String {
    match ip {
        ip if ip.is_unspecified() => crate::sinks::postgres::config::host_name().unwrap_or_else(|| "localhost".into()),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// In-process demo traffic: live-timestamped events through the same ingest path as HTTP.
async fn run_demo(
    pipeline: Pipeline,
    config: crate::config::DemoConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let rate = f64::from(config.events_per_sec.max(1));
    let mut generator = Generator::new(GeneratorConfig {
        seed: config.seed,
        events_per_sec: rate,
        disorder_ms: 2000,
        ..GeneratorConfig::default()
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut carry = 0.0f64;
    tracing::info!(events_per_sec = rate, "demo traffic started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        carry += rate / 4.0;
        let n = carry.floor() as usize;
        carry -= n as f64;
        if n == 0 {
            continue;
        }
        let now = crate::event::time::now_micros();
        let body: String = (0..n).map(|_| generator.next_event(Some(now)) + "\n").collect();
        if let Err(e) = pipeline.accept_body(body.into(), BodyShape::Batch, now, None).await {
            tracing::warn!(error = %e, "demo events could not be stored");
        }
    }
}
