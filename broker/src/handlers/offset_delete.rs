//! OffsetDelete: removes a group's committed offsets for some partitions. Refused with
//! GROUP_SUBSCRIBED_TO_TOPIC while the group has members (a simplification of Kafka, which
//! checks the members' subscriptions).

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use sluice_protocol::kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use sluice_protocol::{ResponseError, VersionRange};

use crate::groups::{offset_records, State};
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 0);

pub async fn handle(s: &Rc<Shard>, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = r.group_id.0.as_str().to_string();
    let keys: Vec<(String, i32)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.as_str().to_string(), p.partition_index))
        })
        .collect();
    let g = group.clone();
    let result = s
        .with_group(&group, move |sh, p| async move {
            {
                let groups = sh.groups.groups.borrow();
                let grp = groups.get(&g).ok_or(ResponseError::GroupIdNotFound)?;
                if grp.state != State::Empty {
                    return Err(ResponseError::GroupSubscribedToTopic);
                }
            }
            let tombstones: Vec<_> = keys.iter().map(|(t, p)| (t.clone(), *p, None)).collect();
            p.produce(offset_records(&g, &tombstones), -1, 0).await?;
            if let Some(grp) = sh.groups.groups.borrow_mut().get_mut(&g) {
                for k in &keys {
                    grp.offsets.remove(k);
                }
            }
            Ok(())
        })
        .await
        .and_then(|r| r);
    let mut resp = OffsetDeleteResponse::default();
    let per_partition = match result {
        Err(e @ ResponseError::GroupIdNotFound) => {
            resp.error_code = e.code();
            return resp;
        }
        Err(e) => Some(e),
        Ok(()) => None,
    };
    for t in r.topics {
        let mut tr = OffsetDeleteResponseTopic::default();
        tr.name = t.name;
        for p in t.partitions {
            let mut pr = OffsetDeleteResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = per_partition.map_or(0, |e| e.code());
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
