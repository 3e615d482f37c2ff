//! CreatePartitions: grows topics (never shrinks them). New partitions start empty at offset
//! 0 and are open on their owner shards when the answer goes out.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use sluice_protocol::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use sluice_protocol::kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse,
};
use sluice_protocol::{ResponseError, VersionRange};

use super::admin::{change_metadata, duplicates, error_fields};
use crate::config::MAX_PARTITIONS_PER_TOPIC;
use crate::metadata::{MetaRecord, MetadataImage};
use crate::shard::Shard;
use crate::topics::{check_assignments, spread, PartitionBudget, TopicError};

pub const VERSIONS: VersionRange = VersionRange::new(0, 3);

/// What the plan needs of one requested topic.
#[derive(Clone, Debug)]
struct Grow {
    name: String,
    count: i32,
    /// Replica lists for the new partitions, if the client gave them.
    assignments: Option<Vec<Vec<i32>>>,
}

pub async fn handle(s: &Rc<Shard>, r: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let names: Vec<String> = r
        .topics
        .iter()
        .map(|t| t.name.0.as_str().to_string())
        .collect();
    let dup = duplicates(&names);
    let grows: Vec<Grow> = r.topics.iter().map(grow_of).collect();
    let (per_shard, shards) = (s.config.topic_partitions_per_shard, s.count);
    let planned = change_metadata(s, r.validate_only, move |image| {
        let mut budget = PartitionBudget::new(image, per_shard, shards);
        let mut records = Vec::new();
        let outcomes: Vec<Result<(), TopicError>> = grows
            .iter()
            .zip(dup.iter().copied())
            .map(|(g, dup)| {
                if dup {
                    return Err(TopicError::new(
                        ResponseError::InvalidRequest,
                        "Duplicate topic in the request.",
                    ));
                }
                records.push(plan_grow(image, &mut budget, g)?);
                Ok(())
            })
            .collect();
        (records, outcomes)
    })
    .await;

    let mut resp = CreatePartitionsResponse::default();
    for (i, t) in r.topics.into_iter().enumerate() {
        let result = match &planned {
            Ok(outcomes) => outcomes[i].clone(),
            Err(code) => Err(TopicError::new(
                *code,
                "the metadata change could not be made durable",
            )),
        };
        let (error_code, error_message) = error_fields(&result);
        let mut e = CreatePartitionsTopicResult::default();
        e.name = t.name;
        e.error_code = error_code;
        // Kafka names no reason for an unknown topic here.
        e.error_message =
            error_message.filter(|_| error_code != ResponseError::UnknownTopicOrPartition.code());
        resp.results.push(e);
    }
    resp
}

fn grow_of(t: &CreatePartitionsTopic) -> Grow {
    Grow {
        name: t.name.0.as_str().to_string(),
        count: t.count,
        // Clients send null for "no assignments"; an empty list means the same here.
        assignments: t.assignments.as_ref().filter(|a| !a.is_empty()).map(|a| {
            a.iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        }),
    }
}

fn plan_grow(
    image: &MetadataImage,
    budget: &mut PartitionBudget,
    g: &Grow,
) -> Result<MetaRecord, TopicError> {
    let topic = image.topic(&g.name).ok_or_else(|| {
        TopicError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic {} does not exist", g.name),
        )
    })?;
    if g.count == topic.partitions {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("Topic already has {} partitions.", topic.partitions),
        ));
    }
    if g.count < topic.partitions {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!(
                "Topic currently has {} partitions, which is higher than the requested {}.",
                topic.partitions, g.count
            ),
        ));
    }
    if g.count > MAX_PARTITIONS_PER_TOPIC {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("a topic can have at most {MAX_PARTITIONS_PER_TOPIC} partitions"),
        ));
    }
    if let Some(a) = &g.assignments {
        let added = (g.count - topic.partitions) as usize;
        if a.len() != added {
            return Err(TopicError::new(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "Increasing the number of partitions by {added} but {} assignments provided.",
                    a.len()
                ),
            ));
        }
        check_assignments(image, a)?;
        if a[0].len() as i16 != topic.replication_factor() {
            return Err(TopicError::new(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "the new partitions need {} replicas each, as the topic's others have",
                    topic.replication_factor()
                ),
            ));
        }
    }
    let added = g.count - topic.partitions;
    let assignments = match &g.assignments {
        Some(a) => a.clone(),
        None => spread(
            image,
            added,
            topic.replication_factor(),
            topic.id.as_bytes()[0] as usize + topic.partitions as usize,
        )?,
    };
    budget.take(added)?;
    Ok(MetaRecord::PartitionsCreated {
        id: topic.id,
        count: g.count,
        assignments,
    })
}
