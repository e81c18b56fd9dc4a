//! The `[live]` section: live feeds (`GET /api/v1/stream`).

use serde::{Deserialize, Serialize};

/// Bounds of the live feeds. Memory is bounded by these, never by the number or speed of
/// clients: every subscriber of a topic shares one ring of recent chunks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Rows of each topic kept for resuming clients (`after=` / `Last-Event-ID`).
    pub history_rows: usize,
    /// Chunks (one ingested batch or one emission each) a subscriber may fall behind before it
    /// is disconnected with a close reason (env `LIVE_CLIENT_BUFFER_CHUNKS`).
    pub client_buffer_chunks: usize,
    /// Open stream connections at most; more get 503 (env `LIVE_MAX_SUBSCRIBERS`).
    pub max_subscribers: usize,
    /// A WebSocket client that does not take a message for this long is disconnected.
    pub send_timeout_secs: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            history_rows: 10_000,
            client_buffer_chunks: 64,
            max_subscribers: 256,
            send_timeout_secs: 10,
        }
    }
}

impl LiveConfig {
    /// Refuses settings that would make the feeds useless.
    pub fn validate(&self) -> Result<(), String> {
        if self.history_rows == 0 || self.client_buffer_chunks == 0 || self.max_subscribers == 0 {
            return Err(
                "live.history_rows, live.client_buffer_chunks and live.max_subscribers must be at least 1".into(),
            );
        }
        if self.send_timeout_secs == 0 {
            return Err("live.send_timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}
