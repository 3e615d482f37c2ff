//! Groups and committed offsets as records of `__consumer_offsets`: how they are written,
//! and how a coordinator is rebuilt from them when its partition opens.

use std::rc::Rc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_protocol::kafka_protocol::records::Record;
use tracing::info;

use sluice_protocol::ResponseError;

use super::{now_ms, Committed, Coordinator, Group, Load};
use crate::partition::{Durability, Partition};

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
    /// Whether this shard serves the groups of `__consumer_offsets` partition `index`:
    /// NOT_COORDINATOR when it does not lead it, COORDINATOR_LOAD_IN_PROGRESS while it
    /// replays it.
    pub fn serves(&self, index: i32) -> Result<(), ResponseError> {
        match self.loads.borrow().get(&index) {
            Some(Load::Ready) => Ok(()),
            Some(Load::Loading(_)) => Err(ResponseError::CoordinatorLoadInProgress),
            None => Err(ResponseError::NotCoordinator),
        }
    }

    /// This replica became the leader of `p`: replays the partition into the coordinator
    /// and serves its groups, unless leadership moved again meanwhile.
    pub async fn take_over(&self, p: &Rc<Partition>) {
        if self.loads.borrow().contains_key(&p.index) {
            return;
        }
        let generation = self.load_generation.get() + 1;
        self.load_generation.set(generation);
        self.loads
            .borrow_mut()
            .insert(p.index, Load::Loading(generation));
        let current = || self.loads.borrow().get(&p.index) == Some(&Load::Loading(generation));
        let mut next = p.watermarks().log_start;
        let mut count = 0usize;
        // Everything committed before this leader's term is applied (it is ready), and no
        // group write is taken until the load is done, so the log is read to its end.
        while next < p.watermarks().high_watermark && current() {
            let Ok((records, after)) = p.read_records(next, LOAD_CHUNK_BYTES).await else {
                break;
            };
            if after <= next {
                break;
            }
            next = after;
            if !current() {
                break;
            }
            for r in &records {
                self.apply_record(r);
            }
            count += records.len();
        }
        if current() {
            self.loads.borrow_mut().insert(p.index, Load::Ready);
            if count > 0 {
                info!(partition = p.index, records = count, "group state loaded");
            }
        }
    }

    /// This replica no longer leads `__consumer_offsets` partition `index` (of `partitions`):
    /// its groups are dropped here, the new leader loads them.
    pub fn give_up(&self, index: i32, partitions: i32) {
        if self.loads.borrow_mut().remove(&index).is_none() {
            return;
        }
        self.groups
            .borrow_mut()
            .retain(|g, _| super::partition_for(g, partitions) != index);
        tracing::debug!(
            partition = index,
            "no longer coordinating the partition's groups"
        );
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
    crate::partition::own_batch(items.into_iter().map(|(k, v)| (Some(k), v)).collect())
}

/// Writes group records (`offset_records`, `group_record`) to the group's partition and
/// returns once they are committed. A replica that stopped leading meanwhile is no longer
/// the coordinator, and says so as Kafka does, so the client finds the new one.
pub async fn write_group_records(p: &Rc<Partition>, records: Bytes) -> Result<(), ResponseError> {
    match p.produce_own(records, Durability::Quorum).await {
        Ok(_) => Ok(()),
        Err(ResponseError::NotLeaderOrFollower) => Err(ResponseError::NotCoordinator),
        Err(e) => Err(e),
    }
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
