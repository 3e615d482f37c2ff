//! Topic creation rules shared by CreateTopics and Metadata auto-creation.

use std::collections::BTreeMap;

use sluice_protocol::ResponseError;
use uuid::Uuid;

use crate::config::{valid_topic_name, validate_topic_config, MAX_PARTITIONS_PER_TOPIC};
use crate::metadata::{MetaRecord, MetadataImage};

/// Why a topic can't be created, as Kafka reports it.
#[derive(Clone, Debug)]
pub struct TopicError {
    pub code: ResponseError,
    pub message: String,
}

impl TopicError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

/// Partitions the broker may still take in one metadata change: `topic.partitions.per.shard`
/// times the shard count, less those in the image and those planned earlier in the change.
pub struct PartitionBudget {
    left: i64,
    limit_per_shard: usize,
    shards: usize,
}

impl PartitionBudget {
    pub fn new(image: &MetadataImage, limit_per_shard: usize, shards: usize) -> Self {
        let held: i64 = image.topics.values().map(|t| t.partitions as i64).sum();
        PartitionBudget {
            left: (limit_per_shard * shards) as i64 - held,
            limit_per_shard,
            shards,
        }
    }

    /// No limit: for the broker's own topics, which exist before any user's.
    pub fn unlimited() -> Self {
        PartitionBudget {
            left: i64::MAX,
            limit_per_shard: usize::MAX,
            shards: 1,
        }
    }

    /// Takes `n` partitions, or refuses naming the limit.
    pub fn take(&mut self, n: i32) -> Result<(), TopicError> {
        if n as i64 > self.left {
            return Err(TopicError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "{n} more partitions would exceed the broker's limit of {}                      (topic.partitions.per.shard = {} x {} shards); {} can still be created",
                    self.limit_per_shard * self.shards,
                    self.limit_per_shard,
                    self.shards,
                    self.left.max(0)
                ),
            ));
        }
        self.left -= n as i64;
        Ok(())
    }
}

/// Checks a new topic against the image and the budget, and returns the record that creates
/// it (taking its partitions from the budget).
pub fn plan_create(
    image: &MetadataImage,
    budget: &mut PartitionBudget,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
) -> Result<MetaRecord, TopicError> {
    if !valid_topic_name(name) {
        return Err(TopicError::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} is not 1-249 of [a-zA-Z0-9._-]"),
        ));
    }
    if image.topic(name).is_some() {
        return Err(TopicError::new(
            ResponseError::TopicAlreadyExists,
            format!("topic {name} already exists"),
        ));
    }
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("partitions must be 1..={MAX_PARTITIONS_PER_TOPIC}"),
        ));
    }
    // One node: a replication factor above 1 can't be met.
    if replication_factor > 1 {
        return Err(TopicError::new(
            ResponseError::InvalidReplicationFactor,
            "replication factor larger than the number of brokers (1)",
        ));
    }
    for (k, v) in &configs {
        validate_topic_config(k, v)
            .map_err(|m| TopicError::new(ResponseError::InvalidConfig, m))?;
    }
    budget.take(partitions)?;
    Ok(MetaRecord::TopicCreated {
        name: name.to_string(),
        id: Uuid::new_v4(),
        partitions,
        configs,
    })
}
