//! Cluster metadata: brokers, topics with ids, replica assignments and configs, the
//! cluster id and the producer-id counter.
//!
//! `MetaRecord`s are the controller's log (Raft group 0, `controller.rs`): each change is
//! one record batch whose records' values are JSON records, committed by a majority of the
//! controller's voters and applied, in log order, on every broker to its
//! `MetadataImage`. The immutable image is then handed to every shard.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_protocol::kafka_protocol::records::RecordBatchDecoder;
use sluice_storage::{LogConfig, PartitionLog, RaftIndex, StorageError};
use uuid::Uuid;

/// Directory of the metadata log of builds before the controller group, migrated once.
pub const LEGACY_METADATA_DIR: &str = "__cluster_metadata";
/// Producer ids are handed out from the persisted counter in blocks of this many, so a
/// restart never reuses one without a write per InitProducerId.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// Largest metadata log read at once during replay.
const REPLAY_CHUNK_BYTES: usize = 4 << 20;

/// A broker as it registered with the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    /// Its advertised Kafka listener.
    pub host: String,
    pub port: i32,
    /// Its advertised RPC listener, `HOST:PORT`.
    pub rpc: String,
    pub rack: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaRecord {
    ClusterId(String),
    /// A broker joined, or its addresses changed.
    BrokerRegistered(BrokerInfo),
    TopicCreated {
        name: String,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        /// Each partition's replicas, the preferred leader first.
        assignments: Vec<Vec<i32>>,
    },
    TopicDeleted {
        id: Uuid,
    },
    PartitionsCreated {
        id: Uuid,
        count: i32,
        /// Replicas of the partitions added.
        assignments: Vec<Vec<i32>>,
    },
    /// The full set of overrides after the change.
    ConfigsSet {
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `next` may have been handed out.
    ProducerIds {
        next: i64,
    },
    /// AlterPartitionReassignments: the partition's replicas are to become `target`. Until
    /// it completes, the partition is on every current replica and every target one.
    ReassignmentStarted {
        id: Uuid,
        partition: i32,
        target: Vec<i32>,
    },
    /// A decommissioned broker leaves the cluster: it holds no replica, and its node id
    /// joins again only as a new broker with an empty data dir.
    BrokerUnregistered {
        id: i32,
    },
    /// A decommissioned node id is admitted again, for a broker that starts empty.
    BrokerReadmitted {
        id: i32,
    },
    /// The controller heard no heartbeat from the broker for `broker.session.timeout.ms`:
    /// no new replica is placed on it until it is heard from again.
    BrokerFenced {
        id: i32,
    },
    /// A fenced broker is heard from again.
    BrokerUnfenced {
        id: i32,
    },
    /// The partition's Raft voters are `target`: the replicas left out stop holding it.
    /// Ignored unless the partition is being moved to exactly `target`.
    ReassignmentCompleted {
        id: Uuid,
        partition: i32,
        target: Vec<i32>,
    },
}

/// A partition being moved (Kafka's KIP-455 terms): its replicas are `target` followed by
/// `removing`; `adding` are the targets not among the replicas when it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    pub target: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl Reassignment {
    /// Moving a partition from `current` replicas to `target`.
    pub fn new(current: &[i32], target: &[i32]) -> Self {
        Reassignment {
            target: target.to_vec(),
            adding: target
                .iter()
                .copied()
                .filter(|r| !current.contains(r))
                .collect(),
            removing: current
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect(),
        }
    }

    /// Every replica that holds the partition meanwhile: the targets first.
    pub fn replicas(&self) -> Vec<i32> {
        self.target.iter().chain(&self.removing).copied().collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
    /// Replicas of each partition, the preferred leader first (while a partition moves:
    /// its target replicas, then those it is leaving).
    pub assignments: Vec<Vec<i32>>,
    /// Partitions being moved, by index.
    pub reassignments: BTreeMap<i32, Reassignment>,
}

impl Topic {
    pub fn replicas(&self, partition: i32) -> &[i32] {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.assignments.get(p))
            .map_or(&[], |r| r.as_slice())
    }

    pub fn replication_factor(&self) -> i16 {
        (0..self.partitions)
            .map(|p| match self.reassignments.get(&p) {
                Some(r) => r.target.len(),
                None => self.replicas(p).len(),
            })
            .next()
            .map_or(0, |n| n as i16)
    }

    /// The replicas a partition's Raft group had before any move in progress: those that
    /// may form the group if it has none yet (a replica being added must never).
    pub fn settled_replicas(&self, partition: i32) -> Vec<i32> {
        let adding = self
            .reassignments
            .get(&partition)
            .map_or(&[][..], |r| r.adding.as_slice());
        self.replicas(partition)
            .iter()
            .copied()
            .filter(|r| !adding.contains(r))
            .collect()
    }
}

