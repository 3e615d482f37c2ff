//! Groups and committed offsets as records of `__consumer_offsets`: how they are written,
//! and how a coordinator is rebuilt from them when its partition opens.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sluice_protocol::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tracing::info;

use super::{now_ms, Committed, Coordinator, Group};
use crate::partition::Partition;

/// Largest read while replaying `__consumer_offsets` at start-up.
const LOAD_CHUNK_BYTES: usize = 8 << 20;

/// Record keys and values in `__consumer_offsets` (JSON: small, and readable in a dump).
#[derive(Serialize, Deserialize)]
enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Serialize, Deserialize)]
struct GroupValue {
    protocol_type: Option<String>,
}

impl Coordinator {
    /// Replays a `__consumer_offsets` partition into this coordinator.
    pub async fn load(&self, p: &Rc<Partition>) {
        let mut next = p.watermarks().log_start;
        let hw = p.watermarks().high_watermark;
        let mut count = 0usize;
        while next < hw {
            let Ok((records, after)) = p.read_records(next, LOAD_CHUNK_BYTES).await else {
                break;
            };
            if after <= next {
                break;
            }
            next = after;
            for r in &records {
                self.apply_record(r);
            }
            count += records.len();
        }
        if count > 0 {
            info!(partition = p.index, records = count, "group state loaded");
        }
    }

    fn apply_record(&self, r: &Record) {
        let Some(key) = r
            .key
            .as_ref()
            .and_then(|k| serde_json::from_slice::<RecordKey>(k).ok())
        else {
            return;
        };
        let mut groups = self.groups.borrow_mut();
        match key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => match r
                .value
                .as_ref()
                .and_then(|v| serde_json::from_slice::<Committed>(v).ok())
            {
                Some(c) => {
                    let g = groups.entry(group).or_insert_with(|| Group::new(now_ms()));
                    g.offsets.insert((topic, partition), c);
                }
                None => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            RecordKey::Group { group } => match r
                .value
                .as_ref()
                .and_then(|v| serde_json::from_slice::<GroupValue>(v).ok())
            {
                Some(v) => {
                    let g = groups.entry(group).or_insert_with(|| Group::new(now_ms()));
                    g.protocol_type = v.protocol_type;
                }
                None => {
                    groups.remove(&group);
                }
            },
        }
    }
}

/// Encodes group records (key, value-or-tombstone) as one RecordBatch v2.
fn encode_records(items: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Bytes {
    let ts = now_ms();
    let records: Vec<Record> = items
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant keeps every record in one batch.
            sequence: i as i32 - 1,
            timestamp: ts,
            key: Some(Bytes::from(k)),
            value: v.map(Bytes::from),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("group records encode");
    buf.freeze()
}

pub fn offset_records(group: &str, commits: &[(String, i32, Option<Committed>)]) -> Bytes {
    encode_records(
        commits
            .iter()
            .map(|(t, p, c)| {
                let key = RecordKey::Offset {
                    group: group.to_string(),
                    topic: t.clone(),
                    partition: *p,
                };
                (
                    serde_json::to_vec(&key).expect("keys serialize"),
                    c.as_ref()
                        .map(|c| serde_json::to_vec(c).expect("values serialize")),
                )
            })
            .collect(),
    )
}

pub fn group_record(group: &str, protocol_type: Option<Option<String>>) -> Bytes {
    let key = RecordKey::Group {
        group: group.to_string(),
    };
    encode_records(vec![(
        serde_json::to_vec(&key).expect("keys serialize"),
        protocol_type.map(|pt| {
            serde_json::to_vec(&GroupValue { protocol_type: pt }).expect("values serialize")
        }),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_records_are_one_batch() {
        let b = offset_records(
            "g",
            &[
                (
                    "t".into(),
                    0,
                    Some(Committed {
                        offset: 5,
                        leader_epoch: -1,
                        metadata: None,
                        commit_ms: 1,
                    }),
                ),
                ("t".into(), 1, None),
            ],
        );
        let h = sluice_storage::parse_header(&b).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(sluice_storage::batch_len(&b), Some(b.len() as i64));
    }
}
