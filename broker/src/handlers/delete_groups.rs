//! DeleteGroups: an empty group and its committed offsets are removed (tombstones in
//! `__consumer_offsets`, durable before the answer); a group with members is refused.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use sluice_protocol::kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use sluice_protocol::{ResponseError, VersionRange};

use crate::groups::{group_record, offset_records, write_group_records, State};
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 2);

pub async fn handle(s: &Rc<Shard>, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for gid in r.groups_names {
        let name = gid.0.as_str().to_string();
        let n = name.clone();
        let result = s
            .with_group(&name, move |sh, p| async move {
                let keys: Vec<(String, i32)> = {
                    let groups = sh.groups.groups.borrow();
                    let g = groups.get(&n).ok_or(ResponseError::GroupIdNotFound)?;
                    if g.state != State::Empty {
                        return Err(ResponseError::NonEmptyGroup);
                    }
                    g.offsets.keys().cloned().collect()
                };
                let tombstones: Vec<_> = keys.into_iter().map(|(t, p)| (t, p, None)).collect();
                if !tombstones.is_empty() {
                    write_group_records(&p, offset_records(&n, &tombstones)).await?;
                }
                write_group_records(&p, group_record(&n, None)).await?;
                sh.groups.groups.borrow_mut().remove(&n);
                Ok(())
            })
            .await
            .and_then(|r| r);
        let mut g = DeletableGroupResult::default();
        g.group_id = gid;
        g.error_code = result.err().map_or(0, |e| e.code());
        resp.results.push(g);
    }
    resp
}
