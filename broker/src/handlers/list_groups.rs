//! ListGroups: every group of every shard, filtered by state (v4+) and type (v5+).

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::list_groups_response::ListedGroup;
use sluice_protocol::kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use sluice_protocol::VersionRange;

use super::str_bytes;
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 5);

pub async fn handle(s: &Rc<Shard>, r: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = r
        .states_filter
        .iter()
        .map(|x| x.as_str().to_lowercase())
        .collect();
    let types: Vec<String> = r
        .types_filter
        .iter()
        .map(|x| x.as_str().to_lowercase())
        .collect();
    let mut resp = ListGroupsResponse::default();
    // Every group here speaks the classic protocol.
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return resp;
    }
    for target in 0..s.count {
        let listed = s
            .run_on(target, |sh| async move {
                sh.groups
                    .groups
                    .borrow()
                    .iter()
                    .map(|(name, g)| {
                        (
                            name.clone(),
                            g.protocol_type.clone().unwrap_or_default(),
                            g.state.name().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        for (name, protocol_type, state) in listed {
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            let mut g = ListedGroup::default();
            g.group_id = GroupId(str_bytes(&name));
            g.protocol_type = str_bytes(&protocol_type);
            g.group_state = str_bytes(&state);
            g.group_type = str_bytes("classic");
            resp.groups.push(g);
        }
    }
    resp
}
