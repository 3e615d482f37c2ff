//! Kafka request handlers, one file per API. Each handler declares the versions it serves
//! (`VERSIONS`) beside its code; `ROUTES` collects them, and ApiVersions is generated from
//! that table, so what is advertised is exactly what is handled.

use sluice_storage::Offset;
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
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_topic_partitions;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod reassignments;
mod sync_group;
mod unregister_broker;

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
    (ApiKey::ElectLeaders, elect_leaders::VERSIONS),
    (
        ApiKey::AlterPartitionReassignments,
        reassignments::ALTER_VERSIONS,
    ),
    (
        ApiKey::ListPartitionReassignments,
        reassignments::LIST_VERSIONS,
    ),
    (ApiKey::UnregisterBroker, unregister_broker::VERSIONS),
    (ApiKey::FindCoordinator, find_coordinator::VERSIONS),
    (ApiKey::JoinGroup, join_group::VERSIONS),
    (ApiKey::SyncGroup, sync_group::VERSIONS),
    (ApiKey::Heartbeat, heartbeat::VERSIONS),
    (ApiKey::LeaveGroup, leave_group::VERSIONS),
    (ApiKey::OffsetCommit, offset_commit::VERSIONS),
    (ApiKey::OffsetFetch, offset_fetch::VERSIONS),
    (ApiKey::ListGroups, list_groups::VERSIONS),
    (ApiKey::DescribeGroups, describe_groups::VERSIONS),
    (ApiKey::DeleteGroups, delete_groups::VERSIONS),
    (ApiKey::OffsetDelete, offset_delete::VERSIONS),
];

pub fn version_table() -> VersionTable {
    VersionTable::new(ROUTES.iter().copied()).expect("the route table is valid")
}

/// Runs one request; `None` means no response is sent (Produce with acks=0).
pub async fn handle(
    s: Rc<Shard>,
    req: Request,
    peer: Option<std::net::SocketAddr>,
) -> Option<Bytes> {
    let started = std::time::Instant::now();
    let api = req.api_key;
    let version = req.api_version;
    let correlation_id = req.correlation_id();
    let response = match req.body {
        RequestKind::ApiVersions(_) => {
            ResponseKind::ApiVersions(s.versions.api_versions_response())
        }
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(&s, r, version).await),
        RequestKind::Produce(r) => match produce::handle(&s, r, version).await {
            Some(r) => ResponseKind::Produce(r),
            None => {
                s.metrics.request(api, started, &[]);
                return None;
            }
        },
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
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(&s, r, version).await)
        }
        RequestKind::AlterPartitionReassignments(r) => {
            ResponseKind::AlterPartitionReassignments(reassignments::alter(&s, r, version).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(reassignments::list(&s, r).await)
        }
        RequestKind::UnregisterBroker(r) => {
            ResponseKind::UnregisterBroker(unregister_broker::handle(&s, r).await)
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
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(&s, r, version).await)
        }
        RequestKind::JoinGroup(r) => {
            let client_id = req
                .header
                .client_id
                .as_ref()
                .map_or_else(String::new, |c| c.as_str().to_string());
            let host = peer.map_or_else(String::new, |p| format!("/{}", p.ip()));
            ResponseKind::JoinGroup(join_group::handle(&s, r, version, client_id, host).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group::handle(&s, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(&s, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(leave_group::handle(&s, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(&s, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(&s, r, version).await)
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups::handle(&s, r).await),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(&s, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(&s, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(&s, r).await)
        }
        other => {
            // Decoding only admits APIs in ROUTES, so this is a routing bug.
            error!(api = ?req.api_key, "request decoded for an API without a handler: {other:?}");
            return None;
        }
    };
    let encoded = encode_response(version, correlation_id, &response);
    s.metrics.request(api, started, &error_codes(&response));
    match encoded {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            error!(api = ?req.api_key, version, error = %e, "response does not encode");
            None
        }
    }
}

/// Every non-zero error code in a response, top-level and per topic, partition or group, for
/// `sluice_request_errors_total`. Empty (no allocation) for a clean response.
fn error_codes(r: &ResponseKind) -> Vec<i16> {
    let mut v = Vec::new();
    let mut add = |c: i16| {
        if c != 0 {
            v.push(c)
        }
    };
    match r {
        ResponseKind::ApiVersions(r) => add(r.error_code),
        ResponseKind::Metadata(r) => r.topics.iter().for_each(|t| add(t.error_code)),
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| add(p.error_code)),
        ResponseKind::Fetch(r) => {
            add(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| add(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| add(p.error_code)),
        ResponseKind::InitProducerId(r) => add(r.error_code),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| add(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| add(t.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| add(t.error_code)),
        ResponseKind::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| add(p.error_code)),
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|t| add(t.error_code)),
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|t| add(t.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => {
            r.responses.iter().for_each(|t| add(t.error_code))
        }
        ResponseKind::DescribeCluster(r) => add(r.error_code),
        ResponseKind::OffsetForLeaderEpoch(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| add(p.error_code)),
        ResponseKind::DescribeLogDirs(r) => {
            add(r.error_code);
            r.results.iter().for_each(|d| add(d.error_code));
        }
        ResponseKind::DescribeTopicPartitions(r) => r.topics.iter().for_each(|t| add(t.error_code)),
        ResponseKind::FindCoordinator(r) => {
            add(r.error_code);
            r.coordinators.iter().for_each(|c| add(c.error_code));
        }
        ResponseKind::JoinGroup(r) => add(r.error_code),
        ResponseKind::SyncGroup(r) => add(r.error_code),
        ResponseKind::Heartbeat(r) => add(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            add(r.error_code);
            r.members.iter().for_each(|m| add(m.error_code));
        }
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| add(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            add(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| add(p.error_code));
            for g in &r.groups {
                add(g.error_code);
                g.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .for_each(|p| add(p.error_code));
            }
        }
        ResponseKind::ListGroups(r) => add(r.error_code),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| add(g.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| add(g.error_code)),
        ResponseKind::OffsetDelete(r) => {
            add(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| add(p.error_code));
        }
        // Only the APIs in ROUTES are answered.
        _ => {}
    }
    v
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A log offset as Kafka writes it.
pub(crate) fn kafka_offset(o: Offset) -> i64 {
    o.0 as i64
}

/// A Kafka offset from a request as a log offset; negative ones name no record.
pub(crate) fn log_offset(o: i64) -> Option<Offset> {
    u64::try_from(o).ok().map(Offset)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
