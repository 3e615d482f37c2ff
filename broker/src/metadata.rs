//! Cluster metadata: topics with ids, partition counts and configs, the cluster id and the
//! producer-id counter.
//!
//! Shard 0 owns the `MetadataStore`, an append-only log of `MetaRecord`s kept in a storage
//! `PartitionLog` (as opaque internal entries) under `<data>/__cluster_metadata`, so Raft
//! group 0 can later replicate exactly this log. Every change is durable before it is
//! applied; the resulting immutable `MetadataImage` is then handed to every shard.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_storage::{LogConfig, PartitionLog, RaftIndex, StorageError, Term};
use uuid::Uuid;

/// Directory of the metadata log inside the data dir.
pub const METADATA_DIR: &str = "__cluster_metadata";
/// Producer ids are handed out from the persisted counter in blocks of this many, so a
/// restart never reuses one without a write per InitProducerId.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
const METADATA_TERM: Term = Term(1);
/// Largest metadata log read at once during replay.
const REPLAY_CHUNK_BYTES: usize = 4 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaRecord {
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
    /// The full set of overrides after the change.
    ConfigsSet {
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `next` may have been handed out.
    ProducerIds {
        next: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

/// An immutable view of the metadata, shared by every shard.
#[derive(Clone, Debug, Default)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub topics: BTreeMap<String, Topic>,
    pub by_id: HashMap<Uuid, String>,
    pub producer_ids_reserved: i64,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Topic> {
        self.by_id.get(id).and_then(|n| self.topics.get(n))
    }

    fn apply(&mut self, r: &MetaRecord) {
        match r {
            MetaRecord::ClusterId(id) => self.cluster_id = id.clone(),
            MetaRecord::TopicCreated {
                name,
                id,
                partitions,
                configs,
            } => {
                self.by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Topic {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
                    },
                );
            }
            MetaRecord::TopicDeleted { id } => {
                if let Some(name) = self.by_id.remove(id) {
                    self.topics.remove(&name);
                }
            }
            MetaRecord::PartitionsCreated { id, count } => {
                if let Some(t) = self.by_id.get(id).and_then(|n| self.topics.get_mut(n)) {
                    t.partitions = *count;
                }
            }
            MetaRecord::ConfigsSet { id, configs } => {
                if let Some(t) = self.by_id.get(id).and_then(|n| self.topics.get_mut(n)) {
                    t.configs = configs.clone();
                }
            }
            MetaRecord::ProducerIds { next } => self.producer_ids_reserved = *next,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata log: {0}")]
    Storage(#[from] StorageError),
    #[error("metadata record at {0:?} does not decode: {1}")]
    Decode(RaftIndex, serde_json::Error),
}

/// The metadata log and the image it produces. Lives on shard 0 only.
pub struct MetadataStore {
    log: PartitionLog,
    image: Arc<MetadataImage>,
    next_producer_id: i64,
}

impl MetadataStore {
    /// Opens the log and replays it. A fresh log gets a cluster id.
    pub async fn open(data_dir: &Path) -> Result<Self, MetaError> {
        let log = PartitionLog::open(
            &data_dir.join(METADATA_DIR),
            LogConfig {
                retention_ms: None,
                ..LogConfig::default()
            },
        )
        .await?;
        let mut image = MetadataImage::default();
        let end = log.end().next_raft_index;
        let mut next = log.start().raft_index;
        while next < end {
            let entries = log.entries(next, end, REPLAY_CHUNK_BYTES).await?;
            for e in &entries {
                let r: MetaRecord = serde_json::from_slice(&e.payload)
                    .map_err(|err| MetaError::Decode(e.raft_index, err))?;
                image.apply(&r);
            }
            next = entries
                .last()
                .map_or(end, |e| RaftIndex(e.raft_index.0 + 1));
        }
        let mut store = MetadataStore {
            next_producer_id: image.producer_ids_reserved,
            log,
            image: Arc::new(image),
        };
        if store.image.cluster_id.is_empty() {
            // Kafka cluster ids are 22-character url-safe base64 of a UUID; any string works.
            let id = Uuid::new_v4().simple().to_string()[..22].to_string();
            store.commit(vec![MetaRecord::ClusterId(id)]).await?;
        }
        Ok(store)
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.clone()
    }

    /// Appends the records durably, then applies them to a new image.
    pub async fn commit(
        &mut self,
        records: Vec<MetaRecord>,
    ) -> Result<Arc<MetadataImage>, MetaError> {
        for r in &records {
            let payload = serde_json::to_vec(r).expect("metadata records serialize");
            self.log.append_internal(&payload, METADATA_TERM).await?;
        }
        self.log.flush().await?;
        let mut image = (*self.image).clone();
        for r in &records {
            image.apply(r);
        }
        self.image = Arc::new(image);
        Ok(self.image.clone())
    }

    /// A fresh producer id; persists a new block when the current one runs out.
    pub async fn next_producer_id(&mut self) -> Result<i64, MetaError> {
        if self.next_producer_id >= self.image.producer_ids_reserved {
            let next =
                self.image.producer_ids_reserved.max(self.next_producer_id) + PRODUCER_ID_BLOCK;
            self.commit(vec![MetaRecord::ProducerIds { next }]).await?;
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        Ok(id)
    }

    pub async fn close(self) -> Result<(), MetaError> {
        Ok(self.log.close().await?)
    }
}
