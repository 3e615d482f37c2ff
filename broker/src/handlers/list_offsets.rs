//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest-local (-4) and
//! by timestamp, per partition on its owner shard.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_protocol::{ResponseError, VersionRange};

use super::kafka_offset;
use crate::shard::Shard;

/// v0 uses the pre-0.10 answer format, which no current client sends.
pub const VERSIONS: VersionRange = VersionRange::new(1, 10);

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(s: &Rc<Shard>, r: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = s.metadata();
    let mut resp = ListOffsetsResponse::default();
    for t in r.topics {
        let topic = image.topic(t.name.0.as_str()).map(|t| (t.id, t.partitions));
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name;
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            // Kafka names the epoch only of an offset it found.
            pr.leader_epoch = -1;
            let result = match topic {
                Some((id, count)) if (0..count).contains(&p.partition_index) => {
                    let (ts, current) = (p.timestamp, p.current_leader_epoch);
                    s.with_partition(id, p.partition_index, move |part| async move {
                        let epoch = part.check_epoch(current)?;
                        let w = part.watermarks();
                        let found = match ts {
                            LATEST => Ok(Some((w.high_watermark, -1))),
                            // No tiered storage: Kafka has no tiered offset to give.
                            LATEST_TIERED => Ok(None),
                            EARLIEST | EARLIEST_LOCAL => Ok(Some((w.log_start, -1))),
                            MAX_TIMESTAMP => Ok(part.max_timestamp().and_then(|(t, o)| {
                                (o >= w.log_start && o < w.high_watermark).then_some((o, t))
                            })),
                            t if t >= 0 => part.offset_for_timestamp(t).await,
                            _ => Err(ResponseError::InvalidRequest),
                        };
                        found.map(|f| f.map(|(o, t)| (o, t, epoch)))
                    })
                    .await
                    .and_then(|r| r)
                }
                _ => Err(ResponseError::UnknownTopicOrPartition),
            };
            match result {
                Ok(Some((offset, ts, epoch))) => {
                    pr.offset = kafka_offset(offset);
                    pr.timestamp = ts;
                    if version >= 4 {
                        pr.leader_epoch = epoch;
                    }
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
