//! Fetch: stored batches from each partition's owner shard, up to the high watermark and
//! the request's byte limits, which are hard limits as in Kafka: only the first batch of the
//! first partition with data may exceed them (KIP-74), and a partition's bytes end where the
//! budget does, possibly inside a batch. If fewer than `min_bytes` are ready, the request
//! parks until an append makes data durable on one of its partitions or `max_wait_ms`
//! passes — woken by the partitions, never by polling. Fetch sessions (KIP-227) are
//! declined: every answer carries session id 0, so clients send full requests.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_protocol::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use sluice_protocol::kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use sluice_protocol::{ResponseError, VersionRange};
use uuid::Uuid;

use super::{kafka_offset, log_offset};
use crate::config::FETCH_MAX_WAIT_MS_LIMIT;
use crate::metadata::MetadataImage;
use crate::partition::Watermarks;
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(4, 17);
const TOPIC_ID_VERSION: i16 = 13;
/// The request's `isolation_level` for read_committed consumers.
const READ_COMMITTED: i8 = 1;

struct Item {
    topic: TopicName,
    topic_id: Uuid,
    resolved: Result<(Uuid, i32), ResponseError>,
    partition: i32,
    offset: i64,
    /// The client's current leader epoch (-1: none), fenced against the leader's.
    leader_epoch: i32,
    max_bytes: usize,
}

struct Got {
    error: Option<ResponseError>,
    batches: Vec<Bytes>,
    marks: Option<Watermarks>,
}

pub async fn handle(s: &Rc<Shard>, r: FetchRequest, version: i16) -> FetchResponse {
    let mut resp = FetchResponse::default();
    if r.session_id != 0 {
        // We never hand out session ids, so any non-zero one is unknown.
        resp.error_code = ResponseError::FetchSessionIdNotFound.code();
        return resp;
    }
    let image = s.metadata();
    let mut items = Vec::new();
    for t in &r.topics {
        let topic = if version >= TOPIC_ID_VERSION {
            image.topic_by_id(&t.topic_id)
        } else {
            image.topic(t.topic.0.as_str())
        };
        for p in &t.partitions {
            let resolved = match topic {
                None if version >= TOPIC_ID_VERSION => Err(ResponseError::UnknownTopicId),
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(tp) if p.partition < 0 || p.partition >= tp.partitions => {
                    Err(ResponseError::UnknownTopicOrPartition)
                }
                Some(tp) => Ok((tp.id, p.partition)),
            };
            items.push(Item {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                resolved,
                partition: p.partition,
                offset: p.fetch_offset,
                leader_epoch: p.current_leader_epoch,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            });
        }
    }
    let wait = Duration::from_millis((r.max_wait_ms.max(0) as u64).min(FETCH_MAX_WAIT_MS_LIMIT));
    let deadline = Instant::now() + wait;
    let min_bytes = r.min_bytes.max(0) as usize;
    // As Kafka: 0 means 0 (the first batch still comes, KIP-74), and the broker's
    // `fetch.max.bytes` caps what a client may ask for.
    let max_bytes = (r.max_bytes.max(0) as usize).min(s.config.fetch_max_bytes);
    let got = loop {
        let got = read_pass(s, &items, max_bytes).await;
        let total: usize = got
            .iter()
            .map(|g| g.batches.iter().map(|b| b.len()).sum::<usize>())
            .sum();
        let failed = got.iter().any(|g| g.error.is_some());
        if total >= min_bytes.max(1) || failed || Instant::now() >= deadline || items.is_empty() {
            break got;
        }
        if !wait_for_any(s, &items, deadline).await {
            break read_pass(s, &items, max_bytes).await;
        }
    };

    resp.session_id = 0;
    for (item, g) in items.iter().zip(got) {
        let same_topic = resp
            .responses
            .last()
            .is_some_and(|t: &FetchableTopicResponse| {
                t.topic == item.topic && t.topic_id == item.topic_id
            });
        if !same_topic {
            let mut t = FetchableTopicResponse::default();
            t.topic = item.topic.clone();
            t.topic_id = item.topic_id;
            resp.responses.push(t);
        }
        let mut pd = PartitionData::default();
        pd.partition_index = item.partition;
        pd.error_code = g.error.map_or(0, |e| e.code());
        pd.high_watermark = g.marks.map_or(-1, |m| kafka_offset(m.high_watermark));
        // No transactions yet: everything below the high watermark is stable.
        pd.last_stable_offset = pd.high_watermark;
        pd.log_start_offset = g.marks.map_or(-1, |m| kafka_offset(m.log_start));
        // Kafka lists aborted transactions to read_committed consumers, and an empty list
        // for a partition it could not find.
        pd.aborted_transactions =
            (r.isolation_level == READ_COMMITTED || item.resolved.is_err()).then(Vec::new);
        pd.preferred_read_replica = BrokerId(-1);
        count_out(s, &image, item, &g.batches);
        pd.records = Some(concat(&g.batches));
        resp.responses
            .last_mut()
            .expect("pushed above")
            .partitions
            .push(pd);
    }
    resp
}

