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

/// How a new topic's (or new partitions') replicas are chosen.
#[derive(Clone, Debug)]
pub enum Layout {
    /// By the broker: this many partitions of this many replicas, spread over the brokers.
    Spread {
        partitions: i32,
        replication_factor: i16,
    },
    /// The client's replica list for each partition.
    Explicit(Vec<Vec<i32>>),
}

/// The placeable brokers (registered, not fenced) in rack-alternating order (Kafka's): with
/// racks, consecutive brokers are in different racks, so a partition's replicas span racks.
fn rack_alternated(image: &MetadataImage) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in image.placeable() {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    let mut out = Vec::with_capacity(image.brokers.len());
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

/// Replica lists for `count` partitions of `replication_factor` replicas, starting at a
/// broker chosen from `seed`: each partition's preferred leader is the next broker, so
/// leaders spread evenly, and its followers are the brokers after it.
pub fn spread(
    image: &MetadataImage,
    count: i32,
    replication_factor: i16,
    seed: usize,
) -> Result<Vec<Vec<i32>>, TopicError> {
    let brokers = rack_alternated(image);
    let n = brokers.len();
    if replication_factor < 1 || replication_factor as usize > n {
        let fenced = match image.fenced.len() {
            0 => String::new(),
            f => format!(" and unfenced ({f} fenced: not heard from lately)"),
        };
        return Err(TopicError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Unable to replicate the partition {replication_factor} time(s): The target \
                 replication factor of {replication_factor} cannot be reached because only {n} \
                 broker(s) are registered{fenced}."
            ),
        ));
    }
    Ok((0..count.max(0) as usize)
        .map(|p| {
            (0..replication_factor as usize)
                .map(|r| brokers[(seed + p + r) % n])
                .collect()
        })
        .collect())
}

/// Checks a client's replica lists: known brokers, no broker twice in a list, one
/// replication factor for all.
pub fn check_assignments(image: &MetadataImage, lists: &[Vec<i32>]) -> Result<(), TopicError> {
    let bad = |m: String| Err(TopicError::new(ResponseError::InvalidReplicaAssignment, m));
    let Some(rf) = lists.first().map(Vec::len) else {
        return bad("no replica assignment given".into());
    };
    for (p, replicas) in lists.iter().enumerate() {
        if replicas.is_empty() {
            return bad(format!("partition {p} has no replicas"));
        }
        if replicas.len() != rf {
            return bad(format!(
                "All partitions should have the same number of replicas; partition {p} has {}, \
                 others {rf}",
                replicas.len()
            ));
        }
        for (i, b) in replicas.iter().enumerate() {
            if replicas[..i].contains(b) {
                return bad(format!("Duplicate brokers not allowed in replica assignment: {replicas:?} for partition {p}"));
            }
            if !image.brokers.contains_key(b) {
                return bad(format!(
                    "Unknown broker {b} in the replica assignment of partition {p}"
                ));
            }
            if image.fenced.contains(b) {
                return bad(format!(
                    "Broker {b} in the replica assignment of partition {p} is fenced: the \
                     controller has not heard from it within broker.session.timeout.ms"
                ));
            }
        }
    }
    Ok(())
}

/// Checks a new topic against the image and the budget, places its replicas, and returns
/// the record that creates it (taking its partitions from the budget).
pub fn plan_create(
    image: &MetadataImage,
    budget: &mut PartitionBudget,
    name: &str,
    layout: Layout,
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
    let partitions = match &layout {
        Layout::Spread { partitions, .. } => *partitions,
        Layout::Explicit(lists) => lists.len().min(i32::MAX as usize) as i32,
    };
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("partitions must be 1..={MAX_PARTITIONS_PER_TOPIC}"),
        ));
    }
    let id = Uuid::new_v4();
    let assignments = match layout {
        Layout::Spread {
            replication_factor, ..
        } => spread(
            image,
            partitions,
            replication_factor,
            id.as_bytes()[0] as usize,
        )?,
        Layout::Explicit(lists) => {
            check_assignments(image, &lists)?;
            lists
        }
    };
    for (k, v) in &configs {
        validate_topic_config(k, v)
            .map_err(|m| TopicError::new(ResponseError::InvalidConfig, m))?;
    }
    budget.take(partitions)?;
    Ok(MetaRecord::TopicCreated {
        name: name.to_string(),
        id,
        partitions,
        configs,
        assignments,
    })
}
