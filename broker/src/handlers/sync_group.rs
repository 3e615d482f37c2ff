//! SyncGroup: the leader's assignment is relayed byte for byte to every member; followers
//! wait for it. The group is recorded in `__consumer_offsets` before the leader is answered.

use std::rc::Rc;

use bytes::Bytes;
use sluice_protocol::kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use sluice_protocol::{ResponseError, VersionRange};

use super::str_bytes;
use crate::groups::{group_record, write_group_records, SyncResult};
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 5);

pub async fn handle(s: &Rc<Shard>, r: SyncGroupRequest) -> SyncGroupResponse {
    let group = r.group_id.0.as_str().to_string();
    let member = r.member_id.as_str().to_string();
    let generation = r.generation_id;
    let instance = r.group_instance_id.as_ref().map(|i| i.as_str().to_string());
    let assignments: Vec<(String, Bytes)> = r
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
        .collect();
    let g = group.clone();
    let outcome = s
        .with_group(&group, move |sh, p| async move {
            let (rx, became_stable) =
                sh.groups
                    .sync(&g, generation, &member, instance.as_deref(), assignments)?;
            if became_stable {
                let protocol_type = sh
                    .groups
                    .groups
                    .borrow()
                    .get(&g)
                    .and_then(|x| x.protocol_type.clone());
                write_group_records(&p, group_record(&g, Some(protocol_type))).await?;
            }
            Ok::<_, ResponseError>(rx)
        })
        .await
        .and_then(|r| r);
    let result = match outcome {
        Ok(rx) => rx.recv_async().await.unwrap_or(SyncResult {
            error: Some(ResponseError::RebalanceInProgress),
            ..SyncResult::default()
        }),
        Err(e) => SyncResult {
            error: Some(e),
            ..SyncResult::default()
        },
    };
    let mut resp = SyncGroupResponse::default();
    resp.error_code = result.error.map_or(0, |e| e.code());
    resp.protocol_type = result.protocol_type.as_deref().map(str_bytes);
    resp.protocol_name = result.protocol.as_deref().map(str_bytes);
    resp.assignment = result.assignment;
    resp
}
