//! `PartitionLog`: the on-disk log of one partition replica.
//!
//! Offset example: segments `[0..=99]` (raft 0..=9) and `[100..=180]` (raft 10..=17), active.
//! `append` of a 5-record batch gets offsets 181..=185 and raft index 18 at once; it is durable
//! once a `flush` that started after it returns. `truncate_suffix(raft 12)` keeps raft 0..=11
//! and the offsets before the batch at raft 12. `advance_start(150)` keeps both segments (the
//! second holds 150) but reads below 150 fail; `advance_start(181)` deletes the first segment.
//!
//! All methods take `&self` and are called from the one executor thread that owns the
//! partition. State lives in a `RefCell` that is never borrowed across an `.await`;
//! operations that rewrite files (flush, roll, truncate, start advance) are serialized by
//! `io_lock`, while appends only extend the in-memory tail and never wait on I/O unless the
//! segment must roll or too much is unflushed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::task::{Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::io::{Directory, DmaFile};
use glommio::sync::Semaphore;
use tracing::warn;

use crate::batch;
use crate::checkpoint::Checkpoint;
use crate::config::{
    LogConfig, MAX_INTERNAL_ENTRY_BYTES, PREALLOCATE_BYTES, PREALLOCATE_MIN_BYTES,
    READ_CHUNK_BYTES, RECOVERY_CHECKPOINT_INDEX_RATIO,
};
use crate::error::StorageError;
use crate::frame::{self, FRAME_HEADER_BYTES};
use crate::index;
use crate::segment::{scan, segment_path, ScanEnd, ScanRange, Segment, StoredFrame};
use crate::telemetry;
use crate::types::{EntryKind, Offset, RaftIndex, Term};

mod compact;
mod recovery;
pub use compact::{CompactionOptions, CompactionStats, Decompress};
pub use recovery::sync_file_system;

/// Unindexed bytes of the active segment for which `close` writes its index checkpoint;
/// below it the next open scans them (one read) instead of reading two index files.
const CLOSE_CHECKPOINT_MIN_BYTES: u64 = 1 << 20;
/// Direct-I/O write unit. Writes are whole blocks at block-aligned positions.
const BLOCK_BYTES: u64 = 4096;
const START_CHECKPOINT_FILE: &str = "log-start";
/// Extension of state snapshots, named by the offset they were taken at.
const SNAPSHOT_EXT: &str = "snapshot";
const SNAPSHOT_MAGIC: u32 = 0x50534c53; // "SLSP"
/// magic, payload length, CRC32C of the payload.
const SNAPSHOT_HEADER_BYTES: usize = 12;
/// Snapshots kept: the newest may describe entries a crash loses, the one before it not
/// (it is older by far more than `max_unflushed_bytes`).
const SNAPSHOTS_KEPT: usize = 2;

fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES - 1)
}
fn align_up(v: u64) -> u64 {
    align_down(v + BLOCK_BYTES - 1)
}
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where an appended batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub raft_index: RaftIndex,
}

/// One past the last entry: the next offset and Raft index to be assigned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogEnd {
    pub next_offset: Offset,
    pub next_raft_index: RaftIndex,
    /// Term of the last entry (0 for an empty log).
    pub last_term: Term,
}

/// The first retained entry. Reads below `offset` fail; `raft_index` is the first Raft entry
/// still stored (the one holding `offset`, or the next entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStart {
    pub offset: Offset,
    pub raft_index: RaftIndex,
}

/// An entry as Raft sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub raft_index: RaftIndex,
    pub term: Term,
    pub kind: EntryKind,
    /// First offset of a data batch; the next offset for an internal entry.
    pub offset: Offset,
    /// The Kafka batch bytes (data) or the opaque Raft payload (internal).
    pub payload: Bytes,
}

impl From<&StoredFrame> for Entry {
    fn from(f: &StoredFrame) -> Self {
        Entry {
            raft_index: f.header.raft_index,
            term: f.header.term,
            kind: f.header.kind,
            offset: f.offset,
            payload: f.payload(),
        }
    }
}

/// Where a walk over the log starts: a segment, a frame position in it, and the offset and
/// Raft index expected there.
#[derive(Clone, Copy)]
struct Cursor {
    segment: usize,
    position: u64,
    offset: Offset,
    raft: RaftIndex,
}

struct Inner {
    config: LogConfig,
    /// Sorted by base offset; the last one is active.
    segments: Vec<Segment>,
    /// Bytes of the active segment from `tail_start` (block aligned) to its end, not yet
    /// durable except for the first partial block, which is rewritten on each flush.
    tail: Vec<u8>,
    tail_start: u64,
    /// Bytes of the active segment covered by the last fdatasync.
    durable_size: u64,
    /// The active segment's file length: data, then zeros written ahead (`PREALLOCATE_BYTES`).
    prealloc_end: u64,
    /// Zeros the next extension writes ahead; doubles with each one (`PREALLOCATE_MIN_BYTES`).
    prealloc_step: u64,
    durable: LogEnd,
    /// Recent frames, a contiguous suffix of the log. Unflushed frames are always here.
    cache: VecDeque<StoredFrame>,
    cache_bytes: usize,
    start: LogStart,
    start_checkpoint: Option<Checkpoint>,
    /// Bytes of the active segment its `.index` checkpoint covers (recovery scans the rest).
    checkpointed_size: u64,
    /// Offsets of the saved state snapshots, oldest first.
    snapshots: Vec<Offset>,
}

pub struct PartitionLog {
    dir: PathBuf,
    inner: RefCell<Inner>,
    io_lock: Semaphore,
    /// A `flush` is writing and syncing; other flushers wait on `flush_done`.
    flushing: Cell<bool>,
    flush_done: Event,
}

