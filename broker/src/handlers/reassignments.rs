//! AlterPartitionReassignments and ListPartitionReassignments (`kafka-reassign-partitions`,
//! KIP-455): moving a partition's replicas between brokers. Altering records the target in
//! the controller's log and answers once it is recorded, as Kafka does; the partition's
//! leader then moves its Raft group there (`shard/reassign.rs`), and the move is listed
//! until the new voters hold it. A cancel moves the partition back to the replicas it had
//! (those being added leave again), through the same path, since they may already vote.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition;
use sluice_protocol::kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use sluice_protocol::kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use sluice_protocol::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use sluice_protocol::kafka_protocol::protocol::StrBytes;
use sluice_protocol::{ResponseError, VersionRange};

use super::admin::change_metadata;
use crate::metadata::{MetaRecord, MetadataImage, Reassignment, Topic};
use crate::shard::Shard;
use crate::topics::TopicError;

pub const ALTER_VERSIONS: VersionRange = VersionRange::new(0, 1);
pub const LIST_VERSIONS: VersionRange = VersionRange::new(0, 0);

/// One partition of the request: its new replicas, or `None` to cancel its move.
#[derive(Clone, Debug)]
struct Move {
    topic: String,
    partition: i32,
    target: Option<Vec<i32>>,
}

pub async fn alter(
    s: &Rc<Shard>,
    r: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    // v0 has no flag; its moves may change the replication factor.
    let allow_rf_change = version == 0 || r.allow_replication_factor_change;
    let moves: Vec<Move> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p: &ReassignablePartition| Move {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                target: p
                    .replicas
                    .as_ref()
                    .map(|rs| rs.iter().map(|b| b.0).collect()),
            })
        })
        .collect();
    let planned = change_metadata(s, false, move |image| {
        let mut records = Vec::new();
        let outcomes: Vec<Result<(), TopicError>> = moves
            .iter()
            .map(|m| {
                records.extend(plan(image, m, allow_rf_change)?);
                Ok(())
            })
            .collect();
        (records, outcomes)
    })
    .await;

    let mut resp = AlterPartitionReassignmentsResponse::default();
    resp.allow_replication_factor_change = allow_rf_change;
    resp.error_message = None;
    let mut i = 0;
    for t in r.topics {
        let mut tr = ReassignableTopicResponse::default();
        tr.name = t.name;
        for p in t.partitions {
            let result = match &planned {
                Ok(outcomes) => outcomes[i].clone(),
                Err(code) => Err(TopicError::new(
                    *code,
                    "the reassignment could not be recorded",
                )),
            };
            i += 1;
            let mut pr = ReassignablePartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.error_message = None;
            if let Err(e) = result {
                pr.error_code = e.code.code();
                // Kafka gives no reason for a cancel with nothing to cancel.
                pr.error_message = (e.code != ResponseError::NoReassignmentInProgress)
                    .then(|| StrBytes::from_string(e.message));
            }
            tr.partitions.push(pr);
        }
        resp.responses.push(tr);
    }
    resp
}

/// The records that start (or cancel) one move, checked against `image`.
fn plan(
    image: &MetadataImage,
    m: &Move,
    allow_rf_change: bool,
) -> Result<Vec<MetaRecord>, TopicError> {
    let invalid = |msg: String| TopicError::new(ResponseError::InvalidReplicaAssignment, msg);
    let topic: &Topic = image
        .topic(&m.topic)
        .filter(|t| (0..t.partitions).contains(&m.partition))
        .ok_or_else(|| {
            TopicError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("Unable to find partition {}-{}.", m.topic, m.partition),
            )
        })?;
    let ongoing = topic.reassignments.get(&m.partition);
    let current = topic.replicas(m.partition);
    let Some(target) = &m.target else {
        // Cancel: back to the replicas it had, less those it was adding.
        let r = ongoing.ok_or_else(|| {
            TopicError::new(
                ResponseError::NoReassignmentInProgress,
                format!(
                    "Unable to find an ongoing reassignment for partition {}-{}.",
                    m.topic, m.partition
                ),
            )
        })?;
        let back: Vec<i32> = current
            .iter()
            .copied()
            .filter(|b| !r.adding.contains(b))
            .collect();
        return Ok(start(topic, m.partition, back, None));
    };
    if target.is_empty() {
        return Err(invalid(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    if (1..target.len()).any(|i| target[..i].contains(&target[i])) {
        return Err(invalid(
            "The manual partition assignment includes duplicate replicas.".into(),
        ));
    }
    if let Some(b) = target.iter().find(|b| !image.brokers.contains_key(b)) {
        return Err(invalid(format!(
            "The manual partition assignment includes broker {b}, but no such broker is \
             registered."
        )));
    }
    let settled = topic.settled_replicas(m.partition);
    let rf = ongoing.map_or(settled.len(), |r| r.target.len());
    if !allow_rf_change && target.len() != rf {
        return Err(TopicError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "The replication factor is changed from {rf} to {} but \
                 allowReplicationFactorChange is false",
                target.len()
            ),
        ));
    }
    if ongoing.is_none() && current == target.as_slice() {
        return Ok(Vec::new());
    }
    Ok(start(topic, m.partition, target.clone(), ongoing))
}

/// Starts moving `partition` to `target`. With the same replicas in another order and no
/// move in progress, it completes at once: no replica joins or leaves the group.
fn start(
    topic: &Topic,
    partition: i32,
    target: Vec<i32>,
    ongoing: Option<&Reassignment>,
) -> Vec<MetaRecord> {
    let r = Reassignment::new(topic.replicas(partition), &target);
    let mut records = vec![MetaRecord::ReassignmentStarted {
        id: topic.id,
        partition,
        target: target.clone(),
    }];
    if ongoing.is_none() && r.adding.is_empty() && r.removing.is_empty() {
        records.push(MetaRecord::ReassignmentCompleted {
            id: topic.id,
            partition,
            target,
        });
    }
    records
}

pub async fn list(
    s: &Rc<Shard>,
    r: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = s.metadata();
    // Named partitions that are not being moved, or do not exist, are left out, as Kafka
    // does; no list names every partition.
    let wanted: Vec<(&Topic, Vec<i32>)> = match &r.topics {
        None => image
            .topics
            .values()
            .map(|t| (t, t.reassignments.keys().copied().collect()))
            .collect(),
        Some(ts) => ts
            .iter()
            .filter_map(|w| {
                image
                    .topic(w.name.0.as_str())
                    .map(|t| (t, w.partition_indexes.clone()))
            })
            .collect(),
    };
    let mut resp = ListPartitionReassignmentsResponse::default();
    resp.error_message = None;
    for (t, partitions) in wanted {
        let mut ot = OngoingTopicReassignment::default();
        ot.name = TopicName(StrBytes::from_string(t.name.clone()));
        for p in partitions {
            let Some(r) = t.reassignments.get(&p) else {
                continue;
            };
            let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect();
            let mut op = OngoingPartitionReassignment::default();
            op.partition_index = p;
            op.replicas = ids(t.replicas(p));
            op.adding_replicas = ids(&r.adding);
            op.removing_replicas = ids(&r.removing);
            ot.partitions.push(op);
        }
        if !ot.partitions.is_empty() {
            resp.topics.push(ot);
        }
    }
    resp
}
