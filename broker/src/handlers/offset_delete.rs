//! OffsetDelete: removes a group's committed offsets for some partitions. As in Kafka, an
//! empty group loses any of them; a consumer group with members keeps (with
//! GROUP_SUBSCRIBED_TO_TOPIC) those of topics its members subscribe to; any other group with
//! members refuses with NON_EMPTY_GROUP.

use std::collections::HashSet;
use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use sluice_protocol::kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use sluice_protocol::{ResponseError, VersionRange};

use crate::groups::{offset_records, write_group_records, State};
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
            let subscribed = {
                let groups = sh.groups.groups.borrow();
                let grp = groups.get(&g).ok_or(ResponseError::GroupIdNotFound)?;
                match grp.state {
                    State::Empty => HashSet::new(),
                    _ => grp
                        .subscribed_topics()
                        .ok_or(ResponseError::NonEmptyGroup)?,
                }
            };
            let deletable: Vec<(String, i32)> = keys
                .into_iter()
                .filter(|(t, _)| !subscribed.contains(t))
                .collect();
            if !deletable.is_empty() {
                let tombstones: Vec<_> = deletable
                    .iter()
                    .map(|(t, p)| (t.clone(), *p, None))
                    .collect();
                write_group_records(&p, offset_records(&g, &tombstones)).await?;
                if let Some(grp) = sh.groups.groups.borrow_mut().get_mut(&g) {
                    for k in &deletable {
                        grp.offsets.remove(k);
                    }
                }
            }
            Ok(subscribed)
        })
        .await
        .and_then(|r| r);
    let mut resp = OffsetDeleteResponse::default();
    let subscribed = match result {
        Ok(s) => s,
        Err(e) => {
            resp.error_code = e.code();
            return resp;
        }
    };
    for t in r.topics {
        let mut tr = OffsetDeleteResponseTopic::default();
        let subscribed_topic = subscribed.contains(t.name.0.as_str());
        tr.name = t.name;
        for p in t.partitions {
            let mut pr = OffsetDeleteResponsePartition::default();
            pr.partition_index = p.partition_index;
            if subscribed_topic {
                pr.error_code = ResponseError::GroupSubscribedToTopic.code();
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
