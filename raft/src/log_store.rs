//! openraft's log storage over a partition's `PartitionLog`.
//!
//! Every Raft entry is one stored frame at the Raft index and term the leader gave it: a
//! client batch is a data frame (it takes Kafka offsets), a blank or membership entry an
//! internal frame (it takes none, so Kafka offsets stay dense). The vote and the last purged
//! log id share one torn-write-safe record (`HardState`). Appends return at once; one flusher
//! task per log reports them flushed after the fdatasync that covers them, so concurrent
//! appends share syncs.

use std::cell::RefCell;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AsyncRuntime, EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use sluice_storage::{EntryKind, HardState, LogStart, PartitionLog, RaftIndex, Term};
use tracing::error;

use crate::runtime::GlommioRuntime;
use crate::types::{log_id, Batch, Entry, LogId, Membership, PartitionRaft, Vote};

/// Bytes read from storage per call when openraft asks for a range of entries.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// First byte of an internal entry's payload.
const BLANK_TAG: u8 = 1;
const MEMBERSHIP_TAG: u8 = 2;

/// What must survive a crash besides the entries.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Durable {
    vote: Option<Vote>,
    /// Entries up to here are gone or may be; reads never go below it.
    purged: Option<LogId>,
    /// Kept only by stores opened `with_saved_committed`: a restart applies up to it
    /// without waiting for a quorum.
    #[serde(default)]
    committed: Option<LogId>,
}

/// State the store and its readers share (one executor thread, no lock).
struct Shared {
    log: Rc<PartitionLog>,
    durable: RefCell<Durable>,
}

impl Shared {
    /// First Raft index a reader may see: past the purged id, and stored.
    fn first_index(&self) -> u64 {
        let purged_next = self.durable.borrow().purged.map_or(0, |p| p.index + 1);
        self.log.start().raft_index.0.max(purged_next)
    }

    fn last_log_id(&self) -> Option<LogId> {
        let end = self.log.end();
        if end.next_raft_index.0 > self.first_index() {
            Some(log_id(end.last_term.0, end.next_raft_index.0 - 1))
        } else {
            self.durable.borrow().purged
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The log storage of one partition replica.
pub struct LogStore {
    shared: Rc<Shared>,
    hard_state: HardState,
    flusher: flume::Sender<IOFlushed<PartitionRaft>>,
    save_committed: bool,
}

/// Reads entries and the vote; cheap to clone, one per replication stream.
#[derive(Clone)]
pub struct LogReader {
    shared: Rc<Shared>,
}

impl LogStore {
    /// Opens the Raft state kept beside `log` in its directory `dir`.
    pub async fn open(dir: &Path, log: Rc<PartitionLog>) -> io::Result<Self> {
        let (hard_state, saved) = HardState::open(dir).await.map_err(io_err)?;
        let durable = match saved {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| io_err(format!("{}: damaged Raft state: {e}", dir.display())))?,
            None => Durable::default(),
        };
        let shared = Rc::new(Shared {
            log,
            durable: RefCell::new(durable),
        });
        // openraft bounds the appends in flight; the queue only holds their callbacks.
        let (flusher, pending) = flume::unbounded();
        GlommioRuntime::spawn(flush_appends(shared.log.clone(), pending));
        Ok(LogStore {
            shared,
            hard_state,
            flusher,
            save_committed: false,
        })
    }

    /// Records the commit point (one small synced write per change), so a restarted
    /// replica applies what was committed before any quorum answers. For groups whose
    /// state must exist before the cluster does (the controller); partitions skip it.
    pub fn with_saved_committed(mut self) -> Self {
        self.save_committed = true;
        self
    }

    async fn save(&mut self, next: Durable) -> io::Result<()> {
        let bytes = serde_json::to_vec(&next).map_err(io_err)?;
        self.hard_state.save(&bytes).await.map_err(io_err)?;
        *self.shared.durable.borrow_mut() = next;
        Ok(())
    }

    async fn append_one(&self, entry: Entry) -> io::Result<()> {
        let log = &self.shared.log;
        let (term, index) = (entry.log_id.leader_id.term, entry.log_id.index);
        let end = log.end();
        let empty = end.next_raft_index.0 <= self.shared.first_index();
        if empty && index > end.next_raft_index.0 {
            // A log with nothing stored starts where its first entry is.
            let start = LogStart {
                offset: end.next_offset,
                raft_index: RaftIndex(index),
            };
            log.reset(start, end.last_term).await.map_err(io_err)?;
        }
        let (kind, payload): (EntryKind, Bytes) = match entry.payload {
            EntryPayload::Normal(Batch(b)) => (EntryKind::Data, b),
            EntryPayload::Blank => (EntryKind::Internal, Bytes::from_static(&[BLANK_TAG])),
            EntryPayload::Membership(m) => {
                let mut p = vec![MEMBERSHIP_TAG];
                serde_json::to_writer(&mut p, &m).map_err(io_err)?;
                (EntryKind::Internal, Bytes::from(p))
            }
        };
        log.append_entry(RaftIndex(index), Term(term), kind, &payload)
            .await
            .map_err(io_err)?;
        Ok(())
    }
}

/// Completes append callbacks in order, each after an fdatasync that covers its entries;
/// callbacks queued while one sync runs share the next.
async fn flush_appends(log: Rc<PartitionLog>, pending: flume::Receiver<IOFlushed<PartitionRaft>>) {
    while let Ok(first) = pending.recv_async().await {
        let mut ready = vec![first];
        ready.extend(pending.try_iter());
        let result = log.flush().await;
        if let Err(e) = &result {
            error!(dir = %log.dir().display(), error = %e, "Raft log flush failed");
        }
        for cb in ready {
            cb.io_completed(result.as_ref().map(|_| ()).map_err(io_err));
        }
    }
}

fn decode(e: sluice_storage::Entry) -> io::Result<Entry> {
    let id = log_id(e.term.0, e.raft_index.0);
    let bad = || io_err(format!("undecodable Raft entry at {}", e.raft_index));
    Ok(match e.kind {
        EntryKind::Data => Entry::new_normal(id, Batch(e.payload)),
        EntryKind::Internal => match e.payload.first() {
            // Compaction removed the batch (below the commit point): applying it again moves
            // no offsets, so it reads back as a blank entry.
            None | Some(&BLANK_TAG) => Entry::new_blank(id),
            Some(&MEMBERSHIP_TAG) => {
                let m: Membership = serde_json::from_slice(&e.payload[1..]).map_err(|_| bad())?;
                Entry::new_membership(id, m)
            }
            _ => return Err(bad()),
        },
    })
}

impl RaftLogReader<PartitionRaft> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let s = &self.shared;
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(s.first_index());
        let end = s.log.end().next_raft_index.0;
        let to = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => end,
        }
        .min(end);
        let mut out = Vec::new();
        let mut next = from;
        while next < to {
            let chunk = s
                .log
                .entries(RaftIndex(next), RaftIndex(to), READ_CHUNK_BYTES)
                .await
                .map_err(io_err)?;
            let Some(last) = chunk.last() else { break };
            next = last.raft_index.0 + 1;
            for e in chunk {
                out.push(decode(e)?);
            }
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.shared.durable.borrow().vote)
    }
}

