//! Key-based compaction (Kafka's `cleanup.policy=compact`): sealed segments are rewritten
//! keeping, for each key, at least its latest record.
//!
//! One pass builds a map key → offset of the key's latest record over the whole log (the
//! active segment included), then rewrites each sealed segment that holds a superseded record.
//! The active segment is never touched. What a pass keeps and why:
//! - a record whose key is not in the map (null key, or the map hit its memory bound), or
//!   whose offset is its key's latest;
//! - a tombstone (null value) that is its key's latest, until its batch is older than
//!   `delete.retention.ms`, so consumers that were behind still see the delete;
//! - control and transactional batches, and batches that cannot be decoded, whole;
//! - an emptied batch as a header without records when it was its producer's last batch,
//!   so the producer's sequence survives a restart (Kafka does the same);
//! - a segment's last data batch whole, so the segment still ends at the offset the next one
//!   starts at, and every Raft-internal entry.
//!
//! Offsets never change: a kept batch keeps its base offset and `lastOffsetDelta`, so reads
//! see gaps, as on a compacted Kafka topic, and Raft indexes of dropped entries go missing.
//! Compaction must therefore only ever run below the commit point.
//!
//! Consecutive sealed segments whose sizes add up to at most `segment.bytes` are merged into
//! one, named after the first, so a compacted log does not become many small files.
//!
//! Crash safety: the new segment is written whole to `<base>.cleaned` and synced; the old
//! index files are removed (and the directory synced) before the rename over `<base>.log`, so
//! an old index never describes a new file; then the merged-away segments are deleted. A
//! crash leaves the old segments (a stray `.cleaned` file is deleted at open), or the new one
//! without an index (rebuilt by a scan that accepts Raft index gaps in sealed segments)
//! followed by merged-away files that lie inside it (deleted at open).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use glommio::io::DmaFile;
use tracing::{debug, warn};

use super::{align_up, remove_if_present, sync_dir, write_index, PartitionLog, BLOCK_BYTES};
use crate::batch::{self, RecordRef, COMPRESSION_MASK};
use crate::error::StorageError;
use crate::frame::{self, FRAME_HEADER_BYTES};
use crate::index::SegmentSummary;
use crate::segment::{scan, segment_path, FileRef, ScanEnd, ScanRange, Segment, StoredFrame};
use crate::types::{EntryKind, Offset, RaftIndex};

/// Extension of a segment being rewritten by compaction.
pub(super) const CLEANED_EXT: &str = "cleaned";
/// Bytes of rewritten frames gathered before they are written out, bounding the memory a
/// pass needs whatever the segment size.
const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Rough per-entry overhead of the key map beyond the key bytes (hash slot, Vec header,
/// offset), for the `log.cleaner.dedupe.buffer.size` accounting.
const KEY_MAP_ENTRY_OVERHEAD: usize = 48;

/// Turns a compressed records section into plain records: `(attributes, compressed bytes)`.
/// Storage knows no codecs; the broker passes Kafka's.
pub type Decompress<'a> = &'a dyn Fn(i16, &[u8]) -> Result<Vec<u8>, String>;

#[derive(Clone, Copy, Debug)]
pub struct CompactionOptions {
    /// Wall-clock now, in ms since the epoch.
    pub now_ms: u64,
    /// `delete.retention.ms`: how long a tombstone outlives its key.
    pub delete_retention_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory bound of the key map. Past it new keys are
    /// not tracked (their records are kept) and the pass is still correct.
    pub max_key_map_bytes: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The key map hit its bound; some superseded records were kept.
    pub key_map_full: bool,
}

/// The latest offset of each key, and of each producer's last batch.
#[derive(Default)]
struct KeyMap {
    latest: HashMap<Vec<u8>, u64>,
    producer_last: HashMap<i64, u64>,
    bytes: usize,
    full: bool,
}

impl KeyMap {
    fn note(&mut self, key: &[u8], offset: u64, max_bytes: usize) {
        if let Some(o) = self.latest.get_mut(key) {
            *o = offset;
        } else if self.bytes + key.len() + KEY_MAP_ENTRY_OVERHEAD <= max_bytes {
            self.bytes += key.len() + KEY_MAP_ENTRY_OVERHEAD;
            self.latest.insert(key.to_vec(), offset);
        } else {
            self.full = true;
        }
    }

    fn note_producer(&mut self, producer_id: i64, base: u64, max_bytes: usize) {
        if let Some(o) = self.producer_last.get_mut(&producer_id) {
            *o = base;
        } else if self.bytes + KEY_MAP_ENTRY_OVERHEAD <= max_bytes {
            self.bytes += KEY_MAP_ENTRY_OVERHEAD;
            self.producer_last.insert(producer_id, base);
        } else {
            self.full = true;
        }
    }
}

/// The header and plain records section of a data batch, or `None` for a batch compaction
/// leaves whole (control, transactional, undecodable).
fn plain_records<'a>(
    payload: &'a [u8],
    decompress: Decompress<'_>,
) -> Option<(batch::BatchHeader, Cow<'a, [u8]>)> {
    let h = batch::parse_header(payload).ok()?;
    if h.is_control() || h.is_transactional() {
        return None;
    }
    let records = &payload[batch::HEADER_BYTES..];
    if h.attributes & COMPRESSION_MASK == 0 {
        return Some((h, Cow::Borrowed(records)));
    }
    match decompress(h.attributes, records) {
        Ok(v) => Some((h, Cow::Owned(v))),
        Err(e) => {
            debug!(error = %e, offset = h.base_offset, "compaction keeps an undecodable batch whole");
            None
        }
    }
}