/// An immutable view of the metadata, shared by every shard.
#[derive(Clone, Debug, Default)]
pub struct MetadataImage {
    /// The controller log's offset after the last record applied: the image's version,
    /// against which a change is planned and checked.
    pub version: u64,
    pub cluster_id: String,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, Topic>,
    pub by_id: HashMap<Uuid, String>,
    pub producer_ids_reserved: i64,
    /// Node ids of brokers that were decommissioned.
    pub decommissioned: BTreeSet<i32>,
    /// Registered brokers the controller has not heard from lately (`BrokerFenced`).
    pub fenced: BTreeSet<i32>,
}

impl MetadataImage {
    /// The partitions with a replica on broker `id` (a move in progress included).
    pub fn partitions_on(&self, id: i32) -> Vec<(&Topic, i32)> {
        self.topics
            .values()
            .flat_map(|t| (0..t.partitions).map(move |p| (t, p)))
            .filter(|(t, p)| t.replicas(*p).contains(&id))
            .collect()
    }

    /// The brokers new replicas may be placed on: registered and not fenced.
    pub fn placeable(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers
            .values()
            .filter(|b| !self.fenced.contains(&b.id))
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Topic> {
        self.by_id.get(id).and_then(|n| self.topics.get(n))
    }

    fn topic_by_id_mut(&mut self, id: &Uuid) -> Option<&mut Topic> {
        self.by_id.get(id).and_then(|n| self.topics.get_mut(n))
    }

    /// The replica list of `partition` of topic `id`, to change in place.
    fn replicas_mut(&mut self, id: &Uuid, partition: i32) -> Option<&mut Vec<i32>> {
        let t = self.topic_by_id_mut(id)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.assignments.get_mut(p))
    }

    pub fn apply(&mut self, r: &MetaRecord) {
        match r {
            MetaRecord::ClusterId(id) => self.cluster_id = id.clone(),
            MetaRecord::BrokerRegistered(b) => {
                if !self.decommissioned.contains(&b.id) {
                    self.brokers.insert(b.id, b.clone());
                }
            }
            MetaRecord::BrokerReadmitted { id } => {
                self.decommissioned.remove(id);
            }
            MetaRecord::BrokerUnregistered { id } => {
                self.brokers.remove(id);
                self.fenced.remove(id);
                self.decommissioned.insert(*id);
            }
            MetaRecord::BrokerFenced { id } => {
                if self.brokers.contains_key(id) {
                    self.fenced.insert(*id);
                }
            }
            MetaRecord::BrokerUnfenced { id } => {
                self.fenced.remove(id);
            }
            MetaRecord::TopicCreated {
                name,
                id,
                partitions,
                configs,
                assignments,
            } => {
                self.by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Topic {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
                        assignments: assignments.clone(),
                        reassignments: BTreeMap::new(),
                    },
                );
            }
            MetaRecord::TopicDeleted { id } => {
                if let Some(name) = self.by_id.remove(id) {
                    self.topics.remove(&name);
                }
            }
            MetaRecord::PartitionsCreated {
                id,
                count,
                assignments,
            } => {
                if let Some(t) = self.topic_by_id_mut(id) {
                    t.partitions = *count;
                    t.assignments.extend(assignments.iter().cloned());
                }
            }
            MetaRecord::ConfigsSet { id, configs } => {
                if let Some(t) = self.topic_by_id_mut(id) {
                    t.configs = configs.clone();
                }
            }
            MetaRecord::ProducerIds { next } => self.producer_ids_reserved = *next,
            MetaRecord::ReassignmentStarted {
                id,
                partition,
                target,
            } => {
                let Some(slot) = self.replicas_mut(id, *partition) else {
                    return;
                };
                // From the replicas it has now, a move in progress included: a replica leaves
                // only once the group's voters no longer need it.
                let r = Reassignment::new(slot, target);
                *slot = r.replicas();
                if let Some(t) = self.topic_by_id_mut(id) {
                    t.reassignments.insert(*partition, r);
                }
            }
            MetaRecord::ReassignmentCompleted {
                id,
                partition,
                target,
            } => {
                let moving_there = self
                    .topic_by_id(id)
                    .and_then(|t| t.reassignments.get(partition))
                    .is_some_and(|r| r.target == *target);
                if !moving_there {
                    return;
                }
                if let Some(t) = self.topic_by_id_mut(id) {
                    t.reassignments.remove(partition);
                }
                if let Some(slot) = self.replicas_mut(id, *partition) {
                    *slot = target.clone();
                }
            }
        }
    }
}

