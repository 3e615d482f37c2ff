//! OffsetCommit: checked against the member's generation, written to the group's
//! `__consumer_offsets` partition, and answered only once that write is durable.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_protocol::kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use sluice_protocol::{ResponseError, VersionRange};

use super::now_ms;
use crate::groups::{offset_records, write_group_records, Committed};
use crate::shard::Shard;

/// v0/v1 carry ZooKeeper-era semantics no current client sends.
pub const VERSIONS: VersionRange = VersionRange::new(2, 9);

pub async fn handle(s: &Rc<Shard>, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = r.group_id.0.as_str().to_string();
    let image = s.metadata();
    let now = now_ms();
    // Unknown topics and partitions fail alone; the rest is committed in one record batch.
    let mut verdicts: Vec<Vec<Option<ResponseError>>> = Vec::new();
    let mut commits = Vec::new();
    for t in &r.topics {
        let known = image.topic(t.name.0.as_str()).map(|t| t.partitions);
        let mut v = Vec::new();
        for p in &t.partitions {
            if known.is_some_and(|n| (0..n).contains(&p.partition_index)) {
                commits.push((
                    t.name.0.as_str().to_string(),
                    p.partition_index,
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.as_str().to_string()),
                        commit_ms: now,
                    },
                ));
                v.push(None);
            } else {
                v.push(Some(ResponseError::UnknownTopicOrPartition));
            }
        }
        verdicts.push(v);
    }
    let generation = r.generation_id_or_member_epoch;
    let member = r.member_id.as_str().to_string();
    let instance = r.group_instance_id.as_ref().map(|i| i.as_str().to_string());
    let g = group.clone();
    let outcome = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        s.with_group(&group, move |sh, p| async move {
            sh.groups
                .check_commit(&g, generation, &member, instance.as_deref())?;
            if commits.is_empty() {
                return Ok(());
            }
            let records: Vec<_> = commits
                .iter()
                .map(|(t, p, c)| (t.clone(), *p, Some(c.clone())))
                .collect();
            write_group_records(&p, offset_records(&g, &records)).await?;
            sh.groups.apply_commits(&g, &commits);
            Ok(())
        })
        .await
        .and_then(|r| r)
    };
    let mut resp = OffsetCommitResponse::default();
    for (t, v) in r.topics.into_iter().zip(verdicts) {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = t.name;
        tr.topic_id = t.topic_id;
        for (p, verdict) in t.partitions.into_iter().zip(v) {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = verdict.or(outcome.err()).map_or(0, |e| e.code());
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
