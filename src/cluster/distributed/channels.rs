//! How coordinators and workers reach other workers: datafusion-distributed's cached gRPC
//! channels, with `cluster.secret` on every call (a worker runs any plan it is sent).

use async_trait::async_trait;
use axum::http::{HeaderValue, Request};
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, DefaultChannelResolver, create_worker_client};
use datafusion_distributed::{ChannelResolver, WorkerChannel};
use url::Url;

use crate::cluster::tail::SECRET_HEADER;

/// [`DefaultChannelResolver`] (one channel per worker, reused) adding the secret header.
#[derive(Clone)]
pub struct SecretChannels {
    inner: DefaultChannelResolver,
    secret: HeaderValue,
}

impl SecretChannels {
    /// Channels carrying `secret`.
    pub fn new(secret: &str) -> Result<Self, DataFusionError> {
        let secret = HeaderValue::from_str(secret)
            .map_err(|_| DataFusionError::Configuration("cluster.secret is not a valid header value".into()))?;
        Ok(Self {
            inner: DefaultChannelResolver::default(),
            secret,
        })
    }
}

#[async_trait]
impl ChannelResolver for SecretChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> DfResult<Box<dyn WorkerChannel>> {
        let channel = self.inner.get_channel(url).await?;
        let secret = self.secret.clone();
        let with_secret = tower::ServiceBuilder::new()
            .map_request(move |mut req: Request<tonic::body::Body>| {
                req.headers_mut().insert(SECRET_HEADER, secret.clone());
                req
            })
            .service(channel);
        Ok(create_worker_client(BoxCloneSyncChannel::new(with_secret)))
    }
}
