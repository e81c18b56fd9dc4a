//! The `[alerts]` section.

use serde::{Deserialize, Serialize};

/// Alert rules and their notifications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Evaluate rules at all (needs continuous queries).
    pub enabled: bool,
    /// Key of the `X-Hub-Signature-256` HMAC on every webhook body (env
    /// `ALERTS_WEBHOOK_SECRET`). Empty: a random one is made once and kept in
    /// `<data_dir>/alerts/webhook.secret`.
    pub webhook_secret: String,
    /// Tries per notification (with exponential backoff from 500 ms to 30 s) before it is
    /// recorded as failed.
    pub delivery_attempts: u32,
    /// Time limit of one webhook request.
    pub delivery_timeout_secs: u64,
    /// Rules at most.
    pub max_rules: usize,
    /// Transitions kept in the `hub_alerts` table (the log on disk keeps all).
    pub history: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            webhook_secret: String::new(),
            delivery_attempts: 8,
            delivery_timeout_secs: 10,
            max_rules: 100,
            history: 100_000,
        }
    }
}
