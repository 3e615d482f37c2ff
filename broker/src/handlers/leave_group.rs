//! LeaveGroup: members leave at once (v3+ in batches, static members by instance id), and
//! the rest of the group rebalances without waiting for a session timeout.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::leave_group_response::MemberResponse;
use sluice_protocol::kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use sluice_protocol::VersionRange;

use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 5);
const BATCHED_VERSION: i16 = 3;

pub async fn handle(s: &Rc<Shard>, r: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = r.group_id.0.as_str().to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= BATCHED_VERSION {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_string(),
                    m.group_instance_id.as_ref().map(|i| i.as_str().to_string()),
                )
            })
            .collect()
    } else {
        vec![(r.member_id.as_str().to_string(), None)]
    };
    let g = group.clone();
    let who = leaving.clone();
    let results = s
        .with_group(&group, move |sh, _| async move {
            let limits = sh.group_limits();
            who.iter()
                .map(|(m, inst)| sh.groups.leave(&g, m, inst.as_deref(), &limits).err())
                .collect::<Vec<_>>()
        })
        .await;
    let mut resp = LeaveGroupResponse::default();
    match results {
        Err(e) => resp.error_code = e.code(),
        Ok(errors) if version < BATCHED_VERSION => {
            resp.error_code = errors.first().copied().flatten().map_or(0, |e| e.code())
        }
        Ok(errors) => {
            resp.members = leaving
                .into_iter()
                .zip(errors)
                .map(|((id, inst), e)| {
                    let mut m = MemberResponse::default();
                    m.member_id = super::str_bytes(&id);
                    m.group_instance_id = inst.as_deref().map(super::str_bytes);
                    m.error_code = e.map_or(0, |e| e.code());
                    m
                })
                .collect();
        }
    }
    resp
}