/// What a fetch sends, by topic: counted here, once the final read pass is chosen.
fn count_out(s: &Shard, image: &MetadataImage, item: &Item, batches: &[Bytes]) {
    let (Ok((id, _)), false) = (item.resolved, batches.is_empty()) else {
        return;
    };
    let Some(topic) = image.topic_by_id(&id) else {
        return;
    };
    let io = s.metrics.topic(id, &topic.name);
    let bytes: usize = batches.iter().map(|b| b.len()).sum();
    let records: u64 = batches
        .iter()
        .filter_map(|b| sluice_storage::parse_header(b).ok())
        .map(|h| h.records_count.max(0) as u64)
        .sum();
    io.bytes_out.increment(bytes as u64);
    io.records_out.increment(records);
}

/// One read of every partition, in request order, sharing the response byte budget. The
/// first partition with data returns at least one whole batch; the others only what fits.
async fn read_pass(s: &Rc<Shard>, items: &[Item], max_bytes: usize) -> Vec<Got> {
    let mut remaining = max_bytes;
    let mut any = false;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let (id, partition) = match item.resolved {
            Ok(k) => k,
            Err(e) => {
                out.push(Got {
                    error: Some(e),
                    batches: Vec::new(),
                    marks: None,
                });
                continue;
            }
        };
        // KIP-74: until some partition returned data, a first batch larger than the limits
        // comes whole so the consumer progresses; after that the limits are hard.
        let min_one = !any;
        // Budget spent: report only watermarks, so the client comes back for the rest.
        let limit = item.max_bytes.min(remaining);
        let (offset, epoch) = (item.offset, item.leader_epoch);
        let r = s
            .with_partition(id, partition, move |p| async move {
                p.check_epoch(epoch)?;
                if limit > 0 || min_one {
                    let offset = log_offset(offset).ok_or(ResponseError::OffsetOutOfRange)?;
                    p.fetch(offset, limit.max(1), min_one).await
                } else {
                    Ok((Vec::new(), p.watermarks()))
                }
            })
            .await
            .and_then(|r| r);
        out.push(match r {
            Ok((batches, marks)) => {
                let n: usize = batches.iter().map(|b| b.len()).sum();
                any |= n > 0;
                remaining = remaining.saturating_sub(n);
                Got {
                    error: None,
                    batches,
                    marks: Some(marks),
                }
            }
            Err(e) => Got {
                error: Some(e),
                batches: Vec::new(),
                marks: None,
            },
        });
    }
    out
}

/// Parks until some partition's high watermark passes its fetch offset, or the deadline.
/// Returns false on timeout.
async fn wait_for_any(s: &Rc<Shard>, items: &[Item], deadline: Instant) -> bool {
    let (tx, rx) = flume::bounded::<()>(1);
    let mut watchers = Vec::new();
    for item in items {
        let Ok((id, partition)) = item.resolved else {
            continue;
        };
        let offset = item.offset;
        let w = s
            .with_partition(id, partition, move |p| async move {
                log_offset(offset).and_then(|o| p.wait_for_data(o))
            })
            .await;
        match w {
            Ok(None) => return true, // data arrived meanwhile
            Ok(Some(signal)) => {
                let tx = tx.clone();
                // Dropping the task (when this function returns) cancels the wait.
                watchers.push(glommio::spawn_local(async move {
                    if signal.recv_async().await.is_ok() {
                        let _ = tx.try_send(());
                    }
                }));
            }
            Err(_) => return true, // the partition went away: answer now
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let woken = futures_lite::future::or(async { rx.recv_async().await.is_ok() }, async {
        glommio::timer::sleep(left).await;
        false
    })
    .await;
    drop(watchers);
    woken
}

fn concat(batches: &[Bytes]) -> Bytes {
    match batches {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut b = BytesMut::with_capacity(many.iter().map(|b| b.len()).sum());
            for x in many {
                b.extend_from_slice(x);
            }
            b.freeze()
        }
    }
}
