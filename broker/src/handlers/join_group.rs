//! JoinGroup: parks until the group's rebalance completes, then answers with the generation,
//! the chosen protocol and (for the leader) every member's metadata.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use sluice_protocol::kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use sluice_protocol::{ResponseError, VersionRange};

use super::str_bytes;
use crate::groups::{JoinRequest, JoinResult};
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 9);
/// From v4 a new member first gets its id with MEMBER_ID_REQUIRED (KIP-394).
const MEMBER_ID_REQUIRED_VERSION: i16 = 4;

pub async fn handle(
    s: &Rc<Shard>,
    r: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let group = r.group_id.0.as_str().to_string();
    let req = JoinRequest {
        group: group.clone(),
        member_id: r.member_id.as_str().to_string(),
        instance_id: r.group_instance_id.as_ref().map(|i| i.as_str().to_string()),
        client_id,
        client_host,
        session_timeout_ms: r.session_timeout_ms,
        // v0 has no rebalance timeout; Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 {
            r.session_timeout_ms
        } else {
            r.rebalance_timeout_ms
        },
        protocol_type: r.protocol_type.as_str().to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= MEMBER_ID_REQUIRED_VERSION,
    };
    let failed = |e: ResponseError| JoinResult {
        error: Some(e),
        generation: -1,
        ..JoinResult::default()
    };
    let waiting = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        s.with_group(&group, move |sh, _| async move {
            sh.groups.join(req, &sh.group_limits())
        })
        .await
    };
    let result = match waiting {
        Ok(rx) => rx
            .recv_async()
            .await
            .unwrap_or_else(|_| failed(ResponseError::UnknownMemberId)),
        Err(e) => failed(e),
    };
    let mut resp = JoinGroupResponse::default();
    resp.error_code = result.error.map_or(0, |e| e.code());
    resp.generation_id = result.generation;
    resp.protocol_type = result.protocol_type.as_deref().map(str_bytes);
    // v0–v6 encode the protocol name as a non-null string; v7+ as Kafka, null on errors.
    resp.protocol_name = match (&result.protocol, version) {
        (None, 7..) if result.error.is_some() => None,
        (p, _) => Some(str_bytes(p.as_deref().unwrap_or(""))),
    };
    resp.leader = str_bytes(&result.leader);
    resp.member_id = str_bytes(&result.member_id);
    resp.members = result
        .members
        .into_iter()
        .map(|(id, inst, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(&id);
            m.group_instance_id = inst.as_deref().map(str_bytes);
            m.metadata = metadata;
            m
        })
        .collect();
    resp
}
