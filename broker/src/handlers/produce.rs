//! Produce: each partition's records go to the owner shard, which validates and appends
//! them; the answer waits for durability when acks=all. Partitions of one request proceed
//! independently, so one bad batch fails only its own partition.

use std::rc::Rc;
use std::time::Duration;

use sluice_protocol::kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use sluice_protocol::kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use sluice_protocol::kafka_protocol::protocol::StrBytes;
use sluice_protocol::{ResponseError, VersionRange};

use super::{kafka_offset, now_ms};
use crate::partition::Durability;
use crate::shard::Shard;

/// v3 is the first with RecordBatch v2; v13 names topics by id.
pub const VERSIONS: VersionRange = VersionRange::new(3, 13);
/// Topic-id addressing starts at this version.
const TOPIC_ID_VERSION: i16 = 13;

/// How long acks=all waits for a commit when the request names no positive `timeout_ms`:
/// clients' default `request.timeout.ms`.
const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The request's `timeout_ms` as the bound on waiting for the commit.
fn commit_timeout(timeout_ms: i32) -> Duration {
    match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => DEFAULT_COMMIT_TIMEOUT,
    }
}

/// `None` when acks=0: Kafka sends no response at all.
pub async fn handle(s: &Rc<Shard>, r: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    // Kafka's acks, translated once: everything below speaks durability levels.
    let durability = Durability::from_acks(r.acks);
    let acks = r.acks;
    let timeout = commit_timeout(r.timeout_ms);
    let transactional = r.transactional_id.is_some();
    let image = s.metadata();
    let mut pending = Vec::new();
    for t in r.topic_data {
        let topic = if version >= TOPIC_ID_VERSION {
            image.topic_by_id(&t.topic_id)
        } else {
            image.topic(t.name.0.as_str())
        };
        let topic_info = topic.map(|t| (t.id, t.partitions));
        let io = topic.map(|t| s.metrics.topic(t.id, &t.name));
        let mut parts = Vec::new();
        for p in t.partition_data {
            let index = p.index;
            let records = p.records;
            let s = s.clone();
            let fut = async move {
                if transactional {
                    return Err(ResponseError::TransactionalIdAuthorizationFailed.into());
                }
                let durability = durability.ok_or(ResponseError::InvalidRequiredAcks)?;
                let (id, count) = topic_info.ok_or(if version >= TOPIC_ID_VERSION {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                })?;
                if index < 0 || index >= count {
                    return Err(ResponseError::UnknownTopicOrPartition.into());
                }
                let records = records.ok_or(ResponseError::CorruptMessage)?;
                let now = now_ms();
                s.with_partition(id, index, move |p| async move {
                    p.produce(records, durability, now, timeout).await
                })
                .await?
            };
            parts.push((index, glommio::spawn_local(fut).detach()));
        }
        pending.push((t.name, t.topic_id, io, parts));
    }
    let mut resp = ProduceResponse::default();
    for (name, topic_id, io, parts) in pending {
        let mut tr = TopicProduceResponse::default();
        tr.name = name;
        tr.topic_id = topic_id;
        for (index, task) in parts {
            let mut pr = PartitionProduceResponse::default();
            pr.index = index;
            pr.log_append_time_ms = -1;
            match task
                .await
                .unwrap_or(Err(ResponseError::UnknownServerError.into()))
            {
                Ok(o) => {
                    if let Some(io) = &io {
                        io.bytes_in.increment(o.appended_bytes);
                        io.records_in.increment(o.appended_records);
                    }
                    pr.base_offset = kafka_offset(o.base_offset);
                    pr.log_append_time_ms = o.log_append_time_ms;
                    pr.log_start_offset = kafka_offset(o.log_start);
                }
                Err(r) => {
                    pr.error_code = r.error.code();
                    pr.base_offset = -1;
                    pr.log_start_offset = r.log_start.map_or(-1, kafka_offset);
                    pr.record_errors = r
                        .record_errors
                        .into_iter()
                        .map(|(i, m)| {
                            let mut e = BatchIndexAndErrorMessage::default();
                            e.batch_index = i;
                            e.batch_index_error_message = Some(StrBytes::from_string(m));
                            e
                        })
                        .collect();
                    pr.error_message = r.message.map(StrBytes::from_string);
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    (acks != 0).then_some(resp)
}
