//! Throughput: K producers looping append → flush on one `PartitionLog`, against the raw floor
//! that replays the log's achieved fsync cadence with plain O_DIRECT writes + fdatasync.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::DmaFile;
use glommio::spawn_local;
use sluice_storage::{PartitionLog, Term};

use crate::{align_up, log_config, BenchResult, BLOCK_BYTES};

/// What one log run achieved.
pub struct LogRun {
    pub batches: u64,
    /// Batches each producer got durable: a wide spread means flush callers starve.
    pub per_producer: Vec<u64>,
    pub elapsed: Duration,
    /// Batches made durable by each fdatasync, in order.
    pub groups: Vec<u64>,
}

/// What one raw replay took.
pub struct RawRun {
    pub elapsed: Duration,
    /// Bytes handed to the device: whole blocks, the rewritten partial block included.
    pub written: u64,
}

/// Counts the log's fdatasyncs from the outside: every flush that syncs returns the new
/// durable end in the same poll, so each distinct durable end seen is one fdatasync.
struct SyncTracker {
    last: u64,
    groups: Vec<u64>,
}

impl SyncTracker {
    fn observe(&mut self, durable_next_raft: u64) {
        if durable_next_raft > self.last {
            self.groups.push(durable_next_raft - self.last);
            self.last = durable_next_raft;
        }
    }
}

pub async fn log_run(
    dir: &Path,
    batch: Rc<Vec<u8>>,
    producers: usize,
    duration: Duration,
) -> BenchResult<LogRun> {
    let log = Rc::new(PartitionLog::open(dir, log_config()).await?);
    let tracker = Rc::new(RefCell::new(SyncTracker {
        last: log.durable_end().next_raft_index.0,
        groups: Vec::new(),
    }));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let (log, tracker, batch) = (log.clone(), tracker.clone(), batch.clone());
            spawn_local(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    log.append(&batch, Term(1)).await?;
                    let durable = log.flush().await?;
                    tracker.borrow_mut().observe(durable.next_raft_index.0);
                    n += 1;
                }
                Ok::<u64, sluice_storage::StorageError>(n)
            })
        })
        .collect();
    let mut per_producer = Vec::with_capacity(tasks.len());
    for t in tasks {
        per_producer.push(t.await?);
    }
    let batches = per_producer.iter().sum();
    let elapsed = start.elapsed();
    let log = Rc::try_unwrap(log).map_err(|_| "log still shared after the producers ended")?;
    log.close().await?;
    let groups = std::mem::take(&mut tracker.borrow_mut().groups);
    Ok(LogRun {
        batches,
        per_producer,
        elapsed,
        groups,
    })
}

/// Writes `chunks` (bytes each) as one contiguous stream into a fresh O_DIRECT file, with an
/// fdatasync after each chunk, one at a time: the hardware floor for making those bytes durable
/// at that cadence. Like any O_DIRECT appender it keeps the partly filled last block in memory
/// and rewrites it with the next chunk (whole blocks from the block the stream's end is in).
pub async fn raw_replay(path: &Path, batch: &[u8], chunks: &[u64]) -> BenchResult<RawRun> {
    let mut it = chunks.iter().copied();
    raw_stream(path, batch, |_| it.next()).await
}

/// Like `raw_replay` with `chunk` bytes per fdatasync, for `duration`.
pub async fn raw_for(
    path: &Path,
    batch: &[u8],
    chunk: u64,
    duration: Duration,
) -> BenchResult<(RawRun, u64)> {
    let mut bytes = 0;
    let run = raw_stream(path, batch, |elapsed| {
        (elapsed < duration).then(|| {
            bytes += chunk;
            chunk
        })
    })
    .await?;
    Ok((run, bytes))
}

/// The raw writer: asks `next_chunk` (given the time spent so far) for the bytes to make
/// durable next, until it answers `None`.
async fn raw_stream(
    path: &Path,
    batch: &[u8],
    mut next_chunk: impl FnMut(Duration) -> Option<u64>,
) -> BenchResult<RawRun> {
    let file = DmaFile::create(path).await?;
    let mut tail: Vec<u8> = Vec::new();
    let mut tail_start = 0u64;
    let mut written = 0u64;
    let start = Instant::now();
    while let Some(len) = next_chunk(start.elapsed()) {
        // Chunks are whole batches, so the stream is the batch repeated.
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(batch.len());
            tail.extend_from_slice(&batch[..n]);
            left -= n;
        }
        let padded = align_up(tail.len() as u64);
        let mut buf = file.alloc_dma_buffer(padded as usize);
        let b = buf.as_bytes_mut();
        b[..tail.len()].copy_from_slice(&tail);
        b[tail.len()..].fill(0);
        let n = file.write_at(buf, tail_start).await?;
        if n as u64 != padded {
            return Err(format!("short direct write: {n} of {padded} bytes").into());
        }
        file.fdatasync().await?;
        written += padded;
        let keep_from = tail.len() / BLOCK_BYTES as usize * BLOCK_BYTES as usize;
        tail.drain(..keep_from);
        tail_start += keep_from as u64;
    }
    let elapsed = start.elapsed();
    file.close().await?;
    Ok(RawRun { elapsed, written })
}