impl RaftLogStorage<PartitionRaft> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<PartitionRaft>> {
        Ok(LogState {
            last_purged_log_id: self.shared.durable.borrow().purged,
            last_log_id: self.shared.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let next = Durable {
            vote: Some(*vote),
            ..self.shared.durable.borrow().clone()
        };
        self.save(next).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        if !self.save_committed || committed <= self.shared.durable.borrow().committed {
            return Ok(());
        }
        let next = Durable {
            committed,
            ..self.shared.durable.borrow().clone()
        };
        self.save(next).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        let d = self.shared.durable.borrow();
        // Never past the log that recovered (the entries are what is applied).
        Ok(d.committed
            .filter(|c| Some(*c) <= self.shared.last_log_id()))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<PartitionRaft>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        for e in entries {
            self.append_one(e).await?;
        }
        self.flusher
            .send(callback)
            .map_err(|_| io_err("the Raft log flusher stopped"))
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        let from = last.map_or(self.shared.first_index(), |l| l.index + 1);
        if from >= self.shared.log.end().next_raft_index.0 {
            return Ok(());
        }
        self.shared
            .log
            .truncate_suffix(RaftIndex(from))
            .await
            .map_err(io_err)
    }

    async fn purge(&mut self, upto: LogId) -> io::Result<()> {
        let known = self.shared.durable.borrow().clone();
        if known.purged.is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        // Recorded first: a crash before storage drops the entries leaves them unread.
        self.save(Durable {
            purged: Some(upto),
            ..known
        })
        .await?;
        let log = &self.shared.log;
        let end = log.end();
        if upto.index < end.next_raft_index.0 {
            log.purge_to(RaftIndex(upto.index)).await.map_err(io_err)?;
        } else {
            let start = LogStart {
                offset: end.next_offset,
                raft_index: RaftIndex(upto.index + 1),
            };
            log.reset(start, Term(upto.leader_id.term))
                .await
                .map_err(io_err)?;
        }
        Ok(())
    }
}