/// Wakes every task waiting for the current flush to end. A waiter that raced past the end
/// just re-checks, so a spurious wake-up is harmless.
#[derive(Default)]
struct Event {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Event {
    async fn wait(&self) {
        let start = self.generation.get();
        std::future::poll_fn(|cx| {
            if self.generation.get() != start {
                return Poll::Ready(());
            }
            self.wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Marks a flush in progress; ends it and wakes waiters even if the flush is cancelled.
struct FlushingGuard<'a>(&'a PartitionLog);

impl<'a> FlushingGuard<'a> {
    fn new(log: &'a PartitionLog) -> Self {
        log.flushing.set(true);
        FlushingGuard(log)
    }
}

impl Drop for FlushingGuard<'_> {
    fn drop(&mut self) {
        self.0.flushing.set(false);
        self.0.flush_done.notify_all();
    }
}

impl Inner {
    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }
    fn end(&self) -> LogEnd {
        let s = &self.active().summary;
        LogEnd {
            next_offset: s.next_offset,
            next_raft_index: s.next_raft_index,
            last_term: Term(s.last_term),
        }
    }
    fn unflushed_bytes(&self) -> usize {
        (self.active().summary.size - self.durable_size) as usize
    }
    fn max_payload(&self) -> usize {
        self.config.max_batch_bytes.max(MAX_INTERNAL_ENTRY_BYTES)
    }
    fn segment_for_offset(&self, o: Offset) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= o)
            .saturating_sub(1)
    }
    fn segment_for_raft(&self, r: RaftIndex) -> usize {
        self.segments
            .partition_point(|s| s.summary.base_raft_index <= r)
            .saturating_sub(1)
    }
    fn cursor_for_offset(&self, o: Offset) -> Cursor {
        let segment = self.segment_for_offset(o);
        let s = &self.segments[segment];
        let e = index::floor(&s.entries, o, |e| e.offset);
        cursor_at(segment, s, e)
    }
    fn cursor_for_raft(&self, r: RaftIndex) -> Cursor {
        let segment = self.segment_for_raft(r);
        let s = &self.segments[segment];
        let e = index::floor(&s.entries, r, |e| e.raft_index);
        cursor_at(segment, s, e)
    }
    fn evict_cache(&mut self) {
        while self.cache_bytes > self.config.cache_bytes {
            match self.cache.front() {
                Some(f) if f.header.raft_index < self.durable.next_raft_index => {
                    self.cache_bytes -= f.frame.len();
                    self.cache.pop_front();
                }
                _ => break,
            }
        }
    }
}

fn cursor_at(segment: usize, s: &Segment, e: Option<index::IndexEntry>) -> Cursor {
    match e {
        Some(e) => Cursor {
            segment,
            position: e.position as u64,
            offset: e.offset,
            raft: e.raft_index,
        },
        None => Cursor {
            segment,
            position: 0,
            offset: s.base_offset,
            raft: s.summary.base_raft_index,
        },
    }
}

async fn read_small_file(path: &Path) -> Option<Vec<u8>> {
    let f = DmaFile::open(path).await.ok()?;
    let size = f.file_size().await.ok()? as usize;
    let r = f.read_at(0, size).await.ok()?;
    let v = r.to_vec();
    let _ = f.close().await;
    Some(v)
}

/// Writes a whole small file through direct I/O (zero padded to a block). No fsync: used for
/// derivable files only.
async fn write_small_file(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    let f = DmaFile::create(path)
        .await
        .map_err(|e| StorageError::io("create", path, e))?;
    let mut buf = f.alloc_dma_buffer(align_up(data.len() as u64).max(BLOCK_BYTES) as usize);
    let b = buf.as_bytes_mut();
    b.fill(0);
    b[..data.len()].copy_from_slice(data);
    f.write_at(buf, 0)
        .await
        .map_err(|e| StorageError::io("write", path, e))?;
    f.close()
        .await
        .map_err(|e| StorageError::io("close", path, e))
}

/// Whether bytes `[from, to)` of `file` are all zero.
async fn all_zero(file: &DmaFile, path: &Path, from: u64, to: u64) -> Result<bool, StorageError> {
    let mut pos = from;
    while pos < to {
        let len = (to - pos).min(READ_CHUNK_BYTES as u64) as usize;
        let r = file
            .read_at(pos, len)
            .await
            .map_err(|e| StorageError::io("read segment", path, e))?;
        if r.is_empty() {
            break;
        }
        if r.iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += r.len() as u64;
    }
    Ok(true)
}

async fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match glommio::io::remove(path).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e: std::io::Error = e.into();
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(StorageError::io("remove", path, e))
            }
        }
    }
}

async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let d = Directory::open(dir)
        .await
        .map_err(|e| StorageError::io("open dir", dir, e))?;
    d.sync()
        .await
        .map_err(|e| StorageError::io("sync dir", dir, e))?;
    d.close()
        .await
        .map_err(|e| StorageError::io("close dir", dir, e))
}

async fn delete_segment_files(s: &Segment) -> Result<(), StorageError> {
    let (idx, time) = s.index_paths();
    remove_if_present(&idx).await?;
    remove_if_present(&time).await?;
    remove_if_present(&s.path).await
}

async fn write_index(s: &Segment) -> Result<(), StorageError> {
    let (idx_path, time_path) = s.index_paths();
    let (idx, time) = index::encode(&s.summary, &s.entries);
    write_small_file(&idx_path, &idx).await?;
    write_small_file(&time_path, &time).await
}

fn encode_start(s: &LogStart) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&s.offset.0.to_le_bytes());
    b[8..].copy_from_slice(&s.raft_index.0.to_le_bytes());
    b
}

fn decode_start(b: &[u8]) -> Option<LogStart> {
    (b.len() == 16).then(|| LogStart {
        offset: Offset(u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))),
        raft_index: RaftIndex(u64::from_le_bytes(b[8..].try_into().expect("8 bytes"))),
    })
}