/// One change as the controller stores it: a record batch of JSON records.
pub fn encode_change(records: &[MetaRecord]) -> Bytes {
    crate::partition::own_batch(
        records
            .iter()
            .map(|r| {
                let json = serde_json::to_vec(r).expect("metadata records serialize");
                (None, Some(json))
            })
            .collect(),
    )
}

/// The records of one stored change. A record that does not decode is an error: an image
/// built without it would silently differ between brokers.
pub fn decode_change(batch: &[u8]) -> Result<Vec<MetaRecord>, String> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| e.to_string())?;
    set.records
        .iter()
        .map(|r| {
            let v = r
                .value
                .as_ref()
                .ok_or("a metadata record without a value")?;
            serde_json::from_slice(v).map_err(|e| e.to_string())
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata log: {0}")]
    Storage(#[from] StorageError),
    #[error("metadata record at {0:?} does not decode: {1}")]
    Decode(RaftIndex, serde_json::Error),
}

/// Records of the one-node metadata log older builds kept (opaque JSON entries in
/// `<data>/__cluster_metadata`), with every partition assigned to `node`, their only
/// broker; `None` when there is no such log.
pub async fn read_legacy(data_dir: &Path, node: i32) -> Result<Option<Vec<MetaRecord>>, MetaError> {
    let dir = data_dir.join(LEGACY_METADATA_DIR);
    if !dir.exists() {
        return Ok(None);
    }
    let log = PartitionLog::open(
        &dir,
        LogConfig {
            retention_ms: None,
            ..LogConfig::default()
        },
    )
    .await?;
    let end = log.end().next_raft_index;
    let mut next = log.start().raft_index;
    let mut records = Vec::new();
    while next < end {
        let entries = log.entries(next, end, REPLAY_CHUNK_BYTES).await?;
        for e in &entries {
            let r: LegacyRecord = serde_json::from_slice(&e.payload)
                .map_err(|err| MetaError::Decode(e.raft_index, err))?;
            records.push(r.upgrade(node));
        }
        next = entries
            .last()
            .map_or(end, |e| RaftIndex(e.raft_index.0 + 1));
    }
    log.close().await?;
    complete_legacy(&mut records, node);
    Ok(Some(records))
}

/// `MetaRecord` as builds before replication wrote it: no assignments, no brokers.
#[derive(Deserialize)]
enum LegacyRecord {
    ClusterId(String),
    TopicCreated {
        name: String,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
    },
    TopicDeleted {
        id: Uuid,
    },
    PartitionsCreated {
        id: Uuid,
        count: i32,
    },
    ConfigsSet {
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    ProducerIds {
        next: i64,
    },
}

impl LegacyRecord {
    fn upgrade(self, node: i32) -> MetaRecord {
        match self {
            LegacyRecord::ClusterId(c) => MetaRecord::ClusterId(c),
            LegacyRecord::TopicCreated {
                name,
                id,
                partitions,
                configs,
            } => MetaRecord::TopicCreated {
                name,
                id,
                partitions,
                configs,
                assignments: vec![vec![node]; partitions.max(0) as usize],
            },
            LegacyRecord::TopicDeleted { id } => MetaRecord::TopicDeleted { id },
            // The count is absolute; the partitions added are assigned when applied below.
            LegacyRecord::PartitionsCreated { id, count } => MetaRecord::PartitionsCreated {
                id,
                count,
                assignments: Vec::new(),
            },
            LegacyRecord::ConfigsSet { id, configs } => MetaRecord::ConfigsSet { id, configs },
            LegacyRecord::ProducerIds { next } => MetaRecord::ProducerIds { next },
        }
    }
}

/// Fills in the assignments of partitions that legacy `PartitionsCreated` records added,
/// replaying them in order: each added partition is on `node`.
fn complete_legacy(records: &mut [MetaRecord], node: i32) {
    let mut counts: HashMap<Uuid, i32> = HashMap::new();
    for r in records.iter_mut() {
        match r {
            MetaRecord::TopicCreated { id, partitions, .. } => {
                counts.insert(*id, *partitions);
            }
            MetaRecord::PartitionsCreated {
                id,
                count,
                assignments,
            } => {
                let before = counts.insert(*id, *count).unwrap_or(0);
                *assignments = vec![vec![node]; (*count - before).max(0) as usize];
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(assignments: Vec<Vec<i32>>) -> (MetadataImage, Uuid) {
        let id = Uuid::from_u128(7);
        let mut image = MetadataImage::default();
        image.apply(&MetaRecord::TopicCreated {
            name: "t".into(),
            id,
            partitions: assignments.len() as i32,
            configs: BTreeMap::new(),
            assignments,
        });
        (image, id)
    }

    #[test]
    fn a_move_keeps_every_replica_until_it_completes_at_its_target() {
        let (mut image, id) = image_with(vec![vec![1, 2], vec![2, 3]]);
        let start = |partition, target: Vec<i32>| MetaRecord::ReassignmentStarted {
            id,
            partition,
            target,
        };
        image.apply(&start(0, vec![2, 3]));
        let t = image.topic("t").unwrap();
        assert_eq!(t.replicas(0), &[2, 3, 1]);
        assert_eq!(
            t.reassignments[&0],
            Reassignment {
                target: vec![2, 3],
                adding: vec![3],
                removing: vec![1],
            }
        );
        assert_eq!(t.settled_replicas(0), vec![2, 1]);
        assert_eq!(t.replication_factor(), 2);

        // A new target mid-move starts from every replica the partition has now, so the
        // replica being added stays until the group no longer needs it.
        image.apply(&start(0, vec![1, 4]));
        let t = image.topic("t").unwrap();
        assert_eq!(t.replicas(0), &[1, 4, 2, 3]);
        assert_eq!(t.reassignments[&0].removing, vec![2, 3]);

        // The end of an earlier target is ignored; the current one's ends the move.
        let done = |target: Vec<i32>| MetaRecord::ReassignmentCompleted {
            id,
            partition: 0,
            target,
        };
        image.apply(&done(vec![2, 3]));
        assert_eq!(image.topic("t").unwrap().replicas(0), &[1, 4, 2, 3]);
        image.apply(&done(vec![1, 4]));
        let t = image.topic("t").unwrap();
        assert_eq!(t.replicas(0), &[1, 4]);
        assert!(t.reassignments.is_empty());
        assert_eq!(t.replicas(1), &[2, 3]);
    }

    #[test]
    fn a_fenced_broker_is_not_placeable_until_unfenced_or_gone() {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            image.apply(&MetaRecord::BrokerRegistered(BrokerInfo {
                id,
                host: "h".into(),
                port: 9092,
                rpc: format!("h:{id}"),
                rack: None,
            }));
        }
        let placeable = |img: &MetadataImage| img.placeable().map(|b| b.id).collect::<Vec<_>>();
        image.apply(&MetaRecord::BrokerFenced { id: 2 });
        image.apply(&MetaRecord::BrokerFenced { id: 9 });
        assert_eq!(placeable(&image), vec![1, 3]);
        assert_eq!(
            image.fenced,
            BTreeSet::from([2]),
            "an unknown id is not fenced"
        );
        let spread = crate::topics::spread(&image, 2, 2, 0).unwrap();
        assert!(spread.iter().flatten().all(|b| *b != 2), "{spread:?}");
        assert!(crate::topics::spread(&image, 1, 3, 0).is_err());
        image.apply(&MetaRecord::BrokerUnfenced { id: 2 });
        assert_eq!(placeable(&image), vec![1, 2, 3]);
        image.apply(&MetaRecord::BrokerFenced { id: 3 });
        image.apply(&MetaRecord::BrokerUnregistered { id: 3 });
        assert!(image.fenced.is_empty(), "a broker that left is not fenced");
    }
}
