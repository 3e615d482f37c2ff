//! The Raft type configuration of a partition: what an entry carries and what applying it
//! answers.

use std::fmt;

use bytes::Bytes;
use openraft::type_config::alias;
use serde::{Deserialize, Serialize};

use crate::runtime::GlommioRuntime;

/// A client's Kafka RecordBatch v2, as produced. The log sets its base offset and leader
/// epoch when it stores it, so every replica holds the same bytes at the same offsets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Bytes);

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch({} bytes)", self.0.len())
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where an applied batch's records are: its Kafka offsets, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedBatch {
    pub base_offset: u64,
    pub last_offset: u64,
}

openraft::declare_raft_types!(
    /// A partition's Raft group. Standard Raft leader ids (one leader per term), so a log id
    /// is (term, index): exactly what a stored frame records, and the term is the Kafka
    /// leader epoch. Nodes carry no address: brokers' addresses are cluster metadata.
    pub PartitionRaft:
        D = Batch,
        R = AppliedBatch,
        NodeId = u64,
        Node = openraft::EmptyNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = GlommioRuntime,
);

pub type LogId = alias::LogIdOf<PartitionRaft>;
pub type Vote = alias::VoteOf<PartitionRaft>;
pub type Entry = alias::EntryOf<PartitionRaft>;
pub type Membership = openraft::Membership<u64, openraft::EmptyNode>;
pub type StoredMembership = alias::StoredMembershipOf<PartitionRaft>;
pub type SnapshotMeta = alias::SnapshotMetaOf<PartitionRaft>;

/// A log id from its parts.
pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(
        alias::CommittedLeaderIdOf::<PartitionRaft>::new(term),
        index,
    )
}
