//! Topic creation at startup (`kafka.create_topics`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::config::KafkaConfig;

/// Creates the source and dead-letter topics that do not exist yet.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = super::client::producer(config)
        .create()
        .map_err(|e| format!("cannot create the Kafka admin client: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    for t in config.topics() {
        names.push(config.dlq_topic_for(&t));
        names.push(t);
    }
    names.sort();
    names.dedup();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                config.topic_partitions,
                TopicReplication::Fixed(config.topic_replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| format!("cannot create Kafka topics {names:?}: {e}"))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, partitions = config.topic_partitions, "created kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("cannot create Kafka topic {name}: {code}")),
        }
    }
    Ok(())
}
