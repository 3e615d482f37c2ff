//! OffsetForLeaderEpoch: clients check after a leader change that their position is still
//! in the log (KIP-320). Leader epochs are Raft terms, stored in every batch; the leader
//! answers from its log (a binary search over terms), the current epoch ending at the high
//! watermark, the end of what any client could have read.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use sluice_protocol::kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use sluice_protocol::{ResponseError, VersionRange};

use super::kafka_offset;
use crate::shard::Shard;

/// v0-v1 are older than kafka-protocol's codec.
pub const VERSIONS: VersionRange = VersionRange::new(2, 4);

/// Kafka's "no epoch" value, in requests and answers.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;

pub async fn handle(s: &Rc<Shard>, r: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let image = s.metadata();
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in r.topics {
        let topic = image
            .topic(t.topic.0.as_str())
            .map(|t| (t.id, t.partitions));
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic;
        for p in t.partitions {
            let mut pr = EpochEndOffset::default();
            pr.partition = p.partition;
            pr.leader_epoch = UNDEFINED_EPOCH;
            pr.end_offset = UNDEFINED_EPOCH_OFFSET;
            let result = match topic {
                Some((id, count)) if (0..count).contains(&p.partition) => {
                    let (current, wanted) = (p.current_leader_epoch, p.leader_epoch);
                    s.with_partition(id, p.partition, move |part| async move {
                        part.check_epoch(current)?;
                        part.epoch_end(wanted).await
                    })
                    .await
                    .and_then(|r| r)
                }
                _ => Err(ResponseError::UnknownTopicOrPartition),
            };
            match result {
                // An epoch after the current one, or none, is unknown (-1, -1).
                Ok(Some((epoch, end))) => {
                    pr.leader_epoch = epoch;
                    pr.end_offset = kafka_offset(end);
                }
                Ok(None) => {}
                Err(e) => pr.error_code = e.code(),
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
