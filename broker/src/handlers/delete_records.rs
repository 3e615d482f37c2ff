//! DeleteRecords: moves each partition's log start forward on its owner shard. Offset -1
//! means the high watermark; beyond it is OFFSET_OUT_OF_RANGE. The log start never moves
//! back, so an offset below it answers the current start.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use sluice_protocol::kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_protocol::{ResponseError, VersionRange};

use super::{kafka_offset, log_offset};

use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 2);

/// `offset` value asking to delete everything below the high watermark.
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(s: &Rc<Shard>, r: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let image = s.metadata();
    let mut pending = Vec::new();
    for t in r.topics {
        let topic = image.topic(t.name.0.as_str()).map(|t| (t.id, t.partitions));
        let mut parts = Vec::new();
        for p in t.partitions {
            let index = p.partition_index;
            let offset = p.offset;
            let s = s.clone();
            let task = glommio::spawn_local(async move {
                let (id, count) = topic.ok_or(ResponseError::UnknownTopicOrPartition)?;
                if !(0..count).contains(&index) {
                    return Err(ResponseError::UnknownTopicOrPartition);
                }
                s.with_partition(id, index, move |part| async move {
                    let hw = part.watermarks().high_watermark;
                    let target = match offset {
                        HIGH_WATERMARK => hw,
                        o => log_offset(o)
                            .filter(|&o| o <= hw)
                            .ok_or(ResponseError::OffsetOutOfRange)?,
                    };
                    Ok(kafka_offset(part.delete_records(target).await?))
                })
                .await?
            })
            .detach();
            parts.push((index, task));
        }
        pending.push((t.name, parts));
    }
    let mut resp = DeleteRecordsResponse::default();
    for (name, parts) in pending {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = name;
        for (index, task) in parts {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = index;
            match task.await.unwrap_or(Err(ResponseError::UnknownServerError)) {
                Ok(low) => pr.low_watermark = low,
                Err(e) => {
                    pr.low_watermark = -1;
                    pr.error_code = e.code();
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
