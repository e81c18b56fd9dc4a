//! The generator's model of LLM traffic.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;

/// One provider/model profile.
struct ModelProfile {
    provider: &'static str,
    model: &'static str,
    /// Median latency in ms.
    latency_median_ms: f64,
    input_median: f64,
    output_median: f64,
    /// USD per 1k input tokens.
    price_in: f64,
    /// USD per 1k output tokens.
    price_out: f64,
    /// Relative traffic share.
    weight: u32,
}

const MODELS: [ModelProfile; 6] = [
    ModelProfile {
        provider: "openai",
        model: "gpt-4o",
        latency_median_ms: 900.0,
        input_median: 800.0,
        output_median: 300.0,
        price_in: 0.0025,
        price_out: 0.01,
        weight: 30,
    },
    ModelProfile {
        provider: "openai",
        model: "gpt-4o-mini",
        latency_median_ms: 450.0,
        input_median: 600.0,
        output_median: 200.0,
        price_in: 0.00015,
        price_out: 0.0006,
        weight: 25,
    },
    ModelProfile {
        provider: "anthropic",
        model: "claude-sonnet-4",
        latency_median_ms: 1200.0,
        input_median: 1200.0,
        output_median: 400.0,
        price_in: 0.003,
        price_out: 0.015,
        weight: 20,
    },
    ModelProfile {
        provider: "anthropic",
        model: "claude-haiku-3.5",
        latency_median_ms: 500.0,
        input_median: 700.0,
        output_median: 250.0,
        price_in: 0.0008,
        price_out: 0.004,
        weight: 10,
    },
    ModelProfile {
        provider: "google",
        model: "gemini-1.5-pro",
        latency_median_ms: 1000.0,
        input_median: 900.0,
        output_median: 350.0,
        price_in: 0.00125,
        price_out: 0.005,
        weight: 10,
    },
    ModelProfile {
        provider: "mistral",
        model: "mistral-large",
        latency_median_ms: 800.0,
        input_median: 700.0,
        output_median: 300.0,
        price_in: 0.002,
        price_out: 0.006,
        weight: 5,
    },
];

const ENVIRONMENTS: [&str; 3] = ["production", "production", "staging"];
const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const OPERATIONS: [&str; 3] = ["chat", "chat", "embeddings"];
const ERROR_TYPES: [&str; 3] = ["rate_limited", "server_error", "context_length_exceeded"];

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// RNG seed: same seed and start give the same events.
    pub seed: u64,
    /// Timestamp of the first event, µs since the epoch (ignored in live mode).
    pub start_us: i64,
    /// Event-time spacing: this many events per second of event time.
    pub events_per_sec: f64,
    /// Multiply `gpt-4o` latency by `spike_factor` from `spike_at_secs` for `spike_secs`
    /// seconds of event time (0 = no spike).
    pub spike_secs: u64,
    /// When the spike starts, seconds after the start.
    pub spike_at_secs: u64,
    /// Latency multiplier during the spike.
    pub spike_factor: f64,
    /// Up to this many milliseconds of timestamp disorder (0 = in order).
    pub disorder_ms: u64,
    /// Share of deliberately invalid events (0.0..=1.0), for exercising rejection paths.
    pub invalid_ratio: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            start_us: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            events_per_sec: 100.0,
            spike_secs: 0,
            spike_at_secs: 0,
            spike_factor: 5.0,
            disorder_ms: 0,
            invalid_ratio: 0.0,
        }
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    operation: &'a str,
    provider: &'a str,
    model: &'a str,
    latency_ms: f64,
    ttft_ms: f64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    user_id: String,
    tenant: &'a str,
    region: &'a str,
}

#[derive(Serialize)]
struct Tags<'a> {
    team: &'a str,
    app: &'a str,
}

#[derive(Serialize)]
struct Event<'a> {
    event_id: String,
    timestamp: String,
    source_module: &'a str,
    event_type: &'a str,
    schema_version: &'a str,
    severity: &'a str,
    environment: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_event_id: Option<String>,
    tags: Tags<'a>,
    payload: Payload<'a>,
}

/// Deterministic generator of NDJSON events.
pub struct Generator {
    rng: ChaCha8Rng,
    config: GeneratorConfig,
    emitted: u64,
    queued: VecDeque<String>,
    total_weight: u32,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").field("emitted", &self.emitted).finish()
    }
}

fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    LogNormal::new(median.ln(), sigma).map_or(median, |d| d.sample(rng))
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(
        || "1970-01-01T00:00:00Z".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

impl Generator {
    /// A generator with `config`.
    pub fn new(config: GeneratorConfig) -> Self {
        let total_weight = MODELS.iter().map(|m| m.weight).sum();
        Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            emitted: 0,
            queued: VecDeque::new(),
            total_weight,
        }
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    fn pick_model(&mut self) -> &'static ModelProfile {
        let mut x = self.rng.random_range(0..self.total_weight);
        for m in &MODELS {
            if x < m.weight {
                return m;
            }
            x -= m.weight;
        }
        &MODELS[0]
    }

    /// Event time of the next event: scheduled time (or `now_us` in live mode) minus disorder.
    fn next_time(&mut self, now_us: Option<i64>) -> i64 {
        let scheduled = now_us.unwrap_or_else(|| {
            self.config.start_us + (self.emitted as f64 * 1_000_000.0 / self.config.events_per_sec.max(0.001)) as i64
        });
        let disorder = if self.config.disorder_ms > 0 {
            self.rng.random_range(0..=self.config.disorder_ms as i64 * 1000)
        } else {
            0
        };
        scheduled - disorder
    }

    fn in_spike(&self, ts: i64) -> bool {
        if self.config.spike_secs == 0 {
            return false;
        }
        let from = self.config.start_us + self.config.spike_at_secs as i64 * 1_000_000;
        ts >= from && ts < from + self.config.spike_secs as i64 * 1_000_000
    }

    fn llm_event(&mut self, ts: i64, correlation_id: Option<String>, parent: Option<String>) -> String {
        let m = self.pick_model();
        let roll: f64 = self.rng.random();
        let (status, error_type, severity) = if roll < 0.02 {
            (
                "error",
                Some(ERROR_TYPES[self.rng.random_range(0..ERROR_TYPES.len())]),
                "error",
            )
        } else if roll < 0.03 {
            ("timeout", Some("timeout"), "warning")
        } else {
            ("ok", None, "info")
        };
        let mut latency = lognormal(&mut self.rng, m.latency_median_ms, 0.45);
        if m.model == "gpt-4o" && self.in_spike(ts) {
            latency *= self.config.spike_factor;
        }
        if status == "timeout" {
            latency = 30_000.0;
        }
        let input = lognormal(&mut self.rng, m.input_median, 0.7).round().max(1.0) as u64;
        let output = if status == "ok" {
            lognormal(&mut self.rng, m.output_median, 0.6).round().max(1.0) as u64
        } else {
            0
        };
        let cost = (input as f64 * m.price_in + output as f64 * m.price_out) / 1000.0;
        let ttft = latency * self.rng.random_range(0.1..0.35);
        let user = self.rng.random_range(0..500);
        let tenant = TENANTS[self.rng.random_range(0..TENANTS.len())];
        let event = Event {
            event_id: self.uuid(),
            timestamp: rfc3339(ts),
            source_module: "llm-observatory",
            event_type: "telemetry",
            schema_version: "1.0.0",
            severity,
            environment: ENVIRONMENTS[self.rng.random_range(0..ENVIRONMENTS.len())],
            correlation_id,
            parent_event_id: parent,
            tags: Tags {
                team: "platform",
                app: "assistant",
            },
            payload: Payload {
                operation: OPERATIONS[self.rng.random_range(0..OPERATIONS.len())],
                provider: m.provider,
                model: m.model,
                latency_ms: (latency * 1000.0).round() / 1000.0,
                ttft_ms: (ttft * 1000.0).round() / 1000.0,
                input_tokens: input,
                output_tokens: output,
                cost_usd: (cost * 1e8).round() / 1e8,
                status,
                error_type,
                user_id: format!("user-{user:04}"),
                tenant,
                region: "eu-west-1",
            },
        };
        serde_json::to_string(&event).unwrap_or_default()
    }

    /// A cost or security event from another module.
    fn module_event(&mut self, ts: i64) -> String {
        let (module, event_type, severity) = if self.rng.random_bool(0.5) {
            ("llm-costops", "cost", "info")
        } else {
            (
                "llm-sentinel",
                "security",
                if self.rng.random_bool(0.1) {
                    "critical"
                } else {
                    "warning"
                },
            )
        };
        let tenant = TENANTS[self.rng.random_range(0..TENANTS.len())];
        let value: f64 = self.rng.random_range(0.0..10.0);
        serde_json::json!({
            "event_id": self.uuid(),
            "timestamp": rfc3339(ts),
            "source_module": module,
            "event_type": event_type,
            "schema_version": "1.0.0",
            "severity": severity,
            "environment": "production",
            "payload": { "tenant": tenant, "budget_used_usd": (value * 100.0).round() / 100.0,
                         "rule": if event_type == "security" { "prompt_injection" } else { "daily_budget" } }
        })
        .to_string()
    }

    fn invalid_event(&mut self, ts: i64) -> String {
        match self.rng.random_range(0..4) {
            0 => "{\"event_id\": \"truncated".to_string(),
            1 => format!(
                "{{\"event_id\":\"{}\",\"timestamp\":\"not-a-time\",\"source_module\":\"llm-observatory\",\"event_type\":\"telemetry\",\"payload\":{{}}}}",
                self.uuid()
            ),
            2 => format!(
                "{{\"event_id\":\"{}\",\"timestamp\":\"{}\",\"source_module\":\"llm-observatory\",\"event_type\":\"telemetry\",\"payload\":{{\"latency_ms\":\"slow\"}}}}",
                self.uuid(),
                rfc3339(ts)
            ),
            _ => format!(
                "{{\"event_id\":\"{}\",\"timestamp\":\"{}\",\"event_type\":\"telemetry\",\"payload\":{{}}}}",
                self.uuid(),
                rfc3339(ts)
            ),
        }
    }

    /// The next event as one JSON line (no newline). `now_us` switches to live timestamps.
    pub fn next_event(&mut self, now_us: Option<i64>) -> String {
        if let Some(queued) = self.queued.pop_front() {
            self.emitted += 1;
            return queued;
        }
        let ts = self.next_time(now_us);
        self.emitted += 1;
        if self.config.invalid_ratio > 0.0 && self.rng.random_bool(self.config.invalid_ratio.clamp(0.0, 1.0)) {
            return self.invalid_event(ts);
        }
        let roll: f64 = self.rng.random();
        if roll < 0.05 {
            return self.module_event(ts);
        }
        if roll < 0.15 {
            // A trace: an agent step (root) with 2-4 LLM calls as children.
            let trace = self.uuid();
            let root_id = self.uuid();
            let children = self.rng.random_range(2..=4);
            let mut offset = 0i64;
            for _ in 0..children {
                offset += self.rng.random_range(1_000..50_000);
                let child = self.llm_event(ts + offset, Some(trace.clone()), Some(root_id.clone()));
                self.queued.push_back(child);
            }
            return serde_json::json!({
                "event_id": root_id,
                "timestamp": rfc3339(ts),
                "source_module": "llm-observatory",
                "event_type": "telemetry",
                "severity": "info",
                "environment": "production",
                "correlation_id": trace,
                "payload": { "operation": "invoke_agent", "agent": "support-bot", "steps": children }
            })
            .to_string();
        }
        self.llm_event(ts, None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_batch_body;

    #[test]
    fn deterministic_for_a_seed() {
        let cfg = GeneratorConfig {
            disorder_ms: 500,
            ..GeneratorConfig::default()
        };
        let a: Vec<String> = {
            let mut g = Generator::new(cfg.clone());
            (0..200).map(|_| g.next_event(None)).collect()
        };
        let b: Vec<String> = {
            let mut g = Generator::new(cfg);
            (0..200).map(|_| g.next_event(None)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn generated_events_decode_and_invalid_ones_are_rejected() {
        let mut g = Generator::new(GeneratorConfig {
            invalid_ratio: 0.1,
            ..GeneratorConfig::default()
        });
        let body: String = (0..2000).map(|_| g.next_event(None) + "\n").collect();
        let out = decode_batch_body(body.as_bytes(), 0).expect("decodes");
        assert_eq!(out.total, 2000);
        assert!(
            out.rejected.len() > 100 && out.rejected.len() < 300,
            "{} rejected",
            out.rejected.len()
        );
        assert_eq!(out.batch.num_rows() + out.rejected.len(), 2000);
        let parents = out.batch.column_by_name("parent_event_id").expect("col").null_count();
        assert!(parents < out.batch.num_rows(), "some events have parents");
    }
}
