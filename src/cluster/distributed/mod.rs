//! Distributed execution (issue #22) on `datafusion-distributed` 4 (docs/cluster-design.md §1
//! says why it and not Ballista): every instance coordinates the queries it is asked and runs
//! the others' stage tasks as a worker.
//!
//! ```text
//! SQL on any instance → physical plan → distributed planner: a scan of the shared files larger
//!   than cluster.distributed_bytes_per_partition is split into tasks, one per member at most;
//!   partial aggregates run where the files are read and only their states cross the network
//!   (gRPC, Arrow Flight data) → the asked instance merges and answers.
//! ```
//!
//! What makes any task runnable anywhere: the plan's leaves are the shared files (every member
//! reads them from the bucket, through its file cache) and one [`TailExec`] per member (run on
//! its owner it reads the store, anywhere else it asks the owner over HTTP). Workers are the
//! live members' heartbeat rows plus this instance; a member that stops answering leaves the
//! list within `cluster.member_timeout_ms`, and a query that had sent it a task fails (the
//! library does not retry tasks) and succeeds when asked again.
//!
//! [`TailExec`]: super::tail_exec::TailExec

mod channels;
mod codec;
mod planner;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion_distributed::{
    DistributedExt, SessionStateBuilderExt, Worker, WorkerQueryContext, WorkerResolver, WorkerSessionBuilder,
};
use url::Url;

pub use channels::SecretChannels;
pub use codec::TailCodec;

use super::ClusterError;
use super::history::History;
use super::tail::SECRET_HEADER;
use super::tail_exec::TailContext;
use crate::metrics::Metrics;

/// This build's worker key for `secret`: a digest of the secret and the versions a plan's
/// encoding depends on. Members with another key are sent no tasks.
pub fn worker_key(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!(
        "{secret}\0{}\0datafusion-distributed 4.0.0",
        env!("CARGO_PKG_VERSION")
    ));
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The workers coordinators may send tasks to: this instance's and the live members'.
/// Refreshed by the membership loop; read synchronously while planning.
#[derive(Debug, Clone, Default)]
pub struct WorkerList(Arc<RwLock<Vec<Url>>>);

impl WorkerList {
    /// Replaces the list.
    pub fn set(&self, urls: Vec<Url>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = urls;
    }
}

impl WorkerResolver for WorkerList {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        Ok(self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

/// The session a worker runs a task in: the coordinator-side session's functions and runtime
/// (memory pool, object stores), our codec and channels.
#[derive(Clone)]
struct WorkerSessions {
    template: Arc<OnceLock<SessionState>>,
    codec: Arc<TailCodec>,
    channels: SecretChannels,
    history: History,
    metrics: Metrics,
}

#[async_trait]
impl WorkerSessionBuilder for WorkerSessions {
    async fn build_session_state(&self, ctx: WorkerQueryContext) -> DfResult<SessionState> {
        let Some(template) = self.template.get() else {
            return Err(DataFusionError::Execution(
                "this instance is still starting; its worker takes tasks once its query engine is up".into(),
            ));
        };
        self.metrics.cluster_worker_tasks_total.inc();
        let runtime = template.runtime_env();
        self.history.register_bucket(runtime);
        Ok(ctx
            .builder
            .with_runtime_env(Arc::clone(runtime))
            .with_scalar_functions(template.scalar_functions().values().cloned().collect())
            .with_aggregate_functions(template.aggregate_functions().values().cloned().collect())
            .with_window_functions(template.window_functions().values().cloned().collect())
            .with_distributed_user_codec_arc(Arc::clone(&self.codec) as _)
            .with_distributed_channel_resolver(self.channels.clone())
            .build())
    }
}

/// This instance's part in distributed execution.
pub struct Distributed {
    worker: Worker,
    self_url: Url,
    workers: WorkerList,
    channels: SecretChannels,
    codec: Arc<TailCodec>,
    bytes_per_partition: usize,
    template: Arc<OnceLock<SessionState>>,
    history: History,
    /// [`worker_key`] of this instance's secret.
    key: String,
}

impl std::fmt::Debug for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributed")
            .field("self_url", &self.self_url.as_str())
            .finish()
    }
}

/// What [`Distributed::start`] needs.
pub struct DistributedDeps<'a> {
    /// Where the worker listens.
    pub listen: &'a str,
    /// How the others reach it; `None` = `http://<host>:<bound port>`.
    pub advertise_url: Option<&'a str>,
    /// The host of this instance's HTTP advertise URL (for the default worker URL).
    pub host: &'a str,
    /// `cluster.secret`.
    pub secret: &'a str,
    /// `cluster.distributed_bytes_per_partition`.
    pub bytes_per_partition: usize,
    /// What tails run with.
    pub tails: Arc<TailContext>,
    /// The shared files (their bucket is registered in every worker session).
    pub history: History,
    /// The list the membership loop keeps.
    pub workers: WorkerList,
    /// Counts worker tasks.
    pub metrics: Metrics,
}

