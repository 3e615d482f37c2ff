//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use sluice_protocol::VersionRange;

use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 4);

pub async fn handle(s: &Rc<Shard>, r: HeartbeatRequest) -> HeartbeatResponse {
    let group = r.group_id.0.as_str().to_string();
    let member = r.member_id.as_str().to_string();
    let generation = r.generation_id;
    let instance = r.group_instance_id.as_ref().map(|i| i.as_str().to_string());
    let g = group.clone();
    let result = s
        .with_group(&group, move |sh, _| async move {
            sh.groups
                .heartbeat(&g, generation, &member, instance.as_deref())
        })
        .await
        .and_then(|r| r);
    let mut resp = HeartbeatResponse::default();
    resp.error_code = result.err().map_or(0, |e| e.code());
    resp
}
