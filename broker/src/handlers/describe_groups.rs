//! DescribeGroups: state, protocol and members (with their metadata and assignment) of each
//! group; unknown groups are reported as Dead, as Kafka does.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use sluice_protocol::kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use sluice_protocol::VersionRange;

use super::admin::AUTHORIZED_OPERATIONS_OMITTED;
use super::str_bytes;
use crate::groups::MemberInfo;
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 5);
/// READ, DELETE and DESCRIBE: what Kafka grants on a group without ACLs.
const GROUP_AUTHORIZED_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

type Described = Option<(String, String, String, Vec<MemberInfo>)>;

pub async fn handle(s: &Rc<Shard>, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for gid in r.groups {
        let name = gid.0.as_str().to_string();
        let n = name.clone();
        let found = s
            .with_group(&name, move |sh, _| async move {
                let groups = sh.groups.groups.borrow();
                groups.get(&n).map(|g| {
                    (
                        g.state.name().to_string(),
                        g.protocol_type.clone().unwrap_or_default(),
                        g.protocol.clone().unwrap_or_default(),
                        g.members(),
                    )
                })
            })
            .await;
        let mut d = DescribedGroup::default();
        d.group_id = gid;
        d.authorized_operations = if r.include_authorized_operations {
            GROUP_AUTHORIZED_OPERATIONS
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        };
        match found {
            Err(e) => d.error_code = e.code(),
            Ok(described) => fill(&mut d, described),
        }
        resp.groups.push(d);
    }
    resp
}

fn fill(d: &mut DescribedGroup, described: Described) {
    let Some((state, protocol_type, protocol, members)) = described else {
        d.group_state = str_bytes("Dead");
        return;
    };
    d.group_state = str_bytes(&state);
    d.protocol_type = str_bytes(&protocol_type);
    d.protocol_data = str_bytes(&protocol);
    d.members = members
        .into_iter()
        .map(|(id, inst, client_id, host, metadata, assignment)| {
            let mut m = DescribedGroupMember::default();
            m.member_id = str_bytes(&id);
            m.group_instance_id = inst.as_deref().map(str_bytes);
            m.client_id = str_bytes(&client_id);
            m.client_host = str_bytes(&host);
            m.member_metadata = metadata;
            m.member_assignment = assignment;
            m
        })
        .collect();
}