impl PartitionLog {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.inner.borrow().config.clone()
    }

    /// Applies new limits; they take effect from the next append, roll or retention pass.
    pub fn set_config(&self, config: LogConfig) {
        self.inner.borrow_mut().config = config.sanitized();
    }

    /// Next offset and Raft index to be assigned.
    pub fn end(&self) -> LogEnd {
        self.inner.borrow().end()
    }

    /// Everything before this is on disk and synced.
    pub fn durable_end(&self) -> LogEnd {
        self.inner.borrow().durable
    }

    pub fn start(&self) -> LogStart {
        self.inner.borrow().start
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .borrow()
            .segments
            .iter()
            .map(|s| s.summary.size)
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.inner.borrow().segments.len()
    }

    /// Validates a client's RecordBatch v2, assigns its offsets and Raft index, records `term`
    /// as its partition leader epoch, and appends it. Returns at once; the batch is durable
    /// after the next `flush`. A refused batch leaves the log untouched.
    pub async fn append(&self, batch: &[u8], term: Term) -> Result<Appended, StorageError> {
        self.append_frame(None, term, EntryKind::Data, batch).await
    }

    /// Appends an opaque Raft-internal entry (membership, blank leader entry). It takes a Raft
    /// index but no Kafka offset, and Kafka reads never return it.
    pub async fn append_internal(
        &self,
        payload: &[u8],
        term: Term,
    ) -> Result<RaftIndex, StorageError> {
        let a = self
            .append_frame(None, term, EntryKind::Internal, payload)
            .await?;
        Ok(a.raft_index)
    }

    /// Raft append: stores an entry at the Raft `index` and `term` the leader gave it, which
    /// must be the log's next index (Raft truncates a diverging suffix first). A data entry is
    /// validated and gets its offsets as in `append`, so replicas holding the same entries
    /// from the same start assign the same offsets. For an internal entry the returned offsets
    /// are both the next offset.
    pub async fn append_entry(
        &self,
        index: RaftIndex,
        term: Term,
        kind: EntryKind,
        payload: &[u8],
    ) -> Result<Appended, StorageError> {
        self.append_frame(Some(index), term, kind, payload).await
    }

    async fn append_frame(
        &self,
        index: Option<RaftIndex>,
        term: Term,
        kind: EntryKind,
        payload: &[u8],
    ) -> Result<Appended, StorageError> {
        let header = match kind {
            EntryKind::Data => {
                let max = self.inner.borrow().config.max_batch_bytes;
                Some(batch::validate(payload, max)?)
            }
            EntryKind::Internal if payload.len() > MAX_INTERNAL_ENTRY_BYTES => {
                return Err(StorageError::TooLarge {
                    size: payload.len(),
                    max: MAX_INTERNAL_ENTRY_BYTES,
                })
            }
            EntryKind::Internal => None,
        };
        self.prepare_room(FRAME_HEADER_BYTES + payload.len(), header.is_some())
            .await?;
        let mut inner = self.inner.borrow_mut();
        let end = inner.end();
        if let Some(i) = index.filter(|&i| i != end.next_raft_index) {
            return Err(StorageError::IndexOutOfRange(
                i,
                end.next_raft_index,
                RaftIndex(end.next_raft_index.0 + 1),
            ));
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        let epoch = term.0.min(i32::MAX as u64) as i32;
        let h = frame::encode(&mut frame, end.next_raft_index, term, kind, payload, |p| {
            if header.is_some() {
                batch::set_base_offset_and_epoch(p, end.next_offset.0, epoch)
            }
        });
        let count = header.map_or(0, |h| h.offset_count());
        let appended = Appended {
            base_offset: end.next_offset,
            last_offset: Offset(end.next_offset.0 + count.saturating_sub(1)),
            raft_index: end.next_raft_index,
        };
        Self::push_frame(&mut inner, h, frame, end.next_offset);
        Ok(appended)
    }

    fn push_frame(inner: &mut Inner, h: frame::FrameHeader, frame: Vec<u8>, next: Offset) {
        let f = StoredFrame::from_frame(h, Bytes::from(frame), next)
            .expect("a validated batch has a header");
        let interval = inner.config.index_interval_bytes;
        inner.tail.extend_from_slice(&f.frame);
        let active = inner.active_mut();
        active.first_append_ms.get_or_insert_with(now_ms);
        active.note_frame(&f, interval);
        inner.cache_bytes += f.frame.len();
        inner.cache.push_back(f);
    }

    /// Rolls the active segment if this entry would overflow it or it is older than
    /// `segment.ms`, and waits for a flush if too much is unflushed.
    async fn prepare_room(&self, frame_len: usize, data: bool) -> Result<(), StorageError> {
        let needs_roll = |inner: &Inner| {
            let a = inner.active();
            // A segment holding no offsets yet can't roll: the next one would share its name.
            let has_data = a.summary.next_offset > a.base_offset;
            let full = a.summary.size + frame_len as u64 > inner.config.segment_bytes;
            let old = a
                .first_append_ms
                .is_some_and(|t| now_ms().saturating_sub(t) >= inner.config.segment_ms);
            data && has_data && (full || old)
        };
        if needs_roll(&self.inner.borrow()) {
            let _permit = self.lock().await?;
            if needs_roll(&self.inner.borrow()) {
                self.roll_locked().await?;
            }
        }
        let over = {
            let i = self.inner.borrow();
            i.unflushed_bytes() + frame_len > i.config.max_unflushed_bytes
        };
        if over {
            self.flush().await?;
        }
        Ok(())
    }

    async fn lock(&self) -> Result<glommio::sync::Permit<'_>, StorageError> {
        self.io_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::io("lock", &self.dir, e))
    }

    /// Makes everything appended before this call durable (write + fdatasync). Concurrent
    /// callers share fdatasyncs: while one flush runs, others wait for it to finish rather
    /// than queue for the lock, then one of them flushes everything appended meanwhile.
    pub async fn flush(&self) -> Result<LogEnd, StorageError> {
        let target = self.end().next_raft_index;
        loop {
            let durable = self.durable_end();
            if durable.next_raft_index >= target {
                return Ok(durable);
            }
            if self.flushing.get() {
                self.flush_done.wait().await;
                continue;
            }
            let _permit = self.lock().await?;
            if self.durable_end().next_raft_index >= target {
                continue;
            }
            let _flushing = FlushingGuard::new(self);
            self.flush_locked().await?;
        }
    }

    async fn flush_locked(&self) -> Result<(), StorageError> {
        let file_ref = {
            let inner = self.inner.borrow();
            if inner.durable_size == inner.active().summary.size {
                return Ok(());
            }
            inner.active().file()
        };
        let file = file_ref.open().await?;
        let path = file_ref.path;
        let (pos, buf, size, end, checkpoint) = {
            let inner = self.inner.borrow();
            let a = inner.active();
            let size = a.summary.size;
            let len = inner.tail.len();
            let mut buf = file.alloc_dma_buffer(align_up(len as u64) as usize);
            let b = buf.as_bytes_mut();
            b[..len].copy_from_slice(&inner.tail);
            b[len..].fill(0);
            // Everything appended is in this flush, so the summary describes exactly `size`.
            let index_bytes = (a.entries.len() * index::ENTRY_BYTES) as u64;
            let interval = inner
                .config
                .recovery_checkpoint_bytes
                .max(index_bytes * RECOVERY_CHECKPOINT_INDEX_RATIO);
            let due = size - inner.checkpointed_size >= interval;
            let checkpoint = due.then(|| {
                let (idx, time) = index::encode(&a.summary, &a.entries);
                (a.index_paths(), idx, time)
            });
            (inner.tail_start, buf, size, inner.end(), checkpoint)
        };
        let want = buf.len();
        let (prealloc_end, step) = {
            let inner = self.inner.borrow();
            let cap =
                align_down(inner.config.segment_bytes / 4).clamp(BLOCK_BYTES, PREALLOCATE_BYTES);
            (inner.prealloc_end, inner.prealloc_step.min(cap))
        };
        if pos + want as u64 > prealloc_end {
            // Extend the file once per `step`, so the data writes in between overwrite.
            let new_end = align_up(pos + want as u64) + step;
            let mut zeros = file.alloc_dma_buffer((new_end - prealloc_end) as usize);
            zeros.as_bytes_mut().fill(0);
            let n = file
                .write_at(zeros, prealloc_end)
                .await
                .map_err(|e| StorageError::io("preallocate segment", &path, e))?;
            telemetry::with(|m| m.written_bytes.increment(n as u64));
            let mut inner = self.inner.borrow_mut();
            inner.prealloc_end = new_end;
            inner.prealloc_step = (step * 2).min(PREALLOCATE_BYTES);
        }
        let n = file
            .write_at(buf, pos)
            .await
            .map_err(|e| StorageError::io("write segment", &path, e))?;
        telemetry::with(|m| m.written_bytes.increment(n as u64));
        if n < want {
            return Err(StorageError::io(
                "write segment",
                &path,
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short direct write"),
            ));
        }
        crate::faults::before_sync().await;
        let synced = std::time::Instant::now();
        file.fdatasync()
            .await
            .map_err(|e| StorageError::io("sync segment", &path, e))?;
        telemetry::fdatasync(synced.elapsed());
        {
            let mut inner = self.inner.borrow_mut();
            let keep_from = align_down(size);
            let consumed = (keep_from - inner.tail_start) as usize;
            inner.tail.drain(..consumed);
            inner.tail_start = keep_from;
            inner.durable_size = size;
            inner.active_mut().written = size;
            inner.durable = end;
            inner.evict_cache();
        }
        if let Some(((idx_path, time_path), idx, time)) = checkpoint {
            // Written after the sync, so it never claims bytes that are not durable.
            write_small_file(&idx_path, &idx).await?;
            write_small_file(&time_path, &time).await?;
            self.inner.borrow_mut().checkpointed_size = size;
        }
        Ok(())
    }

    async fn roll_locked(&self) -> Result<(), StorageError> {
        // The old segment is made whole and durable first, so a sealed segment never has a
        // torn tail and recovery only ever cuts the last one.
        self.flush_locked().await?;
        {
            // A sealed segment keeps no preallocated zeros (recovery would read past them
            // as padding, but they waste space).
            let (file_ref, size) = {
                let inner = self.inner.borrow();
                let a = inner.active();
                (a.file(), a.summary.size)
            };
            let path = file_ref.path.clone();
            file_ref
                .open()
                .await?
                .truncate(align_up(size))
                .await
                .map_err(|e| StorageError::io("truncate segment", &path, e))?;
        }
        let (sealed_index, base, raft, term) = {
            let inner = self.inner.borrow();
            let a = inner.active();
            let (idx, time) = index::encode(&a.summary, &a.entries);
            (
                (a.index_paths(), idx, time),
                a.summary.next_offset,
                a.summary.next_raft_index,
                a.summary.last_term,
            )
        };
        let ((idx_path, time_path), idx, time) = sealed_index;
        write_small_file(&idx_path, &idx).await?;
        write_small_file(&time_path, &time).await?;
        let seg = Segment::create(&self.dir, base, raft, term).await?;
        sync_dir(&self.dir).await?;
        let mut inner = self.inner.borrow_mut();
        inner.segments.push(seg);
        inner.tail.clear();
        inner.tail_start = 0;
        inner.durable_size = 0;
        inner.prealloc_end = 0;
        inner.checkpointed_size = 0;
        Ok(())
    }

    /// Visits frames from `c` in log order: cold from segment files, then hot from the cache
    /// for what is not yet written. Stops when `visit` returns false.
    async fn walk(
        &self,
        mut c: Cursor,
        mut visit: impl FnMut(&StoredFrame) -> bool,
    ) -> Result<(), StorageError> {
        loop {
            // Hot path: the cache covers the cursor.
            let cached: Option<Vec<StoredFrame>> = {
                let inner = self.inner.borrow();
                match inner.cache.front() {
                    Some(f) if f.header.raft_index <= c.raft => {
                        let skip = (c.raft.0 - f.header.raft_index.0) as usize;
                        Some(inner.cache.iter().skip(skip).cloned().collect())
                    }
                    _ if c.raft >= inner.end().next_raft_index => Some(Vec::new()),
                    _ => None,
                }
            };
            telemetry::with(|m| {
                if cached.is_some() {
                    m.cache_hits.increment(1)
                } else {
                    m.cache_misses.increment(1)
                }
            });
            if let Some(frames) = cached {
                for f in &frames {
                    if !visit(f) {
                        break;
                    }
                }
                return Ok(());
            }
            let (file_ref, end, max_payload, sealed) = {
                let inner = self.inner.borrow();
                let Some(s) = inner.segments.get(c.segment) else {
                    return Ok(());
                };
                (
                    s.file(),
                    s.written,
                    inner.max_payload(),
                    c.segment + 1 < inner.segments.len(),
                )
            };
            let file = file_ref.open().await?;
            let path = file_ref.path;
            let mut last = None;
            let mut stopped = false;
            let r = scan(
                &file,
                &path,
                ScanRange {
                    pos: c.position,
                    end,
                    next: c.offset,
                    expected_raft: Some(c.raft),
                    allow_gaps: sealed,
                },
                max_payload,
                |pos, f| {
                    last = Some((
                        pos + f.frame.len() as u64,
                        f.end_offset,
                        f.header.raft_index,
                    ));
                    stopped = !visit(&f);
                    !stopped
                },
            )
            .await?;
            if stopped {
                return Ok(());
            }
            if let ScanEnd::Invalid { position, reason } = r {
                warn!(path = %path.display(), position, reason, "stored frame failed validation on read");
                return Err(StorageError::Corrupt(c.raft));
            }
            if let Some((pos, off, raft)) = last {
                c.position = pos;
                c.offset = off;
                c.raft = RaftIndex(raft.0 + 1);
            }
            let inner = self.inner.borrow();
            let Some(s) = inner.segments.get(c.segment) else {
                return Ok(());
            };
            if c.position >= s.summary.size && c.segment + 1 < inner.segments.len() {
                c.segment += 1;
                c.position = 0;
                c.offset = inner.segments[c.segment].base_offset;
            } else if c.position >= s.written
                && c.segment + 1 == inner.segments.len()
                && last.is_none()
            {
                // Nothing more on disk, and the cache did not cover the cursor: the entries
                // were evicted between reads, which can't happen for unflushed data.
                return Ok(());
            }
        }
    }

    /// Kafka read: whole data batches covering offsets from `from`, up to `max_bytes` (but at
    /// least one batch), none of which reaches `upper_bound` (the high watermark). The first
    /// batch may start before `from`. Raft-internal entries are never returned.
    pub async fn read(
        &self,
        from: Offset,
        max_bytes: usize,
        upper_bound: Offset,
    ) -> Result<Vec<Bytes>, StorageError> {
        let c = {
            let inner = self.inner.borrow();
            let end = inner.end().next_offset;
            if from < inner.start.offset || from > end {
                return Err(StorageError::OffsetOutOfRange(
                    from,
                    inner.start.offset,
                    end,
                ));
            }
            if from >= upper_bound.min(end) {
                return Ok(Vec::new());
            }
            inner.cursor_for_offset(from)
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.walk(c, |f| {
            if f.header.kind != EntryKind::Data || f.end_offset <= from {
                return true;
            }
            if f.end_offset > upper_bound
                || (bytes > 0 && bytes + f.frame.len() - FRAME_HEADER_BYTES > max_bytes)
            {
                return false;
            }
            bytes += f.frame.len() - FRAME_HEADER_BYTES;
            out.push(f.payload());
            bytes < max_bytes
        })
        .await?;
        Ok(out)
    }

    /// Raft read: entries with index in `[from, to)`, data and internal, up to `max_bytes`
    /// (at least one entry). Raft indexes stay dense across compaction: an entry it removed
    /// reads back as an internal entry with an empty payload, of the term of the entry
    /// before it (every term starts with an internal entry, which compaction keeps).
    pub async fn entries(
        &self,
        from: RaftIndex,
        to: RaftIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let (c, mut last_term) = {
            let inner = self.inner.borrow();
            let end = inner.end().next_raft_index;
            if from < inner.start.raft_index || to > end || from > to {
                return Err(StorageError::IndexOutOfRange(
                    from,
                    inner.start.raft_index,
                    end,
                ));
            }
            if from == to {
                return Ok(Vec::new());
            }
            let c = inner.cursor_for_raft(from);
            let before = (c.position == 0 && c.segment > 0)
                .then(|| Term(inner.segments[c.segment - 1].summary.last_term));
            (c, before)
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        let removed = |i: RaftIndex, term: Term, offset: Offset| Entry {
            raft_index: i,
            term,
            kind: EntryKind::Internal,
            offset,
            payload: Bytes::new(),
        };
        self.walk(c, |f| {
            let i = f.header.raft_index;
            if i < from {
                last_term = Some(f.header.term);
                return true;
            }
            while next < i.min(to) {
                out.push(removed(next, last_term.unwrap_or(f.header.term), f.offset));
                next = RaftIndex(next.0 + 1);
            }
            if i >= to || (bytes > 0 && bytes + f.frame.len() > max_bytes) {
                return false;
            }
            bytes += f.frame.len();
            out.push(Entry::from(f));
            last_term = Some(f.header.term);
            next = RaftIndex(i.0 + 1);
            true
        })
        .await?;
        Ok(out)
    }

    /// Term of the entry at `index`, if it is stored.
    pub async fn term_at(&self, index: RaftIndex) -> Result<Option<Term>, StorageError> {
        let (start, end) = {
            let i = self.inner.borrow();
            (i.start.raft_index, i.end().next_raft_index)
        };
        if index < start || index >= end {
            return Ok(None);
        }
        let e = self.entries(index, RaftIndex(index.0 + 1), 1).await?;
        Ok(e.first().map(|e| e.term))
    }

    /// OffsetForLeaderEpoch (KIP-101, KIP-279): the largest term at most `epoch` in the log and
    /// the offset where it ended (where the next term began, or the log end). `None` when the
    /// log's first stored entry is already of a later term. Terms never decrease along a
    /// Raft log, so this is a binary search over Raft indexes (a few small reads), with no
    /// term history to keep.
    pub async fn epoch_end(&self, epoch: Term) -> Result<Option<(Term, Offset)>, StorageError> {
        let (start, end) = (self.start(), self.end());
        if end.last_term <= epoch {
            return Ok(Some((end.last_term, end.next_offset)));
        }
        let at = |i: u64| async move {
            let e = self.entries(RaftIndex(i), RaftIndex(i + 1), 1).await?;
            let e = e
                .into_iter()
                .next()
                .ok_or(StorageError::Corrupt(RaftIndex(i)))?;
            Ok::<_, StorageError>((e.term, e.offset))
        };
        let (mut lo, mut hi) = (start.raft_index.0, end.next_raft_index.0 - 1);
        if at(lo).await?.0 > epoch {
            return Ok(None);
        }
        // Invariant: term at lo <= epoch < term at hi.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if at(mid).await?.0 <= epoch {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (term, _) = at(lo).await?;
        let (_, next_term_offset) = at(hi).await?;
        Ok(Some((term, next_term_offset.max(start.offset))))
    }

    /// First offset of the first batch whose max timestamp is >= `ts`, if any.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<Offset>, StorageError> {
        let (c, start) = {
            let inner = self.inner.borrow();
            let Some(i) = inner
                .segments
                .iter()
                .position(|s| s.summary.max_timestamp >= ts)
            else {
                return Ok(None);
            };
            let s = &inner.segments[i];
            let j = s.entries.partition_point(|e| e.max_ts_before < ts);
            let e = j.checked_sub(1).map(|j| s.entries[j]);
            (cursor_at(i, s, e), inner.start.offset)
        };
        let mut found = None;
        self.walk(c, |f| {
            if f.header.kind == EntryKind::Data && f.max_timestamp >= ts && f.end_offset > start {
                found = Some(f.offset.max(start));
                return false;
            }
            true
        })
        .await?;
        Ok(found)
    }

    /// Removes every entry with Raft index >= `from` (Raft log divergence). Only entries at or
    /// after the log start can go, and not the batch the start lies inside. Durable when it
    /// returns: later segments are deleted newest first and the cut segment is rewritten and
    /// synced, so a crash at any point leaves a prefix of the old log.
    pub async fn truncate_suffix(&self, from: RaftIndex) -> Result<(), StorageError> {
        let _permit = self.lock().await?;
        {
            let inner = self.inner.borrow();
            let (start, end) = (inner.start.raft_index, inner.end().next_raft_index);
            if from < start || from > end {
                return Err(StorageError::IndexOutOfRange(from, start, end));
            }
            if from == end {
                return Ok(());
            }
        }
        // Cutting the batch that holds the log start would leave the start past the end.
        let start = self.start();
        if from == start.raft_index {
            let first = self.entries(from, RaftIndex(from.0 + 1), 1).await?;
            if first.first().is_some_and(|e| e.offset < start.offset) {
                return Err(StorageError::IndexOutOfRange(
                    from,
                    RaftIndex(from.0 + 1),
                    self.end().next_raft_index,
                ));
            }
        }
        self.flush_locked().await?;
        let seg_idx = self.inner.borrow().segment_for_raft(from);
        // Drop whole later segments, newest first.
        loop {
            let victim = {
                let mut inner = self.inner.borrow_mut();
                if inner.segments.len() <= seg_idx + 1 {
                    break;
                }
                inner.segments.pop().expect("checked above")
            };
            delete_segment_files(&victim).await?;
        }
        // Find the cut position, the term before it and the max timestamp below it.
        let (c, base_ts, prev_term) = {
            let inner = self.inner.borrow();
            let s = &inner.segments[seg_idx];
            let before = RaftIndex(from.0.saturating_sub(1).max(s.summary.base_raft_index.0));
            let e = index::floor(&s.entries, before, |e| e.raft_index);
            let prev_term = if seg_idx > 0 {
                inner.segments[seg_idx - 1].summary.last_term
            } else {
                0
            };
            (
                cursor_at(seg_idx, s, e),
                e.map_or(i64::MIN, |e| e.max_ts_before),
                prev_term,
            )
        };
        let mut cut = (c.position, c.offset);
        let mut max_ts = base_ts;
        let mut last_term = prev_term;
        let mut pos = c.position;
        self.walk(c, |f| {
            if f.header.raft_index >= from {
                cut = (pos, f.offset);
                return false;
            }
            pos += f.frame.len() as u64;
            max_ts = max_ts.max(f.max_timestamp);
            last_term = f.header.term.0;
            true
        })
        .await?;
        let (cut_pos, cut_offset) = cut;
        let (file_ref, idx_paths) = {
            let inner = self.inner.borrow();
            let s = &inner.segments[seg_idx];
            (s.file(), s.index_paths())
        };
        let file = file_ref.open().await?;
        let path = file_ref.path;
        remove_if_present(&idx_paths.0).await?;
        remove_if_present(&idx_paths.1).await?;
        let io = |what: &'static str| {
            let p = path.clone();
            move |e: glommio::GlommioError<()>| StorageError::io(what, &p, e)
        };
        let tail_start = align_down(cut_pos);
        let tail = file
            .read_at(tail_start, (cut_pos - tail_start) as usize)
            .await
            .map_err(io("read segment"))?
            .to_vec();
        if !tail.is_empty() {
            let mut buf = file.alloc_dma_buffer(BLOCK_BYTES as usize);
            buf.as_bytes_mut().fill(0);
            buf.as_bytes_mut()[..tail.len()].copy_from_slice(&tail);
            file.write_at(buf, tail_start)
                .await
                .map_err(io("write segment"))?;
        }
        file.truncate(align_up(cut_pos))
            .await
            .map_err(io("truncate segment"))?;
        file.fdatasync().await.map_err(io("sync segment"))?;
        sync_dir(&self.dir).await?;

        let stale: Vec<Offset> = {
            let mut inner = self.inner.borrow_mut();
            let s = inner.active_mut();
            s.entries.retain(|e| (e.position as u64) < cut_pos);
            s.summary.size = cut_pos;
            s.summary.next_offset = cut_offset;
            s.summary.next_raft_index = from;
            s.summary.max_timestamp = max_ts;
            s.summary.last_term = last_term;
            s.bytes_since_index = cut_pos - s.entries.last().map_or(0, |e| e.position as u64);
            s.written = cut_pos;
            inner.tail = tail;
            inner.tail_start = tail_start;
            inner.durable_size = cut_pos;
            inner.prealloc_end = align_up(cut_pos);
            inner.checkpointed_size = 0;
            while inner
                .cache
                .back()
                .is_some_and(|f| f.header.raft_index >= from)
            {
                let f = inner.cache.pop_back().expect("checked");
                inner.cache_bytes -= f.frame.len();
            }
            inner.durable = inner.end();
            let end = inner.durable.next_offset;
            let stale = inner
                .snapshots
                .iter()
                .copied()
                .filter(|&at| at > end)
                .collect();
            inner.snapshots.retain(|&at| at <= end);
            stale
        };
        for at in stale {
            remove_if_present(&segment_path(&self.dir, at, SNAPSHOT_EXT)).await?;
        }
        Ok(())
    }

    /// Saves an opaque state (the broker's producer state) as of `at`, the log's end offset
    /// when it was captured, keeping the newest `SNAPSHOTS_KEPT`. Like the indexes it is
    /// derivable from the log, so it is checksummed rather than synced.
    pub async fn save_snapshot(&self, at: Offset, state: &[u8]) -> Result<(), StorageError> {
        if self
            .inner
            .borrow()
            .snapshots
            .last()
            .is_some_and(|&l| l >= at)
        {
            return Ok(());
        }
        let mut data = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + state.len());
        data.extend_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
        data.extend_from_slice(&(state.len() as u32).to_le_bytes());
        data.extend_from_slice(&crc32c::crc32c(state).to_le_bytes());
        data.extend_from_slice(state);
        write_small_file(&segment_path(&self.dir, at, SNAPSHOT_EXT), &data).await?;
        let old: Vec<Offset> = {
            let mut inner = self.inner.borrow_mut();
            inner.snapshots.push(at);
            let n = inner.snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
            inner.snapshots.drain(..n).collect()
        };
        for o in old {
            remove_if_present(&segment_path(&self.dir, o, SNAPSHOT_EXT)).await?;
        }
        Ok(())
    }

    /// The newest saved state that is whole, and the offset it was taken at. Entries from
    /// that offset on are not in it.
    pub async fn load_snapshot(&self) -> Option<(Offset, Vec<u8>)> {
        let saved: Vec<Offset> = self.inner.borrow().snapshots.clone();
        for &at in saved.iter().rev() {
            let path = segment_path(&self.dir, at, SNAPSHOT_EXT);
            let Some(b) = read_small_file(&path).await else {
                continue;
            };
            let word = |i: usize| {
                b.get(i..i + 4)
                    .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
            };
            let (Some(magic), Some(len), Some(crc)) = (word(0), word(4), word(8)) else {
                continue;
            };
            let body = b.get(SNAPSHOT_HEADER_BYTES..SNAPSHOT_HEADER_BYTES + len as usize);
            match body {
                Some(body) if magic == SNAPSHOT_MAGIC && crc32c::crc32c(body) == crc => {
                    return Some((at, body.to_vec()))
                }
                _ => warn!(path = %path.display(), "ignoring a damaged state snapshot"),
            }
        }
        None
    }

    /// Moves the log start to `offset` (DeleteRecords, retention): reads below it fail and
    /// segments wholly below it are deleted. Never moves backwards or past the end.
    pub async fn advance_start(&self, offset: Offset) -> Result<LogStart, StorageError> {
        let c = {
            let inner = self.inner.borrow();
            let target = offset.min(inner.end().next_offset);
            if target <= inner.start.offset {
                return Ok(inner.start);
            }
            inner.cursor_for_offset(target)
        };
        let target = offset.min(self.end().next_offset);
        let mut raft = self.end().next_raft_index;
        self.walk(c, |f| {
            if f.header.kind == EntryKind::Data && f.end_offset > target {
                raft = f.header.raft_index;
                return false;
            }
            true
        })
        .await?;
        self.set_start(LogStart {
            offset: target,
            raft_index: raft,
        })
        .await
    }

    /// The Raft index and base offset of the data entry holding `offset`, if it is stored:
    /// where a prefix cut at `offset` must end on whole entries.
    pub async fn entry_holding(
        &self,
        offset: Offset,
    ) -> Result<Option<(RaftIndex, Offset)>, StorageError> {
        let c = {
            let inner = self.inner.borrow();
            if offset < inner.start.offset || offset >= inner.end().next_offset {
                return Ok(None);
            }
            inner.cursor_for_offset(offset)
        };
        let mut found = None;
        self.walk(c, |f| {
            if f.header.kind == EntryKind::Data && f.end_offset > offset {
                found = Some((f.header.raft_index, f.offset));
                return false;
            }
            true
        })
        .await?;
        Ok(found)
    }

    /// Raft purge: forget entries up to and including `index`.
    pub async fn purge_to(&self, index: RaftIndex) -> Result<LogStart, StorageError> {
        let first_kept = RaftIndex(index.0 + 1);
        let (c, end) = {
            let inner = self.inner.borrow();
            let end = inner.end();
            if first_kept <= inner.start.raft_index {
                return Ok(inner.start);
            }
            if first_kept > end.next_raft_index {
                return Err(StorageError::IndexOutOfRange(
                    index,
                    inner.start.raft_index,
                    end.next_raft_index,
                ));
            }
            (inner.cursor_for_raft(first_kept), end)
        };
        let mut offset = end.next_offset;
        self.walk(c, |f| {
            if f.header.raft_index >= first_kept {
                offset = f.offset;
                return false;
            }
            true
        })
        .await?;
        self.set_start(LogStart {
            offset,
            raft_index: first_kept,
        })
        .await
    }

    /// Drops every entry and restarts the log empty at `start`, which must not be before the
    /// end: a Raft snapshot past this replica's log (its start offset is the leader's, so
    /// offsets stay the same on every replica), or a purge past the end. Durable when it
    /// returns: the start checkpoint is stored first, so a crash before the old segments are
    /// gone leaves a start past the recovered end, and recovery restarts the log there.
    pub async fn reset(&self, start: LogStart, last_term: Term) -> Result<(), StorageError> {
        let _permit = self.lock().await?;
        let end = self.end();
        if start.offset < end.next_offset || start.raft_index < end.next_raft_index {
            return Err(StorageError::IndexOutOfRange(
                start.raft_index,
                end.next_raft_index,
                RaftIndex(u64::MAX),
            ));
        }
        let mut ckpt = self
            .inner
            .borrow_mut()
            .start_checkpoint
            .take()
            .expect("held under io_lock");
        let stored = ckpt.store(&encode_start(&start)).await;
        self.inner.borrow_mut().start_checkpoint = Some(ckpt);
        stored?;
        let (old, snapshots) = {
            let mut inner = self.inner.borrow_mut();
            inner.start = start;
            (
                std::mem::take(&mut inner.segments),
                std::mem::take(&mut inner.snapshots),
            )
        };
        for victim in old.iter().rev() {
            delete_segment_files(victim).await?;
        }
        drop(old);
        for at in snapshots {
            remove_if_present(&segment_path(&self.dir, at, SNAPSHOT_EXT)).await?;
        }
        let seg = Segment::create(&self.dir, start.offset, start.raft_index, last_term.0).await?;
        sync_dir(&self.dir).await?;
        let mut inner = self.inner.borrow_mut();
        inner.segments.push(seg);
        inner.tail.clear();
        inner.tail_start = 0;
        inner.durable_size = 0;
        inner.prealloc_end = 0;
        inner.prealloc_step = PREALLOCATE_MIN_BYTES;
        inner.checkpointed_size = 0;
        inner.cache.clear();
        inner.cache_bytes = 0;
        inner.durable = inner.end();
        Ok(())
    }

    async fn set_start(&self, new: LogStart) -> Result<LogStart, StorageError> {
        let _permit = self.lock().await?;
        let mut ckpt = {
            let mut inner = self.inner.borrow_mut();
            if new.offset <= inner.start.offset && new.raft_index <= inner.start.raft_index {
                return Ok(inner.start);
            }
            inner.start_checkpoint.take().expect("held under io_lock")
        };
        let stored = ckpt.store(&encode_start(&new)).await;
        self.inner.borrow_mut().start_checkpoint = Some(ckpt);
        stored?;
        self.inner.borrow_mut().start = new;
        let mut deleted = false;
        loop {
            let victim = {
                let mut inner = self.inner.borrow_mut();
                let removable = inner.segments.len() > 1
                    && inner.segments[1].base_offset <= new.offset
                    && inner.segments[1].summary.base_raft_index <= new.raft_index;
                if !removable {
                    break;
                }
                inner.segments.remove(0)
            };
            delete_segment_files(&victim).await?;
            deleted = true;
        }
        if deleted {
            sync_dir(&self.dir).await?;
        }
        Ok(new)
    }

    /// Deletes whole sealed segments past `retention.ms` (by their largest batch timestamp)
    /// or beyond `retention.bytes`, oldest first. Returns how many were deleted.
    pub async fn apply_retention(&self, now_ms: u64) -> Result<usize, StorageError> {
        let Some(t) = self.retention_target(now_ms) else {
            return Ok(0);
        };
        let before = self.segment_count();
        self.set_start(t).await?;
        Ok(before - self.segment_count())
    }

    /// Where retention would move the log start (the base of the first segment it keeps),
    /// if it would delete anything: a replicated log cuts there through Raft.
    pub fn retention_target(&self, now_ms: u64) -> Option<LogStart> {
        {
            let inner = self.inner.borrow();
            let mut total: u64 = inner.segments.iter().map(|s| s.summary.size).sum();
            let mut target = None;
            for (i, s) in inner
                .segments
                .iter()
                .enumerate()
                .take(inner.segments.len() - 1)
            {
                let by_time = inner.config.retention_ms.is_some_and(|r| {
                    s.summary.max_timestamp != i64::MIN
                        && s.summary.max_timestamp < now_ms.saturating_sub(r) as i64
                });
                let by_size = inner
                    .config
                    .retention_bytes
                    .is_some_and(|r| total - s.summary.size >= r);
                if !(by_time || by_size) {
                    break;
                }
                total -= s.summary.size;
                let next = &inner.segments[i + 1];
                target = Some(LogStart {
                    offset: next.base_offset,
                    raft_index: next.summary.base_raft_index,
                });
            }
            target
        }
    }

    /// Flushes, writes the active segment's index checkpoint, and closes files. Dropping a log
    /// without `close` is safe (it is what a crash looks like); reopening just scans more.
    pub async fn close(self) -> Result<(), StorageError> {
        self.flush().await?;
        let _permit = self.lock().await?;
        let checkpoint = {
            let inner = self.inner.borrow();
            let a = inner.active();
            // Scanning a little at the next open is cheaper than writing two files now.
            (a.summary.size - inner.checkpointed_size >= CLOSE_CHECKPOINT_MIN_BYTES)
                .then(|| (a.index_paths(), index::encode(&a.summary, &a.entries)))
        };
        if let Some(((ip, tp), (idx, time))) = checkpoint {
            write_small_file(&ip, &idx).await?;
            write_small_file(&tp, &time).await?;
        }
        // Without the zeros written ahead, the next open has no padding to read through.
        let (file_ref, size, prealloc_end) = {
            let inner = self.inner.borrow();
            let a = inner.active();
            (a.file(), a.summary.size, inner.prealloc_end)
        };
        if prealloc_end <= align_up(size) {
            return Ok(());
        }
        file_ref
            .open()
            .await?
            .truncate(align_up(size))
            .await
            .map_err(|e| StorageError::io("truncate segment", &file_ref.path, e))?;
        Ok(())
    }
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("start", &inner.start)
            .field("end", &inner.end())
            .field("segments", &inner.segments.len())
            .finish()
    }
}
