//! A partition's state machine is its log: applying a committed entry moves the high
//! watermark past the entry's offsets and records the membership. A snapshot stands for the
//! prefix of the log that retention or DeleteRecords dropped: the entry before the new log
//! start, the membership then, and the start's offset, kept in one torn-write-safe record
//! beside the log. A replica that fell behind that start installs it: its log restarts at
//! the leader's start offset, and the retained entries follow by normal replication.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::Path;
use std::rc::Rc;

use futures_util::lock::Mutex;
use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::SnapshotOf;
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use sluice_storage::{Checkpoint, LogStart, Offset, PartitionLog, RaftIndex, Term};

use crate::types::{AppliedBatch, Entry, LogId, PartitionRaft, SnapshotMeta, StoredMembership};

/// File of the snapshot record inside a partition directory.
pub const SNAPSHOT_FILE: &str = "raft-snapshot";
/// File of the applied-position record: where a restart resumes applying.
pub const APPLIED_FILE: &str = "raft-applied";
/// Batch bytes applied between applied-position records: a restart applies at most this
/// much again (it reads it back from the log) before the partition is served.
pub const APPLIED_CHECKPOINT_BYTES: u64 = 32 << 20;

/// What a snapshot carries besides its meta: the first Kafka offset after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    pub next_offset: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedSnapshot {
    meta: SnapshotMeta,
    data: PartitionSnapshot,
}

#[derive(Clone, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembership,
    /// One past the last applied data offset: the high watermark.
    next_offset: u64,
}

type Snapshot = SnapshotOf<PartitionRaft, PartitionSnapshot>;

/// The durable snapshot record and the snapshot it holds, shared with snapshot builders.
struct Record {
    checkpoint: Mutex<Checkpoint>,
    current: RefCell<Option<SavedSnapshot>>,
}

impl Record {
    async fn store(&self, s: SavedSnapshot) -> io::Result<()> {
        let bytes = serde_json::to_vec(&s).map_err(io_err)?;
        self.checkpoint
            .lock()
            .await
            .store(&bytes)
            .await
            .map_err(io_err)?;
        *self.current.borrow_mut() = Some(s);
        Ok(())
    }

    fn current(&self) -> Option<Snapshot> {
        self.current.borrow().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: s.data,
        })
    }
}

/// What the embedder layers on applied batches (the broker's producer state, wake-ups of
/// parked fetches). Called on every replica, in log order, as entries are applied.
pub trait ApplyObserver {
    /// `batch` (its stored bytes) was applied with its first record at `base_offset`.
    fn applied(&self, batch: &[u8], base_offset: u64);
    /// A snapshot replaced the log: everything before `next_offset` is gone.
    fn reset(&self, next_offset: u64);
}

/// Where the next snapshot ends: the entry just before the log's new start and the offset
/// that start has. Set by `advance_log_start` before it asks openraft for a snapshot.
pub type PrefixPoint = Rc<Cell<Option<(LogId, Offset)>>>;

pub struct StateMachine {
    log: Rc<PartitionLog>,
    applied: Applied,
    /// Memberships applied since the oldest one a snapshot at the prefix point may need.
    memberships: Vec<StoredMembership>,
    prefix: PrefixPoint,
    /// Applied entries are committed and durable here, so recording where applying got to
    /// is safe; a restart resumes from the newer of it and the snapshot.
    applied_record: Checkpoint,
    unrecorded_bytes: u64,
    checkpoint_bytes: u64,
    /// Shared with the broker: the high watermark readers may see up to.
    high_watermark: Rc<Cell<Offset>>,
    record: Rc<Record>,
    observer: Option<Rc<dyn ApplyObserver>>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    /// Opens the state machine of the log in `dir`. Nothing applied is stored but the
    /// snapshot: after a restart openraft applies committed entries again from it.
    pub async fn open(dir: &Path, log: Rc<PartitionLog>) -> io::Result<Self> {
        let (record, saved) = Checkpoint::open(&dir.join(SNAPSHOT_FILE))
            .await
            .map_err(io_err)?;
        let current: Option<SavedSnapshot> = match saved {
            Some(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                io_err(format!(
                    "{}: damaged Raft snapshot record: {e}",
                    dir.display()
                ))
            })?),
            None => None,
        };
        let mut applied = match &current {
            Some(s) => Applied {
                last: s.meta.last_log_id,
                membership: s.meta.last_membership.clone(),
                next_offset: s.data.next_offset,
            },
            None => Applied {
                last: None,
                membership: StoredMembership::default(),
                next_offset: log.start().offset.0,
            },
        };
        let (applied_record, saved) = Checkpoint::open(&dir.join(APPLIED_FILE))
            .await
            .map_err(io_err)?;
        if let Some(b) = saved {
            let recorded: Applied = serde_json::from_slice(&b).map_err(|e| {
                io_err(format!(
                    "{}: damaged applied-position record: {e}",
                    dir.display()
                ))
            })?;
            if recorded.last > applied.last {
                applied = recorded;
            }
        }
        let high_watermark = Rc::new(Cell::new(Offset(applied.next_offset)));
        Ok(StateMachine {
            log,
            memberships: vec![applied.membership.clone()],
            prefix: PrefixPoint::default(),
            applied_record,
            unrecorded_bytes: 0,
            checkpoint_bytes: APPLIED_CHECKPOINT_BYTES,
            applied,
            high_watermark,
            record: Rc::new(Record {
                checkpoint: Mutex::new(record),
                current: RefCell::new(current),
            }),
            observer: None,
        })
    }

    /// Records the applied position every `bytes` of applied batches instead of
    /// `APPLIED_CHECKPOINT_BYTES`.
    pub fn with_checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes;
        self
    }

    /// Tells `observer` about every batch applied from now on.
    pub fn with_observer(mut self, observer: Rc<dyn ApplyObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Where `advance_log_start` tells the snapshot builder to cut.
    pub fn prefix_point(&self) -> PrefixPoint {
        self.prefix.clone()
    }

    /// The high watermark as applying moves it.
    pub fn high_watermark(&self) -> Rc<Cell<Offset>> {
        self.high_watermark.clone()
    }

    fn apply_one(&mut self, entry: &Entry) -> Option<AppliedBatch> {
        self.applied.last = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Membership(m) => {
                self.applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                self.memberships.push(self.applied.membership.clone());
                None
            }
            EntryPayload::Normal(batch) => {
                let header = sluice_storage::parse_header(&batch.0).ok();
                let count = header.as_ref().map_or(0, |h| h.offset_count());
                // A stored batch carries the offsets its leader gave it; compaction may have
                // dropped the batches before it (their entries are read back as blanks).
                let stored_base = header.map_or(0, |h| h.base_offset.max(0) as u64);
                let base = self.applied.next_offset.max(stored_base);
                self.applied.next_offset = base + count;
                self.unrecorded_bytes += batch.0.len() as u64;
                self.high_watermark.set(Offset(self.applied.next_offset));
                if let Some(o) = &self.observer {
                    o.applied(&batch.0, base);
                }
                Some(AppliedBatch {
                    base_offset: base,
                    last_offset: (base + count).saturating_sub(1),
                })
            }
        }
    }
}

