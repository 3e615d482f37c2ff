//! Offset spaces are distinct types so a Raft index is never used where a Kafka offset is meant.

use std::fmt;

/// A Kafka offset: what clients see. Dense over data batches; Raft-internal entries take none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

/// A Raft log index: one per stored entry (data batch or Raft-internal entry), dense from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RaftIndex(pub u64);

/// A Raft term; stored in each Kafka batch's partition-leader-epoch field (clamped to i32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offset {}", self.0)
    }
}

impl fmt::Display for RaftIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft index {}", self.0)
    }
}

/// What an entry in the log is. Only `Data` entries are visible to Kafka readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A Kafka RecordBatch v2 with offsets assigned by the log.
    Data,
    /// An opaque Raft-internal entry (membership change, blank leader entry). Takes no offset.
    Internal,
}

impl EntryKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            EntryKind::Data => 0,
            EntryKind::Internal => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(EntryKind::Data),
            1 => Some(EntryKind::Internal),
            _ => None,
        }
    }
}
