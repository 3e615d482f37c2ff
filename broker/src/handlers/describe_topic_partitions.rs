//! DescribeTopicPartitions (key 75): what the Java AdminClient's `describeTopics` uses since
//! Kafka 3.8. Topics in name order, each with its id and partitions; at most
//! `response_partition_limit` partitions per answer, with a cursor to continue from.

use std::collections::BTreeSet;
use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use sluice_protocol::kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use sluice_protocol::{ResponseError, VersionRange};

use super::admin::TOPIC_AUTHORIZED_OPERATIONS;
use super::topic_name;
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 0);

/// Kafka's `max.request.partition.size.limit` default: the most partitions in one answer.
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub async fn handle(
    s: &Rc<Shard>,
    r: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = s.metadata();
    // No topics named means every topic.
    let names: BTreeSet<String> = if r.topics.is_empty() {
        image.topics.keys().cloned().collect()
    } else {
        r.topics
            .iter()
            .map(|t| t.name.0.as_str().to_string())
            .collect()
    };
    let limit = match r.response_partition_limit {
        n if n <= 0 => MAX_PARTITIONS_PER_RESPONSE,
        n => n.min(MAX_PARTITIONS_PER_RESPONSE),
    };
    let (first_topic, first_partition) = match &r.cursor {
        Some(c) => (Some(c.topic_name.0.as_str().to_string()), c.partition_index),
        None => (None, 0),
    };
    let mut resp = DescribeTopicPartitionsResponse::default();
    let mut budget = limit;
    let mut names = names
        .into_iter()
        .filter(|n| first_topic.as_ref().is_none_or(|f| n >= f))
        .peekable();
    while let Some(name) = names.next() {
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(topic_name(&name));
        // Kafka always fills this in here (the request has no flag), unknown topics too;
        // no authorizer: all.
        t.topic_authorized_operations = TOPIC_AUTHORIZED_OPERATIONS;
        let Some(topic) = image.topic(&name) else {
            t.error_code = ResponseError::UnknownTopicOrPartition.code();
            resp.topics.push(t);
            continue;
        };
        t.topic_id = topic.id;
        t.is_internal = topic.name.starts_with("__");
        let start = if first_topic.as_deref() == Some(name.as_str()) {
            first_partition.max(0)
        } else {
            0
        };
        let end = topic.partitions.min(start.saturating_add(budget));
        t.partitions = (start..end)
            .map(|i| {
                let mut p = DescribeTopicPartitionsResponsePartition::default();
                p.partition_index = i;
                let view = s.partition_view(topic, i);
                p.leader_id = BrokerId(view.leader.unwrap_or(-1));
                p.leader_epoch = view.epoch;
                p.replica_nodes = view.replicas.into_iter().map(BrokerId).collect();
                p.isr_nodes = view.isr.into_iter().map(BrokerId).collect();
                p.eligible_leader_replicas = Some(Vec::new());
                p.last_known_elr = Some(Vec::new());
                p.offline_replicas = view.offline.into_iter().map(BrokerId).collect();
                p
            })
            .collect();
        budget -= (end - start).max(0);
        resp.topics.push(t);
        if end < topic.partitions {
            resp.next_cursor = Some(cursor(&name, end));
            break;
        }
        if budget <= 0 {
            if let Some(next) = names.peek() {
                resp.next_cursor = Some(cursor(next, 0));
            }
            break;
        }
    }
    resp
}

fn cursor(topic: &str, partition: i32) -> Cursor {
    let mut c = Cursor::default();
    c.topic_name = topic_name(topic);
    c.partition_index = partition;
    c
}
