//! Kafka request handlers, one file per API. Each handler declares the versions it serves
//! (`VERSIONS`) beside its code; `ROUTES` collects them, and ApiVersions is generated from
//! that table, so what is advertised is exactly what is handled.

use std::rc::Rc;

use bytes::Bytes;
use sluice_protocol::kafka_protocol::messages::{ApiKey, TopicName};
use sluice_protocol::kafka_protocol::protocol::StrBytes;
use sluice_protocol::{
    encode_response, Request, RequestKind, ResponseKind, VersionRange, VersionTable,
};
use tracing::error;

use crate::shard::Shard;

mod admin;
mod alter_configs;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_log_dirs;
mod describe_topic_partitions;
mod fetch;
mod incremental_alter_configs;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;

/// ApiVersions v0–v4: v3+ is flexible; kafka-protocol 0.18 does not know v5, which newer
/// clients try first and then retry lower after our UNSUPPORTED_VERSION answer.
const API_VERSIONS_VERSIONS: VersionRange = VersionRange::new(0, 4);

/// Every API Sluice serves, with the versions each handler supports.
pub const ROUTES: &[(ApiKey, VersionRange)] = &[
    (ApiKey::ApiVersions, API_VERSIONS_VERSIONS),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (ApiKey::InitProducerId, init_producer_id::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::CreatePartitions, create_partitions::VERSIONS),
    (ApiKey::DeleteRecords, delete_records::VERSIONS),
    (ApiKey::DescribeConfigs, describe_configs::VERSIONS),
    (ApiKey::AlterConfigs, alter_configs::VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        incremental_alter_configs::VERSIONS,
    ),
    (ApiKey::DescribeCluster, describe_cluster::VERSIONS),
    (
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch::VERSIONS,
    ),
    (ApiKey::DescribeLogDirs, describe_log_dirs::VERSIONS),
    (
        ApiKey::DescribeTopicPartitions,
        describe_topic_partitions::VERSIONS,
    ),
];

pub fn version_table() -> VersionTable {
    VersionTable::new(ROUTES.iter().copied()).expect("the route table is valid")
}

/// Runs one request; `None` means no response is sent (Produce with acks=0).
pub async fn handle(s: Rc<Shard>, req: Request) -> Option<Bytes> {
    let version = req.api_version;
    let correlation_id = req.correlation_id();
    let response = match req.body {
        RequestKind::ApiVersions(_) => {
            ResponseKind::ApiVersions(s.versions.api_versions_response())
        }
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(&s, r, version).await),
        RequestKind::Produce(r) => ResponseKind::Produce(produce::handle(&s, r, version).await?),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(&s, r, version).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(&s, r, version).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(&s, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(&s, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(&s, r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(&s, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(&s, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(&s, r).await)
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(alter_configs::handle(&s, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs::handle(&s, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(&s, r, version).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(&s, r).await)
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(&s, r).await)
        }
        RequestKind::DescribeTopicPartitions(r) => {
            ResponseKind::DescribeTopicPartitions(describe_topic_partitions::handle(&s, r).await)
        }
        other => {
            // Decoding only admits APIs in ROUTES, so this is a routing bug.
            error!(api = ?req.api_key, "request decoded for an API without a handler: {other:?}");
            return None;
        }
    };
    match encode_response(version, correlation_id, &response) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            error!(api = ?req.api_key, version, error = %e, "response does not encode");
            None
        }
    }
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
