//! OffsetForLeaderEpoch: clients check after a leader change that their position is still
//! in the log (KIP-320). One node has one leader epoch, `LEADER_EPOCH`, covering the whole
//! log; its end offset is the high watermark, the end of what any client could have read.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use sluice_protocol::kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use sluice_protocol::{ResponseError, VersionRange};

use super::kafka_offset;
use crate::partition::LEADER_EPOCH;
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
                    if p.current_leader_epoch > LEADER_EPOCH {
                        Err(ResponseError::UnknownLeaderEpoch)
                    } else if p.current_leader_epoch != UNDEFINED_EPOCH
                        && p.current_leader_epoch < LEADER_EPOCH
                    {
                        Err(ResponseError::FencedLeaderEpoch)
                    } else {
                        s.with_partition(id, p.partition, |part| async move {
                            part.watermarks().high_watermark
                        })
                        .await
                    }
                }
                _ => Err(ResponseError::UnknownTopicOrPartition),
            };
            match result {
                // Kafka: the requested epoch is the current one → it ends at the log end;
                // an epoch after the current one, or none, is unknown (-1, -1).
                Ok(hw) if p.leader_epoch == LEADER_EPOCH => {
                    pr.leader_epoch = LEADER_EPOCH;
                    pr.end_offset = kafka_offset(hw);
                }
                Ok(_) => {}
                Err(e) => pr.error_code = e.code(),
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
