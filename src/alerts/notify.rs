//! Webhook notifications: one signed POST per transition and webhook, retried with backoff
//! while the receiver is unreachable or answers 5xx/429/408.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;

use super::rule::Webhook;
use super::store::Transition;
use crate::error::{Classify, ErrorClass};
use crate::resilience::retry::{RetryPolicy, retry};

/// Why a webhook did not take a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// No answer (connection refused, timeout, TLS).
    #[error("posting to {url}")]
    Transport {
        /// The webhook.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// An answer other than 2xx.
    #[error("{url} answered {status}")]
    Status {
        /// The webhook.
        url: String,
        /// The HTTP status.
        status: u16,
    },
}

impl Classify for NotifyError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Transport { .. } => ErrorClass::External,
            Self::Status { status, .. } if *status == 408 || *status == 429 || *status >= 500 => ErrorClass::External,
            Self::Status { .. } => ErrorClass::User,
        }
    }
}

/// The JSON body posted for a transition.
pub fn body(t: &Transition) -> Vec<u8> {
    let value = serde_json::json!({
        "id": t.id,
        "rule": t.rule,
        "state": t.state,
        "severity": t.severity,
        "at": crate::event::time::rfc3339(t.at_us),
        "since": crate::event::time::rfc3339(t.since_us),
        "group": t.labels,
        "value": t.value,
        "detail": t.detail,
        "source": "llm-analytics-hub",
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Posts transitions to webhooks.
#[derive(Debug, Clone)]
pub struct Notifier {
    client: reqwest::Client,
    secret: Arc<Vec<u8>>,
    policy: RetryPolicy,
}

impl Notifier {
    /// A notifier signing with `secret`, giving up after `attempts` tries of `timeout` each.
    pub fn new(secret: Vec<u8>, attempts: u32, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            secret: Arc::new(secret),
            policy: RetryPolicy {
                initial: Duration::from_millis(500),
                multiplier: 2.0,
                max: Duration::from_secs(30),
                attempts: attempts.max(1),
            },
        })
    }

    /// Posts `t` to `hook` until it is taken, the tries are used up or the Hub stops; returns the
    /// outcome and the requests made.
    pub async fn deliver(
        &self,
        t: &Transition,
        hook: &Webhook,
        shutdown: &watch::Receiver<bool>,
    ) -> (Result<(), NotifyError>, u32) {
        let body = body(t);
        let signature = signature(&self.secret, &body);
        let attempts = AtomicU32::new(0);
        let result = retry("webhook", self.policy, shutdown, || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .client
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-hub-alert-id", &t.id)
                .header("x-hub-signature-256", &signature);
            for (k, v) in &hook.headers {
                request = request.header(k, v);
            }
            let response = request
                .body(body.clone())
                .send()
                .await
                .map_err(|source| NotifyError::Transport {
                    url: hook.url.clone(),
                    source,
                })?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(NotifyError::Status {
                    url: hook.url.clone(),
                    status: response.status().as_u16(),
                })
            }
        })
        .await;
        (result, attempts.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
