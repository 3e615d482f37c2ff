//! Dropping a partition's oldest data (retention, DeleteRecords) on a replicated log.
//!
//! Storage must not drop entries behind openraft's back: openraft would still send them to
//! a lagging follower. So a cut goes through Raft: the snapshot builder is told where the
//! new start is (`PrefixPoint`), openraft takes that snapshot and purges up to it (the log
//! store then drops the entries), and only then may storage move the Kafka start inside
//! the first kept batch. A follower behind the cut is sent the snapshot and restarts its
//! log at the same offset.

use std::io;
use std::time::Duration;

use openraft_rt::WatchReceiver;
use sluice_storage::{LogStart, Offset, PartitionLog, RaftIndex};

use crate::network::PartitionRaftNode;
use crate::state_machine::PrefixPoint;
use crate::types::log_id;

/// How long a cut waits for openraft's snapshot and purge (a purge waits for replication
/// streams reading the entries to move on).
pub const PREFIX_CUT_TIMEOUT: Duration = Duration::from_secs(30);

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Moves this replica's log start to `offset`, never past `high_watermark` (only applied
/// data may go), and returns the start after the cut.
pub async fn advance_log_start(
    raft: &PartitionRaftNode,
    log: &PartitionLog,
    prefix: &PrefixPoint,
    offset: Offset,
    high_watermark: Offset,
) -> io::Result<LogStart> {
    let offset = offset.min(high_watermark);
    if offset <= log.start().offset {
        return Ok(log.start());
    }
    let applied = raft.metrics().borrow_watched().last_applied;
    let Some(applied) = applied else {
        return Ok(log.start());
    };
    // The cut ends on whole entries: before the batch holding `offset`, or after the last
    // applied entry when everything applied goes.
    let (first_kept, base) = match log.entry_holding(offset).await.map_err(io_err)? {
        Some((i, base)) if i.0 <= applied.index + 1 => (i, base),
        _ => (RaftIndex(applied.index + 1), high_watermark),
    };
    if first_kept > log.start().raft_index {
        let last = RaftIndex(first_kept.0 - 1);
        let term = log
            .term_at(last)
            .await
            .map_err(io_err)?
            .ok_or_else(|| io_err(format!("no entry at {last} to cut after")))?;
        let id = log_id(term.0, last.0);
        prefix.set(Some((id, base)));
        raft.trigger().snapshot().await.map_err(io_err)?;
        raft.wait(Some(PREFIX_CUT_TIMEOUT))
            .metrics(|m| m.snapshot >= Some(id), "snapshot at the cut")
            .await
            .map_err(io_err)?;
        raft.trigger().purge_log(last.0).await.map_err(io_err)?;
        raft.wait(Some(PREFIX_CUT_TIMEOUT))
            .metrics(|m| m.purged >= Some(id), "log purged to the cut")
            .await
            .map_err(io_err)?;
    }
    log.advance_start(offset).await.map_err(io_err)
}
