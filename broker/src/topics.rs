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

/// Checks a new topic against the image and returns the record that creates it.
pub fn plan_create(
    image: &MetadataImage,
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
    Ok(MetaRecord::TopicCreated {
        name: name.to_string(),
        id: Uuid::new_v4(),
        partitions,
        configs,
    })
}
