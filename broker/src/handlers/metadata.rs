//! Metadata: brokers, topics with ids and partitions; creates unknown topics when
//! `auto.create.topics.enable` is set and the client allows it.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_protocol::kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use sluice_protocol::{ResponseError, VersionRange};
use uuid::Uuid;

use super::admin::{
    AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_AUTHORIZED_OPERATIONS, TOPIC_AUTHORIZED_OPERATIONS,
};
use super::{str_bytes, topic_name};
use crate::metadata::{MetadataImage, Topic};
use crate::shard::Shard;
use crate::topics::{plan_create, Layout, PartitionBudget};

pub const VERSIONS: VersionRange = VersionRange::new(0, 13);

/// The first version in which Kafka looks topics up by id.
const TOPIC_ID_LOOKUP_VERSION: i16 = 12;

pub async fn handle(s: &Rc<Shard>, r: MetadataRequest, version: i16) -> MetadataResponse {
    // Before v12 a topic id is an invalid request, and Kafka's whole answer is that error:
    // every topic with INVALID_REQUEST, no brokers, no cluster id.
    let ids = r.topics.iter().flatten().any(|t| !t.topic_id.is_nil());
    if version < TOPIC_ID_LOOKUP_VERSION && ids {
        let mut resp = MetadataResponse::default();
        resp.topics = r
            .topics
            .iter()
            .flatten()
            .map(|t| {
                let name = t.name.as_ref().map_or("", |n| n.0.as_str()).to_string();
                missing_entry(Some(name), t.topic_id, ResponseError::InvalidRequest)
            })
            .collect();
        return resp;
    }
    let mut image = s.metadata();
    // v0 has no allow flag and always auto-creates; v4+ lets the client say no.
    let allow_create =
        s.config.auto_create_topics_enable && (version < 4 || r.allow_auto_topic_creation);
    let requested: Option<Vec<(Option<String>, Uuid)>> = r.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| {
                (
                    t.name.as_ref().map(|n| n.0.as_str().to_string()),
                    t.topic_id,
                )
            })
            .collect()
    });
    if let (Some(req), true) = (&requested, allow_create) {
        let missing: Vec<String> = req
            .iter()
            .filter_map(|(n, _)| n.clone())
            .filter(|n| image.topic(n).is_none() && crate::config::valid_topic_name(n))
            .collect();
        if !missing.is_empty() {
            let layout = Layout::Spread {
                partitions: s.config.num_partitions,
                replication_factor: s.config.default_replication_factor,
            };
            let (per_shard, shards) = (s.config.topic_partitions_per_shard, s.count);
            let updated = s
                .update_metadata(move |img| {
                    let mut budget = PartitionBudget::new(img, per_shard, shards);
                    Ok::<_, ()>(
                        missing
                            .iter()
                            .filter_map(|n| {
                                let layout = layout.clone();
                                plan_create(img, &mut budget, n, layout, BTreeMap::new()).ok()
                            })
                            .collect(),
                    )
                })
                .await;
            if let Ok(i) = updated {
                image = i;
            }
        }
    }

    let mut resp = MetadataResponse::default();
    resp.brokers = s
        .brokers(&image)
        .into_iter()
        .map(|b| {
            let mut e = MetadataResponseBroker::default();
            e.node_id = BrokerId(b.id);
            e.host = str_bytes(&b.host);
            e.port = b.port;
            e.rack = b.rack.map(|r| str_bytes(&r));
            e
        })
        .collect();
    resp.cluster_id = Some(str_bytes(&image.cluster_id));
    // Any broker takes admin requests (it forwards them to the controller leader), so
    // clients are pointed at the leader when one is known, else at this broker.
    resp.controller_id = BrokerId(s.controller_id());
    // Without ACLs everything is allowed; clients that ask (kafka-python) get real bits.
    resp.cluster_authorized_operations = if r.include_cluster_authorized_operations {
        CLUSTER_AUTHORIZED_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let topic_ops = if r.include_topic_authorized_operations {
        TOPIC_AUTHORIZED_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    resp.topics = match requested {
        None => image
            .topics
            .values()
            .map(|t| topic_entry(s, t, topic_ops))
            .collect(),
        Some(req) => req
            .into_iter()
            .map(|(name, id)| {
                lookup(&image, name.as_deref(), id).map_or_else(
                    |e| missing_entry(name, id, e),
                    |t| topic_entry(s, t, topic_ops),
                )
            })
            .collect(),
    };
    resp
}

fn lookup<'a>(
    image: &'a MetadataImage,
    name: Option<&str>,
    id: Uuid,
) -> Result<&'a Topic, ResponseError> {
    match name {
        Some(n) if !crate::config::valid_topic_name(n) => Err(ResponseError::InvalidTopicException),
        Some(n) => image.topic(n).ok_or(ResponseError::UnknownTopicOrPartition),
        None => image.topic_by_id(&id).ok_or(ResponseError::UnknownTopicId),
    }
}

fn missing_entry(name: Option<String>, id: Uuid, e: ResponseError) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = e.code();
    t.name = name.map(|n| topic_name(&n));
    t.topic_id = id;
    t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    t
}

fn topic_entry(s: &Shard, topic: &Topic, authorized_operations: i32) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(topic_name(&topic.name));
    t.topic_id = topic.id;
    t.is_internal = topic.name.starts_with("__");
    t.topic_authorized_operations = authorized_operations;
    t.partitions = (0..topic.partitions)
        .map(|i| {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i;
            let view = s.partition_view(topic, i);
            p.replica_nodes = view.replicas.into_iter().map(BrokerId).collect();
            p.isr_nodes = view.isr.into_iter().map(BrokerId).collect();
            p.offline_replicas = view.offline.into_iter().map(BrokerId).collect();
            p.leader_epoch = view.epoch;
            match view.leader {
                Some(l) => p.leader_id = BrokerId(l),
                None => {
                    // Between terms, or no replica can serve: clients wait and ask again.
                    p.error_code = ResponseError::LeaderNotAvailable.code();
                    p.leader_id = BrokerId(-1);
                }
            }
            p
        })
        .collect();
    t
}