impl Distributed {
    /// Binds and starts the worker (stopped on `shutdown`); it runs tasks once
    /// [`Self::ready`] has been given the query engine's session.
    pub async fn start(
        deps: DistributedDeps<'_>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, ClusterError> {
        let listener = tokio::net::TcpListener::bind(deps.listen)
            .await
            .map_err(|e| ClusterError::Config(format!("cluster.worker_listen `{}`: {e}", deps.listen)))?;
        let bound: SocketAddr = listener
            .local_addr()
            .map_err(|e| ClusterError::Config(format!("cluster.worker_listen `{}`: {e}", deps.listen)))?;
        let advertised = match deps.advertise_url {
            Some(url) => url.to_string(),
            None => format!("http://{}:{}", deps.host, bound.port()),
        };
        let self_url = Url::parse(&advertised)
            .map_err(|e| ClusterError::Config(format!("cluster.worker_advertise_url `{advertised}`: {e}")))?;
        let channels = SecretChannels::new(deps.secret).map_err(|e| ClusterError::Config(e.to_string()))?;
        let codec = Arc::new(TailCodec::new(deps.tails));
        let template = Arc::new(OnceLock::new());
        let worker = Worker::from_session_builder(WorkerSessions {
            template: Arc::clone(&template),
            codec: Arc::clone(&codec),
            channels: channels.clone(),
            history: deps.history.clone(),
            metrics: deps.metrics,
        });
        let secret = deps.secret.to_string();
        let admit = move |req: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
            let given = req
                .metadata()
                .get(SECRET_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if super::tail::secret_matches(given, &secret) {
                Ok(req)
            } else {
                Err(tonic::Status::unauthenticated(format!(
                    "{SECRET_HEADER} is missing or wrong"
                )))
            }
        };
        let server = tonic::transport::Server::builder()
            .layer(tonic::service::InterceptorLayer::new(admit))
            .add_service(worker.clone().into_worker_server());
        // No Nagle: each task's answer is a few small HTTP/2 frames, and Nagle's wait for the
        // peer's delayed ACK added ~40 ms per round trip (a distributed count took 0.09 s).
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "the distributed-execution worker stopped");
            }
        });
        tracing::info!(%bound, url = %self_url, "distributed-execution worker listening");
        Ok(Self {
            worker,
            self_url,
            workers: deps.workers,
            channels,
            codec,
            bytes_per_partition: deps.bytes_per_partition,
            template,
            history: deps.history,
            key: worker_key(deps.secret),
        })
    }

    /// This worker as the others reach it.
    pub fn url(&self) -> &Url {
        &self.self_url
    }

    /// Its key: only members with the same one are sent this instance's tasks.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `builder` with the distributed planner: scans larger than the configured bytes per
    /// task are split over the members; this instance's own tasks run in process.
    pub fn plan(&self, builder: SessionStateBuilder) -> DfResult<SessionStateBuilder> {
        let mut builder = builder
            .with_distributed_planner()
            .with_distributed_worker_resolver(self.workers.clone())
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_user_codec_arc(Arc::clone(&self.codec) as _)
            .with_distributed_local_worker_context(self.worker.to_local_worker_context(self.self_url.clone()))
            .with_distributed_file_scan_config_bytes_per_partition(self.bytes_per_partition)?;
        // Ours decides per query whether the distributed planner gets it.
        let distributed = builder
            .query_planner()
            .take()
            .ok_or_else(|| DataFusionError::Internal("the distributed planner was not installed".into()))?;
        Ok(builder.with_query_planner(Arc::new(planner::ClusterPlanner {
            distributed,
            history: self.history.clone(),
            bytes_per_partition: self.bytes_per_partition,
        })))
    }

    /// The query engine is up: its session is what worker tasks run in.
    pub fn ready(&self, engine_state: SessionState) {
        let _ = self.template.set(engine_state);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion_distributed::{ChannelResolver, GetWorkerInfoRequest};

    use super::*;

    #[tokio::test]
    async fn the_worker_answers_only_calls_carrying_the_cluster_secret() {
        let dir = tempfile::tempdir().expect("tmp");
        let secret = "the-right-secret-0123";
        let (local, metrics, tails) = crate::cluster::tail_exec::tests::context(dir.path(), secret);
        let history = History::new(
            local.schema(),
            crate::event::schema::col::TIMESTAMP,
            ObjectStoreUrl::parse("s3://bucket").expect("url"),
            None,
            object_store::path::Path::from("history"),
        );
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let deps = DistributedDeps {
            listen: "127.0.0.1:0",
            advertise_url: None,
            host: "127.0.0.1",
            secret,
            bytes_per_partition: 1 << 20,
            tails,
            history,
            workers: WorkerList::default(),
            metrics,
        };
        let worker = Distributed::start(deps, shutdown).await.expect("worker");
        let url = worker.url().clone();
        assert_eq!(url.host_str(), Some("127.0.0.1"));
        let mut right = SecretChannels::new(secret)
            .expect("channels")
            .get_worker_client_for_url(&url)
            .await
            .expect("client");
        right.get_worker_info(GetWorkerInfoRequest {}).await.expect("admitted");
        let mut wrong = SecretChannels::new("another-secret-01234")
            .expect("channels")
            .get_worker_client_for_url(&url)
            .await
            .expect("client");
        let Err(refused) = wrong.get_worker_info(GetWorkerInfoRequest {}).await else {
            panic!("a call with another secret was admitted");
        };
        assert!(refused.to_string().contains(SECRET_HEADER), "{refused}");
        // Keys differ by secret, and are stable for one.
        assert_eq!(worker_key(secret), worker_key(secret));
        assert_ne!(worker_key(secret), worker_key("another-secret-01234"));
    }
}
