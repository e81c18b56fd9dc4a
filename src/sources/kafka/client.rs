//! librdkafka client configurations built from [`KafkaConfig`].

use rdkafka::ClientConfig;

use super::config::KafkaConfig;

fn base(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.brokers.as_deref().unwrap_or_default());
    c.set("client.id", "llm-analytics-hub");
    for (k, v) in &config.client {
        c.set(k, v);
    }
    c
}

/// The group consumer. Offsets are committed explicitly, only for events already durable.
pub fn consumer(config: &KafkaConfig) -> ClientConfig {
    let mut c = base(config);
    c.set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", config.start_offset.as_str())
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout_ms / 3).max(100).to_string(),
        )
        .set("statistics.interval.ms", config.statistics_interval_ms.to_string())
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("fetch.min.bytes", "1")
        .set("queued.min.messages", "200000");
    // Settings given by the operator win over ours.
    for (k, v) in &config.client {
        c.set(k, v);
    }
    c
}

/// An idempotent producer (`acks=all`, lz4) whose deliveries fail after `produce_timeout_ms`.
pub fn producer(config: &KafkaConfig) -> ClientConfig {
    let mut c = base(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", config.produce_timeout_ms.to_string());
    for (k, v) in &config.client {
        c.set(k, v);
    }
    c
}