/// What a pass does with one data batch.
enum Verdict {
    Keep,
    Drop(u64),
    Rewrite(Vec<u8>, u64),
}

impl PartitionLog {
    /// Share of the sealed bytes no compaction pass has seen since they were sealed or the
    /// log opened (Kafka's dirty ratio; compare with `min.cleanable.dirty.ratio`).
    pub fn dirty_ratio(&self) -> f64 {
        let inner = self.inner.borrow();
        let sealed = &inner.segments[..inner.segments.len() - 1];
        let total: u64 = sealed.iter().map(|s| s.summary.size).sum();
        let dirty: u64 = sealed
            .iter()
            .filter(|s| !s.clean)
            .map(|s| s.summary.size)
            .sum();
        if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        }
    }

    /// One compaction pass over the sealed segments (see the module docs). Appends and reads
    /// go on meanwhile; the lock is held only to swap a rewritten segment in.
    pub async fn compact(
        &self,
        opts: &CompactionOptions,
        decompress: Decompress<'_>,
    ) -> Result<CompactionStats, StorageError> {
        let mut stats = CompactionStats::default();
        let (start_cursor, sealed) = {
            let inner = self.inner.borrow();
            if inner.segments.len() < 2 {
                return Ok(stats);
            }
            // Consecutive sealed segments whose sizes add up to at most `segment.bytes` are
            // merged (Kafka does the same), so compacted segments do not pile up as small
            // files: the first pass shrinks them, a later one merges them.
            let mut groups: Vec<Vec<Offset>> = Vec::new();
            let mut group_bytes = 0u64;
            for s in &inner.segments[..inner.segments.len() - 1] {
                match groups.last_mut() {
                    Some(g) if group_bytes + s.summary.size <= inner.config.segment_bytes => {
                        g.push(s.base_offset);
                        group_bytes += s.summary.size;
                    }
                    _ => {
                        groups.push(vec![s.base_offset]);
                        group_bytes = s.summary.size;
                    }
                }
            }
            (inner.cursor_for_offset(inner.start.offset), groups)
        };
        let mut map = KeyMap::default();
        let max = opts.max_key_map_bytes;
        self.walk(start_cursor, |f| {
            if f.header.kind != EntryKind::Data {
                return true;
            }
            let payload = &f.frame[FRAME_HEADER_BYTES..];
            let Some((h, records)) = plain_records(payload, decompress) else {
                return true;
            };
            if h.producer_id >= 0 {
                map.note_producer(h.producer_id, f.offset.0, max);
            }
            for r in batch::records(&records).unwrap_or_default() {
                if let Some(k) = r.key {
                    map.note(k, f.offset.0 + r.offset_delta as u64, max);
                }
            }
            true
        })
        .await?;
        stats.key_map_full = map.full;
        if map.full {
            warn!(dir = %self.dir.display(), bytes = map.bytes,
                "compaction key map is full (log.cleaner.dedupe.buffer.size); some superseded records stay");
        }
        let horizon = opts.now_ms.saturating_sub(opts.delete_retention_ms) as i64;
        for group in sealed {
            self.compact_group(&group, &map, horizon, decompress, &mut stats)
                .await?;
        }
        Ok(stats)
    }

    fn verdict(
        map: &KeyMap,
        horizon: i64,
        f: &StoredFrame,
        segment_end: Offset,
        decompress: Decompress<'_>,
    ) -> Verdict {
        // The segment's last batch stays whole: it fixes where the segment ends.
        if f.header.kind != EntryKind::Data || f.end_offset == segment_end {
            return Verdict::Keep;
        }
        let payload = &f.frame[FRAME_HEADER_BYTES..];
        let Some((h, plain)) = plain_records(payload, decompress) else {
            return Verdict::Keep;
        };
        let Some(records) = batch::records(&plain) else {
            return Verdict::Keep;
        };
        let base = f.offset.0;
        let keep = |r: &RecordRef<'_>| {
            let Some(k) = r.key else { return true };
            match map.latest.get(k) {
                // Untracked key: nothing is known to supersede it.
                None => true,
                Some(&latest) => {
                    let offset = base + r.offset_delta as u64;
                    latest <= offset && !(r.null_value && h.max_timestamp < horizon)
                }
            }
        };
        let kept: Vec<RecordRef<'_>> = records.iter().filter(|r| keep(r)).cloned().collect();
        let removed = (records.len() - kept.len()) as u64;
        if removed == 0 {
            return Verdict::Keep;
        }
        let producers_last = h.producer_id >= 0
            && map
                .producer_last
                .get(&h.producer_id)
                .is_none_or(|&o| o == base);
        if kept.is_empty() && !producers_last {
            return Verdict::Drop(removed);
        }
        Verdict::Rewrite(batch::rebuild(payload, &kept), removed)
    }

    /// Rewrites one group of consecutive sealed segments into a single segment named after
    /// the first, dropping what the map says is superseded. A lone segment with nothing to
    /// drop is only marked clean.
    async fn compact_group(
        &self,
        group: &[Offset],
        map: &KeyMap,
        horizon: i64,
        decompress: Decompress<'_>,
        stats: &mut CompactionStats,
    ) -> Result<(), StorageError> {
        let base = group[0];
        let (olds, max_payload, interval, prev_term) = {
            let inner = self.inner.borrow();
            let Some(i) = inner.segments.iter().position(|s| s.base_offset == base) else {
                return Ok(());
            };
            let olds: Vec<(FileRef, PathBuf, SegmentSummary, Offset)> = inner.segments
                [i..inner.segments.len() - 1]
                .iter()
                .take(group.len())
                .map(|s| (s.file(), s.path.clone(), s.summary, s.base_offset))
                .collect();
            if olds.len() != group.len() || olds.iter().zip(group).any(|(o, b)| o.3 != *b) {
                return Ok(());
            }
            let prev_term = i
                .checked_sub(1)
                .map_or(0, |p| inner.segments[p].summary.last_term);
            (
                olds,
                inner.max_payload(),
                inner.config.index_interval_bytes,
                prev_term,
            )
        };
        let cleaned_path = segment_path(&self.dir, base, CLEANED_EXT);
        let io = |what: &'static str, p: &std::path::Path| {
            let p = p.to_path_buf();
            move |e: glommio::GlommioError<()>| StorageError::io(what, &p, e)
        };
        let mut new = Segment::empty(&self.dir, base, olds[0].2.base_raft_index, prev_term);
        // Written under its own name until the swap; the cache reopens it by this path.
        new.path = cleaned_path.clone();
        let new_file = new.file().create().await?;
        new_file
            .truncate(0)
            .await
            .map_err(io("truncate segment", &cleaned_path))?;
        let mut pending: Vec<u8> = Vec::new();
        let mut written: u64 = 0;
        let mut removed = 0u64;
        for (old_ref, old_path, old_summary, old_base) in &olds {
            let old_file = old_ref.open().await?;
            let mut range = ScanRange {
                pos: 0,
                end: old_summary.size,
                next: *old_base,
                expected_raft: Some(old_summary.base_raft_index),
                allow_gaps: true,
            };
            loop {
                let mut resume = None;
                let end = scan(&old_file, old_path, range, max_payload, |pos, f| {
                    resume = Some((
                        pos + f.frame.len() as u64,
                        f.end_offset,
                        f.header.raft_index,
                    ));
                    let segment_end = old_summary.next_offset;
                    let kept = match Self::verdict(map, horizon, &f, segment_end, decompress) {
                        Verdict::Keep => Some(f),
                        Verdict::Drop(n) => {
                            removed += n;
                            None
                        }
                        Verdict::Rewrite(b, n) => {
                            removed += n;
                            let mut v = Vec::with_capacity(FRAME_HEADER_BYTES + b.len());
                            let h = frame::encode(
                                &mut v,
                                f.header.raft_index,
                                f.header.term,
                                EntryKind::Data,
                                &b,
                                |_| {},
                            );
                            StoredFrame::from_frame(h, Bytes::from(v), f.offset)
                        }
                    };
                    if let Some(k) = kept {
                        pending.extend_from_slice(&k.frame);
                        new.note_frame(&k, interval);
                    }
                    pending.len() < WRITE_CHUNK_BYTES
                })
                .await?;
                if let ScanEnd::Invalid { position, reason } = end {
                    warn!(path = %old_path.display(), position, reason,
                        "compaction found a bad frame; segments left as they are");
                    drop(new);
                    remove_if_present(&cleaned_path).await?;
                    return Err(StorageError::Corrupt(old_summary.base_raft_index));
                }
                // Whole blocks go out now; the partly filled last one waits for more.
                let n = pending.len() / BLOCK_BYTES as usize * BLOCK_BYTES as usize;
                written += write_out(&new_file, &cleaned_path, &mut pending, n, written).await?;
                if !matches!(end, ScanEnd::Stopped) {
                    break;
                }
                let (pos, next, raft) = resume.expect("a stopped scan visited a frame");
                range = ScanRange {
                    pos,
                    end: old_summary.size,
                    next,
                    expected_raft: Some(RaftIndex(raft.0 + 1)),
                    allow_gaps: true,
                };
            }
        }
        let n = pending.len();
        write_out(&new_file, &cleaned_path, &mut pending, n, written).await?;
        let before: u64 = olds.iter().map(|o| o.2.size).sum();
        stats.bytes_before += before;
        if removed == 0 && olds.len() == 1 {
            drop(new);
            remove_if_present(&cleaned_path).await?;
            let mut inner = self.inner.borrow_mut();
            if let Some(s) = inner.segments.iter_mut().find(|s| s.base_offset == base) {
                s.clean = true;
            }
            stats.bytes_after += before;
            return Ok(());
        }
        new_file
            .fdatasync()
            .await
            .map_err(io("sync segment", &cleaned_path))?;
        new.written = new.summary.size;
        let last = olds.last().expect("a group is never empty").2;
        new.summary.base_raft_index = olds[0].2.base_raft_index;
        debug_assert_eq!(new.summary.next_offset, last.next_offset);
        debug_assert_eq!(new.summary.next_raft_index, last.next_raft_index);

        let _permit = self.lock().await?;
        let still_there = {
            let inner = self.inner.borrow();
            inner
                .segments
                .iter()
                .position(|s| s.base_offset == base)
                .filter(|&i| {
                    i + olds.len() < inner.segments.len()
                        && olds
                            .iter()
                            .zip(&inner.segments[i..])
                            .all(|(o, s)| s.base_offset == o.3 && s.summary == o.2)
                })
                .is_some()
        };
        if !still_there {
            // Retention, DeleteRecords or truncation got there first.
            drop(new);
            remove_if_present(&cleaned_path).await?;
            return Ok(());
        }
        // Old indexes go first: none may survive to describe the new file. Then the rename
        // commits the new segment; the merged-away files left by a crash after it lie inside
        // it and are deleted at open.
        for (_, path, _, b) in &olds {
            let dir = path.parent().unwrap_or(&self.dir);
            remove_if_present(&segment_path(dir, *b, "index")).await?;
            remove_if_present(&segment_path(dir, *b, "timeindex")).await?;
        }
        sync_dir(&self.dir).await?;
        new_file
            .rename(&olds[0].1)
            .await
            .map_err(io("rename segment", &cleaned_path))?;
        sync_dir(&self.dir).await?;
        for (_, path, _, _) in &olds[1..] {
            remove_if_present(path).await?;
        }
        if olds.len() > 1 {
            sync_dir(&self.dir).await?;
        }
        new.path = olds[0].1.clone();
        new.clean = true;
        write_index(&new).await?;
        stats.segments_rewritten += olds.len();
        stats.records_removed += removed;
        stats.bytes_after += new.summary.size;
        let mut inner = self.inner.borrow_mut();
        // Cached frames of the old segments are stale now; the cache stays a suffix.
        while inner
            .cache
            .front()
            .is_some_and(|f| f.header.raft_index < last.next_raft_index)
        {
            let f = inner.cache.pop_front().expect("checked");
            inner.cache_bytes -= f.frame.len();
        }
        if let Some(i) = inner.segments.iter().position(|s| s.base_offset == base) {
            inner.segments.splice(i..i + olds.len(), [new]);
        }
        Ok(())
    }
}

/// Writes `pending[..n]` at `at` (zero padded to a block) and drops it from `pending`.
async fn write_out(
    file: &DmaFile,
    path: &std::path::Path,
    pending: &mut Vec<u8>,
    n: usize,
    at: u64,
) -> Result<u64, StorageError> {
    if n == 0 {
        return Ok(0);
    }
    let mut buf = file.alloc_dma_buffer(align_up(n as u64) as usize);
    let b = buf.as_bytes_mut();
    b[..n].copy_from_slice(&pending[..n]);
    b[n..].fill(0);
    file.write_at(buf, at)
        .await
        .map_err(|e| StorageError::io("write segment", path, e))?;
    pending.drain(..n);
    Ok(n as u64)
}
