//! OffsetFetch: committed offsets of one group (v0–v7) or several (v8+); -1 where nothing
//! is committed. With the high watermark from ListOffsets this is how tools compute lag.

use std::collections::HashMap;
use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use sluice_protocol::kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
use sluice_protocol::{ResponseError, VersionRange};

use super::topic_name;
use crate::groups::Committed;
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(1, 9);
const MULTI_GROUP_VERSION: i16 = 8;

type Wanted = Option<Vec<(String, Vec<i32>)>>;
type Found = Result<Vec<(String, Vec<(i32, Option<Committed>)>)>, ResponseError>;

async fn fetch_group(s: &Rc<Shard>, group: String, wanted: Wanted) -> Found {
    let g = group.clone();
    s.with_group(&group, move |sh, _| async move {
        let groups = sh.groups.groups.borrow();
        let offsets: HashMap<(String, i32), Committed> = groups
            .get(&g)
            .map(|x| x.offsets.clone())
            .unwrap_or_default();
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(t, ps)| {
                    let parts = ps
                        .into_iter()
                        .map(|p| (p, offsets.get(&(t.clone(), p)).cloned()))
                        .collect();
                    (t, parts)
                })
                .collect(),
            None => {
                let mut by_topic: std::collections::BTreeMap<
                    String,
                    Vec<(i32, Option<Committed>)>,
                > = Default::default();
                for ((t, p), c) in offsets {
                    by_topic.entry(t).or_default().push((p, Some(c)));
                }
                by_topic
                    .into_iter()
                    .map(|(t, mut ps)| {
                        ps.sort_by_key(|(p, _)| *p);
                        (t, ps)
                    })
                    .collect()
            }
        }
    })
    .await
}

pub async fn handle(s: &Rc<Shard>, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= MULTI_GROUP_VERSION {
        for g in r.groups {
            let wanted: Wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
                    .collect()
            });
            let found = fetch_group(s, g.group_id.0.as_str().to_string(), wanted).await;
            let mut gr = OffsetFetchResponseGroup::default();
            gr.group_id = GroupId(g.group_id.0.clone());
            match found {
                Err(e) => gr.error_code = e.code(),
                Ok(topics) => {
                    gr.topics = topics
                        .into_iter()
                        .map(|(t, ps)| {
                            let mut tr = OffsetFetchResponseTopics::default();
                            tr.name = topic_name(&t);
                            tr.partitions = ps
                                .into_iter()
                                .map(|(p, c)| {
                                    let mut pr = OffsetFetchResponsePartitions::default();
                                    pr.partition_index = p;
                                    pr.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                                    pr.committed_leader_epoch =
                                        c.as_ref().map_or(-1, |c| c.leader_epoch);
                                    pr.metadata = Some(super::str_bytes(
                                        c.as_ref()
                                            .and_then(|c| c.metadata.as_deref())
                                            .unwrap_or(""),
                                    ));
                                    pr
                                })
                                .collect();
                            tr
                        })
                        .collect();
                }
            }
            resp.groups.push(gr);
        }
        return resp;
    }
    let wanted: Wanted = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
            .collect()
    });
    match fetch_group(s, r.group_id.0.as_str().to_string(), wanted).await {
        Err(e) => resp.error_code = e.code(),
        Ok(topics) => {
            resp.topics = topics
                .into_iter()
                .map(|(t, ps)| {
                    let mut tr = OffsetFetchResponseTopic::default();
                    tr.name = topic_name(&t);
                    tr.partitions = ps
                        .into_iter()
                        .map(|(p, c)| {
                            let mut pr = OffsetFetchResponsePartition::default();
                            pr.partition_index = p;
                            pr.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                            pr.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                            pr.metadata = Some(super::str_bytes(
                                c.as_ref().and_then(|c| c.metadata.as_deref()).unwrap_or(""),
                            ));
                            pr
                        })
                        .collect();
                    tr
                })
                .collect();
        }
    }
    resp
}