/// Builds a snapshot of the state as applied when it was asked for.
pub struct SnapshotBuilder {
    saved: SavedSnapshot,
    record: Rc<Record>,
}

impl RaftSnapshotBuilder<PartitionRaft> for SnapshotBuilder {
    type SnapshotData = PartitionSnapshot;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        self.record.store(self.saved.clone()).await?;
        Ok(Snapshot {
            meta: self.saved.meta.clone(),
            snapshot: self.saved.data,
        })
    }
}

impl RaftStateMachine<PartitionRaft> for StateMachine {
    type SnapshotData = PartitionSnapshot;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.applied.last, self.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: futures_util::Stream<Item = io::Result<EntryResponder<PartitionRaft>>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let applied = self.apply_one(&entry);
            if let Some(r) = responder {
                let at = self.applied.next_offset;
                r.send(applied.unwrap_or(AppliedBatch {
                    base_offset: at,
                    last_offset: at.saturating_sub(1),
                }));
            }
        }
        if self.unrecorded_bytes >= self.checkpoint_bytes {
            let bytes = serde_json::to_vec(&self.applied).map_err(io_err)?;
            self.applied_record.store(&bytes).await.map_err(io_err)?;
            self.unrecorded_bytes = 0;
        }
        Ok(())
    }

    /// A snapshot of a partition is the prefix of its log that is gone: it ends at the prefix
    /// point, so a replica that installs it keeps receiving every retained entry. Without a
    /// prefix point (Sluice never asks then; openraft's generic tests do) it ends at the
    /// applied entry.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let (last, next_offset) = match self.prefix.get() {
            Some((id, offset)) if Some(id) <= self.applied.last => (Some(id), offset.0),
            _ => (self.applied.last, self.applied.next_offset),
        };
        // The membership in force at the cut: the newest applied at or before it.
        let keep = self
            .memberships
            .iter()
            .rposition(|m| m.log_id() <= &last)
            .unwrap_or(0);
        self.memberships.drain(..keep);
        SnapshotBuilder {
            saved: SavedSnapshot {
                meta: SnapshotMeta {
                    last_log_id: last,
                    last_membership: self.memberships[0].clone(),
                },
                data: PartitionSnapshot { next_offset },
            },
            record: self.record.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: PartitionSnapshot,
    ) -> io::Result<()> {
        let end = self.log.end();
        if let Some(last) = meta.last_log_id {
            if last.index >= end.next_raft_index.0 {
                // This replica's log ends before the snapshot: it restarts where the
                // leader's log continues, at the leader's offsets.
                let start = LogStart {
                    offset: Offset(snapshot.next_offset),
                    raft_index: RaftIndex(last.index + 1),
                };
                self.log
                    .reset(start, Term(last.leader_id.term))
                    .await
                    .map_err(io_err)?;
            }
        }
        self.record
            .store(SavedSnapshot {
                meta: meta.clone(),
                data: snapshot,
            })
            .await?;
        self.applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
            next_offset: snapshot.next_offset,
        };
        self.memberships = vec![meta.last_membership.clone()];
        self.high_watermark.set(Offset(snapshot.next_offset));
        if let Some(o) = &self.observer {
            o.reset(snapshot.next_offset);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        Ok(self.record.current())
    }
}
