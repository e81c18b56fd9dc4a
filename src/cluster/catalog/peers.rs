//! Membership without PostgreSQL: a static list of the members' HTTP addresses
//! (`cluster.peers`). Each instance answers `GET /internal/v1/cluster/member` (guarded by
//! `cluster.secret`) with what a heartbeat row would hold: its data directory, address, data
//! version and worker. The members alive are those that answer within the timeout, asked every
//! `cluster.catalog_refresh_ms`; one that stops answering is out at the next round.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::tail::{MEMBER_PATH, Member, SECRET_HEADER};

/// The static member list and this instance's own description.
#[derive(Debug, Clone)]
pub struct Peers {
    urls: Arc<Vec<String>>,
    client: reqwest::Client,
    secret: String,
}

impl Peers {
    /// Members at `urls` (this instance's own address may be among them: it is skipped by its
    /// data directory), asked with `secret`.
    pub fn new(urls: Vec<String>, secret: String) -> Self {
        Self {
            urls: Arc::new(urls),
            client: reqwest::Client::new(),
            secret,
        }
    }

    /// The peers other than `store_id` that answer within `timeout_ms` (one round, asked
    /// concurrently), each once, ordered by data directory.
    pub async fn alive(&self, store_id: &str, timeout_ms: u64) -> Vec<Member> {
        let timeout = Duration::from_millis(timeout_ms.max(1));
        let asks = self.urls.iter().map(|url| self.ask(url, timeout));
        let mut alive: Vec<Member> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .filter(|m| m.store_id != store_id)
            .collect();
        alive.sort_by(|a, b| a.store_id.cmp(&b.store_id));
        alive.dedup_by(|a, b| a.store_id == b.store_id);
        alive
    }

    async fn ask(&self, url: &str, timeout: Duration) -> Option<Member> {
        let answer = self
            .client
            .get(format!("{}{MEMBER_PATH}", url.trim_end_matches('/')))
            .header(SECRET_HEADER, &self.secret)
            .timeout(timeout)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let member = match answer {
            Ok(response) => response.json::<Member>().await,
            Err(e) => Err(e),
        };
        match member {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!(peer = %url, error = %e, "a peer did not answer; not a member this round");
                None
            }
        }
    }
}
